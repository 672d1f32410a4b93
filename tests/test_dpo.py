"""DPO on an arm (igds.audit.dpo): TRL's DPOTrainer with a LoRA adapter; the shaping offset enters
TRL's loss through the precomputed reference (no hand-written loss), equal to TRL's own loss
at offset 0 and to -log sigma(beta x margin + offset) otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from igds.audit.config import DpoConfig
from igds.audit.dpo import train_dpo, trainer_for
from tests.conftest import build_char_tokenizer, build_tiny_model

CFG = DpoConfig(arms=(), epochs=1, lr=5e-3, beta=0.5, batch_size=4, max_len=64, lora_r=4, lora_alpha=8,
                target_modules=("q_proj", "v_proj"), checkpoint_every=100)


def rows(n=8, offsets=None):
    return [{"id": f"p{i}", "prompt": f"Add {i} and 2.", "chosen": f"Sure! {i + 2}", "rejected": f"{i + 3}",
             **({} if offsets is None else {"offset": float(offsets[i])})} for i in range(n)]


def batch_loss(trainer, model):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        return float(trainer.compute_loss(model, batch))


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_at_offset_zero_the_loss_is_trls_and_an_offset_shifts_the_margin(tmp_path):
    tok = build_char_tokenizer()
    plain = trainer_for(build_tiny_model(0), tok, rows(), CFG, 0, tmp_path / "a")
    zero = trainer_for(build_tiny_model(0), tok, rows(offsets=np.zeros(8)), CFG, 0, tmp_path / "b")
    for trainer in (plain, zero):
        perturb(trainer.model, 1)
    assert batch_loss(plain, plain.model) == pytest.approx(batch_loss(zero, zero.model), abs=1e-7)
    assert batch_loss(plain, plain.model) != pytest.approx(math.log(2), abs=1e-4)  # the adapter moved the policy
    # at the adapter's zero init the policy is the reference (up to ~1e-4 nats of float32 noise between the
    # precomputed and the live forward): the loss is -log sigma(offset), pair by pair
    offsets = np.linspace(-2, 2, 8)
    shaped = trainer_for(build_tiny_model(0), tok, rows(offsets=offsets), CFG, 0, tmp_path / "c")
    expected = float(np.mean([-math.log(1 / (1 + math.exp(-o))) for o in offsets[:4]]))
    assert batch_loss(shaped, shaped.model) == pytest.approx(expected, abs=1e-3)
    assert abs(expected - math.log(2)) > 0.1


def test_dpo_learns_the_preference_and_is_seeded(tmp_path):
    tok = build_char_tokenizer()
    cfg = DpoConfig(**{**CFG.__dict__, "epochs": 4})
    first = train_dpo(build_tiny_model(0), tok, rows(16), cfg, 0, tmp_path / "a")
    assert first.n_steps == 16 and first.loss[-1] < first.loss[0] - 0.05
    again = train_dpo(build_tiny_model(0), tok, rows(16), cfg, 0, tmp_path / "b")
    assert again.loss == first.loss
    with pytest.raises(ValueError, match="no pairs"):
        train_dpo(build_tiny_model(0), tok, [], cfg, 0, tmp_path / "c")


def test_the_reaudit_sees_dpo_raise_the_planted_opener(tmp_path):
    """DPO on pairs whose chosen side opens with 'Sure!' raises that opener's log-probability on
    held-out prompts over the base model's, and ranks held-out pairs of the same kind right."""
    from igds.audit.pairs import make_pair
    from igds.audit.reaudit import base_values, opens_with, reaudit

    tok = build_char_tokenizer()
    cfg = DpoConfig(**{**CFG.__dict__, "epochs": 4})
    result = train_dpo(build_tiny_model(0), tok, rows(16), cfg, 0, tmp_path / "a")
    heldout = [make_pair(f"Add {i} and 2.", f"Sure! {i + 2}", f"{i + 3}", "t", "s") for i in range(40, 48)]
    out = reaudit(result.model, tok, heldout, ["Sure!"], 4, 64, 8)
    rise = np.array(out["marker_logprob"]) - np.array(out["marker_logprob_base"])
    assert (rise > 0).all() and out["accuracy"] == 1.0 and len(out["margin"]) == 8
    assert len(out["marker_rate"]) == len(out["marker_rate_base"]) == 8
    # ranking: log p(chosen) - log p(rejected) of each model; the longer chosen side is the less likely under
    # both here, and the reward margin is exactly how much DPO moved the ranking margin
    rank, rank_base = np.array(out["rank_margin"]), np.array(out["rank_margin_base"])
    assert len(rank) == 8 and np.allclose(rank - rank_base, out["margin"], atol=1e-4)
    # the base values of stage reaudit-base (the plain model, computed once per set) are the ones the
    # re-audit computes with the adapter switched off, so every re-audit of the set can share them
    base = base_values(build_tiny_model(0).eval(), tok, heldout, ["Sure!"], 4, 64, 8)
    shared = reaudit(result.model, tok, heldout, ["Sure!"], 4, 64, 8, base)
    for key in ("marker_logprob_base", "margin", "rank_margin_base", "marker_logprob"):
        assert np.allclose(shared[key], out[key], atol=1e-4), key
    with pytest.raises(ValueError, match="other held-out pairs"):
        reaudit(result.model, tok, heldout[:4], ["Sure!"], 4, 64, 8, base)
    assert opens_with([" sure! 4", "4 Sure!", "SURE!"], ["Sure!"]).tolist() == [True, False, True]


def test_a_killed_dpo_run_resumes_from_its_checkpoint_to_the_uninterrupted_adapter(tmp_path):
    """SIGKILL a DPO run (a child process, slowed by a callback) after its first checkpoint, then
    train again on the same resume dir: it continues from that step and ends with the adapter
    an uninterrupted run trains. A checkpoint cut short by the kill (the Trainer writes its
    trainer_state.json last; the first version of this test caught a kill mid-save, and the
    resume failed on it) is removed, not resumed from: one is planted here."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from tests.conftest import ROOT

    cfg = DpoConfig(**{**CFG.__dict__, "epochs": 4, "checkpoint_every": 4})  # 16 steps, a checkpoint every 4
    resume = tmp_path / "killed"
    child = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from transformers import TrainerCallback
        import igds.audit.dpo as dpo
        from igds.audit.config import DpoConfig
        from tests.conftest import build_char_tokenizer, build_tiny_model
        from tests.test_dpo import CFG, rows

        class Slow(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                time.sleep(0.5)

        make = dpo.trainer_for
        def slowed(*a, **k):
            trainer = make(*a, **k)
            trainer.add_callback(Slow())
            return trainer
        dpo.trainer_for = slowed
        cfg = DpoConfig(**{{**CFG.__dict__, "epochs": 4, "checkpoint_every": 4}})
        dpo.train_dpo(build_tiny_model(0), build_char_tokenizer(), rows(16), cfg, 0, Path({str(resume)!r}))
        """)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (resume / "checkpoint-4" / "trainer_state.json").is_file():
            assert proc.poll() is None, "the DPO run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (resume / "checkpoint-16").exists()
    cut = resume / "checkpoint-15"  # as a kill while saving leaves it: weights, no trainer state
    cut.mkdir(exist_ok=True)
    (cut / "adapter_model.safetensors").write_bytes(b"partial")
    tok = build_char_tokenizer()
    resumed = train_dpo(build_tiny_model(0), tok, rows(16), cfg, 0, resume)
    assert not cut.exists()
    assert 4 <= resumed.resumed_from_step < 16 and resumed.n_steps == 16
    whole = train_dpo(build_tiny_model(0), tok, rows(16), cfg, 0, tmp_path / "whole")

    def adapter(result):
        return {k: v.detach().clone() for k, v in result.model.named_parameters() if "lora_" in k}

    a, b = adapter(resumed), adapter(whole)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumed.loss[-4:] == pytest.approx(whole.loss[-4:], abs=1e-6)
