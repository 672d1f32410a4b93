"""SAE training, the normalisation fold, metrics, CE loss recovered and the on-disk format.

Training runs on synthetic activations with a planted sparse dictionary, a large mean
offset and a large scale, so the normalisation has to work for the SAE to learn anything.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig

from igds.core.config import SaeConfig
from igds.core.sae import (
    ce_loss_recovered,
    encode_columns,
    fold_normalisation,
    load_sae,
    normalisation,
    sae_metrics,
    save_sae,
    train_sae,
)

D_IN, N_ATOMS = 16, 64
SMALL = SaeConfig(width=4, k=4, steps=1000, batch_tokens=256, lr=1e-2)


def planted_acts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, D_IN] tokens = 300 * (offset + sum of 2-3 unit atoms with coefficients in [1, 3]).

    The dictionary [N_ATOMS, D_IN] is fixed; `seed` draws the tokens.
    """
    atoms_g = torch.Generator().manual_seed(1234)
    atoms = torch.randn(N_ATOMS, D_IN, generator=atoms_g)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    offset = 5.0 * torch.randn(D_IN, generator=atoms_g)
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.zeros(n, N_ATOMS)
    n_active = torch.randint(2, 4, (n,), generator=g)
    for i in range(n):
        chosen = torch.randperm(N_ATOMS, generator=g)[: n_active[i]]
        coeffs[i, chosen] = 1.0 + 2.0 * torch.rand(len(chosen), generator=g)
    return 300.0 * (offset + coeffs @ atoms), atoms


@pytest.fixture(scope="module")
def dictionary_sae() -> dict:
    train, atoms = planted_acts(8192, seed=0)
    heldout, _ = planted_acts(2048, seed=1)
    return {"train": train, "heldout": heldout, "atoms": atoms, "sae": train_sae(train, SMALL, seed=0)}


def exact_sae(d_in: int) -> TopKSAE:
    """Features relu(x) and relu(-x), all kept (k = d_sae): decode(encode(x)) = x exactly."""
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=2 * d_in, k=2 * d_in, rescale_acts_by_decoder_norm=False))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))  # [d_in, d_sae]
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))  # [d_sae, d_in]
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_normalisation_centres_and_scales_to_d_in():
    acts, _ = planted_acts(1000, seed=3)
    mu, scale = normalisation(acts)
    normalised = (acts - mu) * scale
    torch.testing.assert_close(normalised.mean(0), torch.zeros(D_IN), atol=1e-3, rtol=0)
    assert normalised.pow(2).sum(1).mean().item() == pytest.approx(D_IN, rel=1e-4)


@pytest.mark.parametrize("rescale_by_decoder_norm", [False, True])
def test_fold_gives_raw_space_the_normalised_space_sae(rescale_by_decoder_norm):
    g = torch.Generator().manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=48, k=5, rescale_acts_by_decoder_norm=rescale_by_decoder_norm))
    with torch.no_grad():
        for param in (sae.W_enc, sae.b_enc, sae.b_dec):
            param.copy_(torch.randn(param.shape, generator=g))
        # decoder rows of unequal norms: the TopK choice depends on them when rescaling
        sae.W_dec.copy_(torch.randn(sae.W_dec.shape, generator=g) * torch.rand(48, 1, generator=g) * 3)
    acts, _ = planted_acts(512, seed=4)
    mu, scale = normalisation(acts)
    with torch.no_grad():
        feats_normalised = sae.encode((acts - mu) * scale)
        recon_normalised = sae.decode(feats_normalised)
        folded = copy.deepcopy(sae)
        fold_normalisation(folded, mu, scale)
        feats_raw = folded.encode(acts)
        recon_raw = folded.decode(feats_raw)
    assert torch.equal(feats_raw != 0, feats_normalised != 0), "the fold changed which features fire"
    torch.testing.assert_close(feats_raw, feats_normalised, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(recon_raw, recon_normalised / scale + mu, rtol=1e-4, atol=1e-2)


def test_trained_sae_reconstructs_raw_heldout_activations(dictionary_sae):
    metrics = sae_metrics(dictionary_sae["sae"], dictionary_sae["heldout"])
    assert metrics["explained_variance"] > 0.8, metrics
    assert metrics["l0"] == pytest.approx(SMALL.k, abs=0.05), metrics
    assert metrics["l0"] <= SMALL.k
    assert (metrics["n_tokens"], metrics["d_sae"], metrics["d_in"]) == (2048, SMALL.width * D_IN, D_IN)


def test_trained_sae_finds_planted_dictionary(dictionary_sae):
    decoder = dictionary_sae["sae"].W_dec.detach()
    decoder = decoder / decoder.norm(dim=1, keepdim=True)
    best_cos = (dictionary_sae["atoms"] @ decoder.T).max(dim=1).values  # [N_ATOMS]
    assert (best_cos > 0.9).float().mean().item() > 0.7, best_cos


def test_training_is_seeded_and_leaves_global_rng_alone(dictionary_sae):
    rng_before = torch.random.get_rng_state()
    again = train_sae(dictionary_sae["train"], SMALL, seed=0)
    other = train_sae(dictionary_sae["train"], SMALL, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    first = dictionary_sae["sae"].state_dict()
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, first[name]), name
    assert not torch.equal(other.W_dec, dictionary_sae["sae"].W_dec)


def test_seed_sets_the_initialisation(dictionary_sae):
    frozen = dataclasses.replace(SMALL, steps=1, lr=1e-12)  # weights stay at their init
    first, again, other = (train_sae(dictionary_sae["train"], frozen, seed=s) for s in (5, 5, 6))
    assert torch.equal(first.W_enc, again.W_enc)
    assert not torch.allclose(first.W_enc, other.W_enc, rtol=1e-2, atol=0)


def test_save_load_round_trip(dictionary_sae, tmp_path):
    save_sae(dictionary_sae["sae"], tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert isinstance(loaded, TopKSAE) and loaded.cfg.k == SMALL.k
    x = dictionary_sae["heldout"]
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), dictionary_sae["sae"].encode(x))
        assert torch.equal(loaded(x), dictionary_sae["sae"](x))


def test_metrics_of_hand_built_saes():
    x = torch.rand(500, 8) + 0.1
    x[:250, 0] *= -1  # relu(x_0) and relu(-x_0) each fire on half the tokens
    perfect = sae_metrics(exact_sae(8), x, batch_tokens=64)
    assert perfect["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["l0"] == 8
    assert perfect["dead_share"] == 7 / 16  # relu(-x_j), j > 0, never fires


@pytest.fixture
def fitted_tiny_model(tiny_model, tiny_batch):
    """The tiny Llama fitted to the tiny batch, so that its layers matter to its loss
    (the random one is near uniform: zeroing a layer barely changes its CE)."""
    model = copy.deepcopy(tiny_model).train()
    input_ids, mask = tiny_batch
    labels = input_ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    return model.eval()


def test_ce_clean_is_the_models_own_loss(tiny_model, tiny_batch):
    input_ids, mask = tiny_batch
    result = ce_loss_recovered(tiny_model, exact_sae(32), input_ids, mask, layer=1, batch_size=2)
    with torch.inference_mode():
        labels = input_ids.masked_fill(mask == 0, -100)
        hf_loss = tiny_model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.item()
    assert result["ce_clean"] == pytest.approx(hf_loss, rel=1e-5)


@pytest.mark.parametrize("keep_first_token", [True, False])
def test_ce_loss_recovered_of_exact_and_zero_saes(fitted_tiny_model, tiny_batch, keep_first_token):
    model = fitted_tiny_model
    input_ids, mask = tiny_batch
    kw = {"layer": 1, "keep_first_token": keep_first_token}
    exact = ce_loss_recovered(model, exact_sae(32), input_ids, mask, batch_size=2, **kw)
    assert exact["ce_zero"] > exact["ce_clean"] + 1.0, exact  # zeroing the layer must matter
    assert exact["ce_sae"] == pytest.approx(exact["ce_clean"], abs=1e-5)
    assert exact["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)

    no_decoder = exact_sae(32)
    with torch.no_grad():
        no_decoder.W_dec.zero_()
    zero = ce_loss_recovered(model, no_decoder, input_ids, mask, batch_size=3, **kw)
    assert zero["ce_sae"] == pytest.approx(zero["ce_zero"], abs=1e-5)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-3)

    noisy = exact_sae(32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        noisy.W_dec.add_(0.5 * torch.randn(noisy.W_dec.shape, generator=g))
    partial = ce_loss_recovered(model, noisy, input_ids, mask, batch_size=2, **kw)
    assert partial["ce_sae"] > exact["ce_sae"] + 1e-3
    assert partial["ce_loss_recovered"] < 0.999


def test_first_real_token_is_kept_only_when_asked(fitted_tiny_model, tiny_batch):
    """Rows with two real tokens (right- and left-padded) have one target each, predicted
    from the first real token: zeroing everything but that token cannot change its CE."""
    input_ids, _ = tiny_batch
    mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 0, 1, 1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0, 0, 0, 0]])
    kept = ce_loss_recovered(fitted_tiny_model, exact_sae(32), input_ids, mask, layer=1, batch_size=3)
    assert kept["ce_zero"] == pytest.approx(kept["ce_clean"], abs=1e-6)
    assert math.isnan(kept["ce_loss_recovered"])
    replaced = ce_loss_recovered(fitted_tiny_model, exact_sae(32), input_ids, mask, layer=1, batch_size=3,
                                 keep_first_token=False)
    assert replaced["ce_zero"] > replaced["ce_clean"] + 0.1


def test_killed_training_resumes_to_exactly_the_uninterrupted_weights(dictionary_sae, tmp_path, monkeypatch):
    import igds.core.sae as sae_module

    cfg = dataclasses.replace(SMALL, steps=70, checkpoint_every=20)  # 8192 tokens: 32 batches per epoch
    acts = dictionary_sae["train"]
    whole = train_sae(acts, cfg, seed=0)

    real_batches = sae_module._batches

    def dies_at_step_50(*args, **kwargs):
        for step, batch in enumerate(real_batches(*args, **kwargs)):
            if step == 50:
                raise KeyboardInterrupt("killed")  # after the checkpoints at steps 20 and 40
            yield batch

    monkeypatch.setattr(sae_module, "_batches", dies_at_step_50)
    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, cfg, seed=0, state_dir=tmp_path)
    state = torch.load(tmp_path / sae_module.STATE_FILE, weights_only=False)
    assert state["step"] == 40  # the last checkpoint before the kill, in the second epoch
    monkeypatch.setattr(sae_module, "_batches", real_batches)

    resumed = train_sae(acts, cfg, seed=0, state_dir=tmp_path)
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name

    # a checkpoint of another run (other seed) is ignored, not resumed from
    other = train_sae(acts, cfg, seed=1, state_dir=tmp_path)
    assert torch.equal(other.W_dec, train_sae(acts, cfg, seed=1).W_dec)


@pytest.mark.parametrize("kind", ["topk", "jumprelu", "standard", "gated"])
def test_encode_columns_equals_the_full_encode_and_skips_silent_tokens(kind, monkeypatch):
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
    )

    d_in, d_sae = 16, 64
    make = {"topk": lambda: TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=4)),
            "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae)),
            "standard": lambda: StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae)),
            "gated": lambda: GatedSAE(GatedSAEConfig(d_in=d_in, d_sae=d_sae))}
    torch.manual_seed(0)
    sae = make[kind]()
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if kind == "jumprelu":
            sae.threshold.abs_()
    x = torch.randn(200, d_in)
    cols = torch.tensor([3, 17])
    full = sae.encode(x)[:, cols]
    assert (full > 0).any() and (full == 0).any()  # some tokens fire, some do not

    encoded_rows = []
    real = type(sae).encode
    monkeypatch.setattr(type(sae), "encode", lambda self, v: (encoded_rows.append(len(v)), real(self, v))[1])
    fast = encode_columns(sae, x, cols)
    assert torch.equal(fast, full)
    if kind == "gated":  # its gate is not W_enc's pre-activation: the full encode of every token
        assert encoded_rows == [len(x)]
    else:  # the full-width encode ran only on tokens where a chosen pre-activation is positive
        assert len(encoded_rows) == 1 and encoded_rows[0] < len(x)


@pytest.mark.parametrize("hook, layer", [("blocks.12.hook_resid_post", 12), ("model.layers.12", 12),
                                         ("blocks.12.hook_resid_pre", 11), ("layers.3", 3),
                                         ("blocks.12.hook_mlp_out", None), ("blocks.12.hook_resid_mid", None),
                                         ("model.layers.12.mlp", None), ("embed", None)])
def test_hook_layer_reads_the_layer_whose_output_the_hook_is(hook, layer):
    from igds.core.sae import hook_layer

    assert hook_layer(hook) == layer


def test_a_pretrained_sae_for_another_layer_is_refused_before_any_work(monkeypatch, tiny_model):
    """The check reads the SAE's own metadata (the stage renames the hook only after it)."""
    import dataclasses
    from types import SimpleNamespace

    from sae_lens import StandardSAE, StandardSAEConfig

    import pipelines.sae as stage
    from igds.core.data import make_record
    from igds.core.config import ConfigError
    from igds.params import load_params
    from tests.conftest import ROOT

    def pretrained(release, sae_id, device):
        sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64))
        sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
        return sae

    monkeypatch.setattr(stage, "load_pretrained_sae", pretrained)
    monkeypatch.setattr(stage, "cache_activations", lambda *a, **k: pytest.fail("cached activations first"))
    params = load_params(ROOT / "configs/ci.yaml")
    params = dataclasses.replace(params, sae=dataclasses.replace(params.sae, layer=1, release="r", sae_id="i"))
    records = [make_record(f"q{i}", "", "a", "t", "s") for i in range(40)]
    with pytest.raises(ConfigError, match=r"sae.layer = 1 but the SAE r/i reads blocks.3.hook_resid_post \(the output of layer 3\)"):
        stage.make_sae(params, SimpleNamespace(model=tiny_model, tokenizer=None), records, None)


def test_a_requested_token_count_is_met_or_refused(tiny_model):
    """sae.train_tokens / heldout_tokens are requests: a seeded sample of exactly that many when
    the text gives more, the stage stopped naming both numbers when it gives fewer (before: a cap,
    met silently short), every token when null."""
    from igds.core.config import ConfigError, SaeConfig
    from pipelines.sae import cache_activations
    from tests.conftest import build_char_tokenizer, task

    tokenizer = build_char_tokenizer()
    train, heldout = [task(i) for i in range(8)], [task(i) for i in range(8, 10)]
    every = cache_activations(tiny_model, tokenizer, train, heldout, SaeConfig(layer=1, train_tokens=None,
                                                                               heldout_tokens=None), seed=0)
    n_train, n_heldout = every[0].shape[0], every[1].shape[0]
    met = cache_activations(tiny_model, tokenizer, train, heldout,
                            SaeConfig(layer=1, train_tokens=n_train - 5, heldout_tokens=n_heldout), seed=0)
    assert (met[0].shape[0], met[1].shape[0]) == (n_train - 5, n_heldout)
    with pytest.raises(ConfigError, match=rf"sae.train_tokens = {n_train + 1} token activations asked for, but the "
                                          rf"SAE's text \(9/10 .*: 8 records at sae.max_len = 256\) gives {n_train}; "
                                          rf"set sae.train_tokens to at most {n_train}"):
        cache_activations(tiny_model, tokenizer, train, heldout, SaeConfig(layer=1, train_tokens=n_train + 1,
                                                                           heldout_tokens=None), seed=0)
    with pytest.raises(ConfigError, match=rf"sae.heldout_tokens = {n_heldout + 1} .* gives {n_heldout};"):
        cache_activations(tiny_model, tokenizer, train, heldout, SaeConfig(layer=1, train_tokens=None,
                                                                           heldout_tokens=n_heldout + 1), seed=0)


def test_the_sae_trains_on_its_own_plain_text_and_is_measured_on_the_pools_chat_text(tiny_model, monkeypatch):
    """data.splits.sae: the SAE's activations come from plain text (no template token among them),
    its held-out metrics too, and the pools' chat-format text is measured as on_pools_*; a token
    request the text cannot meet names data.splits.sae.n."""
    import dataclasses
    from types import SimpleNamespace

    import pipelines.sae as stage
    from igds.core.config import ConfigError
    from igds.params import load_params
    from tests.conftest import ROOT, build_char_tokenizer, task

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "<|im_start|>system\nSYSTEM PROMPT<|im_end|>\n" + tokenizer.chat_template
    seen = []
    real = stage.collect_token_activations

    def spy(model, tok, *args, **kwargs):
        seen.append((kwargs.get("desc"), [tokenizer.decode(ids) for ids in tok.input_ids]))
        return real(model, tok, *args, **kwargs)

    monkeypatch.setattr(stage, "collect_token_activations", spy)
    import igds.core.pooling as pooling
    monkeypatch.setattr(pooling, "collect_token_activations", spy)
    params = load_params(ROOT / "configs/ci.yaml")
    params = dataclasses.replace(params, sae=dataclasses.replace(
        params.sae, layer=1, width=2, k=4, steps=5, batch_tokens=64, train_tokens=None, heldout_tokens=None,
        ce_examples=2, batch_size=4))
    own, pools = [task(i) for i in range(20)], [task(i) for i in range(100, 104)]
    loaded = SimpleNamespace(model=tiny_model, tokenizer=tokenizer)
    _, metrics = stage.make_sae(params, loaded, own, None, plain=True, pools=pools)
    texts = {desc: t for desc, t in seen}
    assert not any("SYSTEM PROMPT" in t for t in texts["caching train"] + texts["caching held-out"])
    assert all("SYSTEM PROMPT" in t for t in texts["caching pools"])
    assert {"explained_variance", "dead_share", "ce_loss_recovered", "on_pools_explained_variance",
            "on_pools_dead_share", "on_pools_ce_loss_recovered"} <= set(metrics)
    asked = dataclasses.replace(params, sae=dataclasses.replace(params.sae, train_tokens=10**6))
    with pytest.raises(ConfigError, match=r"data/sae.jsonl.*data.splits.sae.n"):
        stage.make_sae(asked, loaded, own, None, plain=True, pools=pools)
