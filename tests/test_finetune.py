"""Fine-tuning: LoRA changes only the adapter, the loss is on response tokens only, the batch
order is seeded, and an interrupted run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import igds.core.finetune as ft
from igds.core.tokens import tokenize_records
from igds.core.config import ConfigError, FinetuneConfig
from tests.conftest import build_char_tokenizer, build_tiny_model, task

CFG = FinetuneConfig(epochs=1, batch_size=2, lr=1e-2, max_len=128, lora_r=4, lora_dropout=0.0,
                     target_modules=("q_proj", "v_proj"), checkpoint_every=2, warmup_ratio=0.0)


def records(n=8):
    return [task(i) for i in range(n)]


def test_one_step_of_lora_changes_only_the_adapter():
    tok = build_char_tokenizer()
    model = build_tiny_model(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, result = ft.finetune(model, tok, records(2), CFG, seed=0, progress=False)
    assert result.n_steps == 1 and len(result.loss) == 1
    state = trained.state_dict()
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in state.items() if "lora_" not in k}
    assert set(base) == set(before)
    for key, value in before.items():
        assert torch.equal(base[key], value), f"{key} changed"  # no base weight moved
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the step moved it
    merged = trained.merge_and_unload()
    ids = torch.tensor([tokenize_records(tok, records(1), 128).input_ids[0]])
    assert not torch.allclose(merged(ids).logits, build_tiny_model(seed=0)(ids).logits)


def test_the_loss_covers_response_tokens_only():
    tok = build_char_tokenizer()
    tokenized = tokenize_records(tok, records(3), 128)
    batch = ft.step_batch(tokenized, [0, 1, 2], tok.pad_token_id, "cpu")
    for row, (ids, start) in enumerate(zip(tokenized.input_ids, tokenized.response_start)):
        labels = batch["labels"][row]
        assert (labels[:start] == ft.IGNORE).all() and (labels[len(ids):] == ft.IGNORE).all()
        assert labels[start:len(ids)].tolist() == ids[start:]


def test_batch_schedule_is_seeded_covers_every_example_and_keeps_batches_tight():
    lengths = list(np.random.default_rng(0).integers(10, 200, 100))
    a = ft.batch_schedule(lengths, 4, 2, np.random.default_rng(1))
    b = ft.batch_schedule(lengths, 4, 2, np.random.default_rng(1))
    c = ft.batch_schedule(lengths, 4, 2, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len(a) == 50 and sorted(np.concatenate(a[:25]).tolist()) == list(range(100))  # each epoch once
    padded = sum(len(s) * max(lengths[i] for i in s) for s in a)
    shuffled = sum(4 * max(lengths[i] for i in range(j, j + 4)) for j in range(0, 100, 4)) * 2
    assert padded < shuffled  # length bucketing pads less than batching in arbitrary order


def test_an_interrupted_run_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    tok = build_char_tokenizer()
    cfg = dataclasses.replace(CFG, lora_dropout=0.1)  # dropout: the torch generator must resume too
    reference, ref_result = ft.finetune(build_tiny_model(seed=0), tok, records(8), cfg, seed=5, progress=False)

    real_collate, calls = ft.collate, {"n": 0}

    def crash_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed between checkpoints
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(ft, "collate", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(build_tiny_model(seed=0), tok, records(8), cfg, seed=5, state_dir=tmp_path, run_key="k",
                    progress=False)
    monkeypatch.setattr(ft, "collate", real_collate)
    assert (tmp_path / ft.STATE_FILE).is_file()

    resumed, result = ft.finetune(build_tiny_model(seed=0), tok, records(8), cfg, seed=5, state_dir=tmp_path,
                                  run_key="k", progress=False)
    assert result.resumed_from_step == 2 and len(result.loss) == 4
    assert result.loss == pytest.approx(ref_result.loss, abs=1e-6)
    for (k, v), (_, w) in zip(resumed.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)

    # a checkpoint of another run (different key) is ignored: training starts over
    _, fresh = ft.finetune(build_tiny_model(seed=0), tok, records(8), cfg, seed=5, state_dir=tmp_path,
                           run_key="other", progress=False)
    assert fresh.resumed_from_step == 0


def test_different_seeds_train_differently_and_the_same_seed_identically():
    tok = build_char_tokenizer()
    runs = [ft.finetune(build_tiny_model(seed=0), tok, records(6), CFG, seed=s, progress=False)[1].loss
            for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_full_fine_tuning_moves_the_base_weights():
    tok = build_char_tokenizer()
    model = build_tiny_model(seed=0)
    before = model.model.layers[0].self_attn.q_proj.weight.clone()
    trained, _ = ft.finetune(model, tok, records(2), dataclasses.replace(CFG, kind="full"), seed=0, progress=False)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, before)


def test_unknown_target_modules_are_a_config_error():
    with pytest.raises(ConfigError, match="finetune.train.target_modules"):
        ft.finetune(build_tiny_model(seed=0), build_char_tokenizer(), records(2),
                    dataclasses.replace(CFG, target_modules=("c_attn",)), seed=0, progress=False)


def test_save_and_load_round_trip_gives_the_trained_model(tmp_path):
    tok = build_char_tokenizer()
    trained, _ = ft.finetune(build_tiny_model(seed=0), tok, records(4), CFG, seed=0, progress=False)
    ft.save_trained(trained, tok, tmp_path / "adapter", "lora")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert sum(p.stat().st_size for p in (tmp_path / "adapter").iterdir()) < 200_000  # adapter only
    loaded = ft.load_trained(build_tiny_model(seed=0), tmp_path / "adapter", "lora")
    ids = torch.tensor([tokenize_records(tok, records(1), 128).input_ids[0]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, trained(ids).logits, atol=1e-5, rtol=1e-5)


def test_data_parallel_training_under_accelerate_equals_one_process(tmp_path):
    """Two processes (gloo) split every step's batch, a step of one example included: the
    same losses and adapter as one process, up to float summation order."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    runs = {"one": [sys.executable, "-m"],
            "two": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]}
    out = {}
    for name, launcher in runs.items():
        proc = subprocess.run([*launcher, "tests.finetune_worker", str(tmp_path / f"{name}.pt")], cwd=repo,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = torch.load(tmp_path / f"{name}.pt")
    one, two = out["one"], out["two"]
    assert (one["world"], two["world"]) == (1, 2)
    assert len(one["loss"]) == 6 and two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-6)
    assert one["lora"].keys() == two["lora"].keys()
    moved = [k for k, v in one["lora"].items() if "lora_B" in k and v.abs().sum() > 0]
    assert moved  # training did move the adapter
    for key, value in one["lora"].items():
        torch.testing.assert_close(two["lora"][key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_gradient_checkpointing_trains_the_same_adapter():
    tok = build_char_tokenizer()
    runs = [ft.finetune(build_tiny_model(seed=0), tok, records(4), dataclasses.replace(CFG, gradient_checkpointing=on),
                        seed=0, progress=False) for on in (False, True)]
    assert runs[1][1].loss == pytest.approx(runs[0][1].loss, abs=1e-6)
    for (k, v), (_, w) in zip(runs[1][0].state_dict().items(), runs[0][0].state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)


def test_bf16_autocast_trains_in_bf16_close_to_fp32_and_float16_is_refused_on_cpu():
    """model.autocast: the fine-tuning step under mixed_precision('cpu', 'bfloat16') runs its
    matrix products in bf16 (its losses differ from fp32's in the last bits, but stay close);
    null changes nothing; float16 autocast is refused on a CPU by name."""
    from igds.core.config import ModelConfig
    from igds.core.models.loading import mixed_precision

    a = torch.randn(4, 4)
    with mixed_precision("cpu", "bfloat16"):
        assert (a @ a).dtype == torch.bfloat16
    with mixed_precision("cpu", None):
        assert (a @ a).dtype == torch.float32
    tok = build_char_tokenizer()
    losses = {}
    learn = dataclasses.replace(CFG, epochs=8, lr=0.05, warmup_ratio=0.0)  # one batch, again and again
    for mode in (None, "bfloat16", None):
        with mixed_precision("cpu", mode):  # around the whole run, as pipelines.common.main puts it
            losses.setdefault(mode, []).append(
                ft.finetune(build_tiny_model(seed=0), tok, records(2), learn, seed=0, progress=False)[1].loss)
    fp32, bf16 = losses[None][0], losses["bfloat16"][0]
    assert losses[None][1] == fp32 and bf16 != fp32
    # the updates reach the next forward (autocast caches its bf16 copies of the weights for as long
    # as the context lasts: without clearing that cache after each step, bf16 trained nothing)
    assert min(bf16[1:]) < bf16[0] - 0.05 and min(fp32[1:]) < fp32[0] - 0.05
    np.testing.assert_allclose(bf16, fp32, rtol=0.05)
    with pytest.raises(ConfigError, match=r"model.autocast = 'float16' is not allowed; expected bfloat16 or null on a CPU"):
        from igds.core.config import from_dict

        from_dict(ModelConfig, {"autocast": "float16"}, "model")
