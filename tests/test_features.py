"""Task-feature identification with planted answers: a tiny model whose residual stream
carries a known direction on task tokens only, and hand-built SAEs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from igds.core.pooling import pooled_feature_activations
from igds.core.tokens import tokenize_records
from igds.method.config import IdentifyConfig
from igds.method.features import (
    FeatureRecord,
    frequency_recall,
    identify,
    interventional_filter,
    jaccard,
    rank_features,
)
from igds.core.loglik import answer_loglik
from igds.core.models.residual import add_to_residual
from tests.conftest import D, LAYER, general, hand_built_sae, other, recall_sae, task

def test_frequency_recall_finds_the_task_feature_and_not_the_everywhere_feature(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    prior = tokenize_records(tok, [task(i) for i in range(12)], 256)
    gen = tokenize_records(tok, [general(i) for i in range(12)], 256)
    fp = pooled_feature_activations(model, sae, prior, LAYER, 4, tok.pad_token_id, "response").fired.float().mean(0).numpy()
    fg = pooled_feature_activations(model, sae, gen, LAYER, 4, tok.pad_token_id, "response").fired.float().mean(0).numpy()
    np.testing.assert_allclose(fp, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(fg, [0.0, 1.0, 0.0, 1.0])
    assert frequency_recall(fp, fg, top_n=3, min_contrast=0.5) == [0]
    # a ratio contrast finds the same; without a contrast threshold, the everywhere feature comes in
    assert frequency_recall(fp, fg, top_n=3, min_contrast=2.0, contrast="ratio") == [0]
    assert frequency_recall(fp, fg, top_n=3, min_contrast=-1.0) == [0, 1]  # f3 never fires on the prior


def test_pooled_activations_stop_at_layer_and_match_a_full_forward(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    records = [task(i) for i in range(5)] + [general(i) for i in range(4)]
    tokens = tokenize_records(tok, records, 256)
    acts = pooled_feature_activations(model, sae, tokens, LAYER, 3, tok.pad_token_id, "all")
    for i, ids in enumerate(tokens.input_ids):
        with torch.inference_mode():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0, 1:]
            per_token = sae.encode(hidden)
        torch.testing.assert_close(acts.max_act[i], per_token.max(0).values)
        torch.testing.assert_close(acts.mean_act[i], per_token.mean(0))
        assert acts.n_tokens[i] == len(ids) - 1


def grad_direction(model, tokenizer, records) -> torch.Tensor:
    """The residual direction (added at LAYER on every token) that most raises answer log-likelihood."""
    tokens = tokenize_records(tokenizer, records, 256)
    v = torch.zeros(D, requires_grad=True)
    total = 0.0
    for ids, start in zip(tokens.input_ids, tokens.response_start):
        labels = torch.tensor([-100] * start + ids[start:])
        with add_to_residual(model, LAYER, v):
            total = total + model(torch.tensor([ids]), labels=labels[None]).loss
    (grad,) = torch.autograd.grad(-total, v)
    return grad / grad.norm()


def test_interventional_filter_keeps_a_helpful_direction_and_drops_a_harmful_one(planted, tok):
    model, u, w, basis = planted
    heldout = [task(i) for i in range(20, 32)]  # 12: a one-sided sign-flip p can reach 1/4096 (6: 1/64, > 0.05 / 4)
    good = grad_direction(model, tok, heldout)
    w_dec = torch.stack([good, -good])
    sae = hand_built_sae(torch.zeros(D, 2), torch.zeros(2), w_dec)
    tokens = tokenize_records(tok, heldout, 256)
    records = [FeatureRecord(f, 1.0, 0.0, 1.0, 1.0, scale=0.3) for f in (1, 0)]  # harmful one first
    baseline = interventional_filter(model, sae, records, tokens, layer=LAYER, alphas=(0.5, 1.0),
                                     min_effect=0.0, batch_size=4, pad_id=tok.pad_token_id)
    assert baseline == pytest.approx(answer_loglik(model, tokens, 2, tok.pad_token_id).mean())
    by_feature = {r.feature: r for r in records}
    assert by_feature[0].kept and by_feature[0].causal_effect > 0
    assert not by_feature[1].kept and by_feature[1].causal_effect < 0
    assert all(v < 0 for v in by_feature[1].effect_by_alpha.values())
    assert rank_features(records, 5, interventional=True) == [0]
    assert by_feature[0].rank == 1 and by_feature[1].rank is None
    # the frequency-only ablation keeps both in recall order
    assert rank_features(records, 5, interventional=False) == [1, 0]


def test_answer_loglik_is_independent_of_batching(planted, tok):
    model, *_ = planted
    tokens = tokenize_records(tok, [task(i) for i in range(7)] + [other(i) for i in range(3)], 256)
    np.testing.assert_allclose(answer_loglik(model, tokens, 1, tok.pad_token_id),
                               answer_loglik(model, tokens, 4, tok.pad_token_id), rtol=1e-4, atol=1e-5)


def test_identify_end_to_end_with_stability(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    cfg = IdentifyConfig(top_n=3, min_contrast=0.5, interventional=False, batch_size=4, max_len=256)
    result = identify(model, tok, sae, [task(i) for i in range(16)], [general(i) for i in range(10)], cfg, LAYER)
    assert result.ranking == [0]
    assert [r.feature for r in result.records] == [0]
    assert result.records[0].freq_prior == 1.0 and result.records[0].freq_general == 0.0
    assert result.stability["jaccard_top_n"] == 1.0 and result.stability["top_n_half_a"] == [0]
    assert result.stability["jaccard_eligible"] == 1.0 and result.stability["n_eligible_per_half"] == [1, 1]
    assert result.n_prior_recall == 16 and result.n_prior_heldout == 0


def test_jaccard():
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard([], []) == 1.0


def test_steered_logliks_run_layers_up_to_l_once_and_equal_full_steered_passes(planted, tok):
    from igds.core.loglik import steered_logliks

    model, *_ = planted
    tokens = tokenize_records(tok, [task(i) for i in range(7)] + [other(i) for i in range(3)], 256)
    vectors = [torch.randn(D, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    calls = []
    inner = model.model.layers[0].self_attn  # runs only when layer 0 really computes
    handle = inner.register_forward_hook(lambda *_: calls.append(1))
    try:
        base, steered = steered_logliks(model, tokens, 4, tok.pad_token_id, LAYER, vectors)
    finally:
        handle.remove()
    n_batches = 3
    # layer 0 runs once per batch (the unsteered pass), never per variant
    assert len(calls) == n_batches
    np.testing.assert_allclose(base, answer_loglik(model, tokens, 4, tok.pad_token_id), rtol=1e-5, atol=1e-6)
    for v, row in zip(vectors, steered):
        np.testing.assert_allclose(row, answer_loglik(model, tokens, 4, tok.pad_token_id, steer=(LAYER, v)),
                                   rtol=1e-4, atol=1e-5)


def _planted_effects(monkeypatch, effects: np.ndarray):
    """interventional_filter on per-example effects we choose: rows = features x alphas."""
    import igds.method.features as features
    from tests.conftest import build_char_tokenizer

    monkeypatch.setattr(features, "steered_logliks", lambda *a, **k: (np.zeros(effects.shape[1]), effects))
    k = effects.shape[0]  # at least as many features as rows
    sae = hand_built_sae(torch.zeros(D, k), torch.zeros(k), torch.eye(k, D))
    tokens = tokenize_records(build_char_tokenizer(), [task(i) for i in range(effects.shape[1])], 64)

    def run(rule: str, alphas=(1.0,)) -> list[FeatureRecord]:
        n_features = effects.shape[0] // len(alphas)
        records = [FeatureRecord(f, 1.0, 0.0, 1.0, 1.0, scale=1.0) for f in range(n_features)]
        interventional_filter(None, sae, records, tokens, layer=LAYER, alphas=alphas, min_effect=0.0,
                              batch_size=4, pad_id=0, keep_rule=rule, n_perm=2000)
        return records

    return run


def test_keep_rule_ci_drops_a_noisy_winner_that_the_mean_rule_keeps(monkeypatch):
    rng = np.random.default_rng(0)
    noisy = 0.01 + rng.normal(0, 0.1, 12)  # mean > 0, CI straddles 0
    noisy += 0.01 - noisy.mean()
    clear = 0.05 + rng.normal(0, 0.005, 12)
    run = _planted_effects(monkeypatch, np.stack([noisy, clear]))
    by_rule = {rule: {r.feature: r for r in run(rule)} for rule in ("ci", "mean")}
    ci = by_rule["ci"]
    assert not ci[0].kept and ci[0].causal_effect_lo < 0 < ci[0].causal_effect_hi
    assert ci[0].causal_effect == pytest.approx(0.01)
    assert ci[1].kept and ci[1].causal_effect_lo > 0.04
    assert by_rule["mean"][0].kept and by_rule["mean"][1].kept


def test_holm_controls_the_error_over_features_x_alphas_where_the_best_alpha_ci_does_not(monkeypatch):
    """16 null features x 2 alphas (effects drawn around 0) and one real one: picking each
    feature's best alpha and checking its CI keeps some nulls (the best of two is optimistic);
    Holm over the 34 tests keeps the real feature alone, at its significant alpha, and BH too."""
    rng = np.random.default_rng(3)
    n = 24
    null = rng.normal(0, 0.1, (32, n))
    real = np.stack([rng.normal(0.0, 0.1, n), 0.2 + rng.normal(0, 0.02, n)])  # alpha 1: nothing; alpha 2: a gain
    run = _planted_effects(monkeypatch, np.concatenate([null, real]))
    ci = run("ci", alphas=(1.0, 2.0))
    assert sum(r.kept for r in ci[:16]) >= 1 and ci[16].kept  # nulls pass the uncorrected best-alpha rule
    for rule in ("holm", "bh"):
        records = run(rule, alphas=(1.0, 2.0))
        assert [r.feature for r in records if r.kept] == [16], rule
        real_rec = records[16]
        assert real_rec.best_alpha == 2.0 and real_rec.p_adjusted < 0.05
        assert real_rec.p_adjusted >= real_rec.p_by_alpha["2"]  # adjusted over the family
        assert set(real_rec.p_adjusted_by_alpha) == {"1", "2"} and "adjusted p" in real_rec.reason
        assert all(r.p_adjusted is not None and r.p_adjusted >= 0.05 for r in records[:16])


def test_a_draw_whose_rule_keeps_nothing_falls_back_to_the_declared_mean_rule(monkeypatch):
    """Three held-out examples cannot clear Holm (smallest one-sided p 1/8): nothing is kept;
    none_kept: mean then keeps the features whose best mean effect is positive, and says so."""
    from igds.method.config import IdentifyConfig
    from igds.method.features import fall_back, rank_features

    effects = np.array([[0.3, 0.2, 0.25], [-0.1, -0.2, -0.1]])
    records = _planted_effects(monkeypatch, effects)("holm")
    assert not any(r.kept for r in records) and rank_features(records, 2, True) == []
    ranking = fall_back(records, IdentifyConfig(keep_rule="holm", none_kept="mean"), 3)
    assert ranking == [0] and records[0].kept and not records[1].kept
    assert records[0].reason.startswith("fallback (keep_rule holm kept none)") and records[0].p_adjusted is None


def test_alphas_must_amplify_unless_suppression_is_allowed():
    from igds.core.config import ConfigError

    with pytest.raises(ConfigError, match="allow_suppression"):
        IdentifyConfig(alphas=(-2.0, 2.0))
    assert IdentifyConfig(alphas=(-2.0, 2.0), allow_suppression=True).alphas == (-2.0, 2.0)
    with pytest.raises(ConfigError, match="keep_rule"):
        IdentifyConfig(keep_rule="best")
    with pytest.raises(ConfigError, match="none_kept"):
        IdentifyConfig(none_kept="random")
