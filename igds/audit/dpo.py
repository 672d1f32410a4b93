"""DPO on one arm's preference pairs (issue 17): TRL's DPOTrainer with a LoRA adapter (peft),
seeded, the reference log-probabilities precomputed once (the model with the adapter
disabled: the base model), resumable from HF Trainer checkpoints.

The shaping arm's margin offset o (igds.audit.intervene) is written in TRL's own loss, not a
hand-written one: DPO's sigmoid loss -log sigma(beta (dpi - dref) + o) is
-log sigma(beta (dpi - (dref - o / beta))), so each pair's precomputed reference
log-probability of its chosen response is lowered by o / beta and TRL trains as usual.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class DpoResult:
    model: object  # the PeftModel (the adapter on the model)
    n_pairs: int
    n_steps: int
    loss: list[float]  # per optimizer step
    reward_accuracy: list[float]  # TRL's rewards/accuracies per step
    wall_s: float
    resumed_from_step: int

    def summary(self) -> dict:
        return {"n_pairs": self.n_pairs, "n_steps": self.n_steps, "loss": self.loss,
                "loss_first": self.loss[0] if self.loss else None, "loss_last": self.loss[-1] if self.loss else None,
                "reward_accuracy_last": self.reward_accuracy[-1] if self.reward_accuracy else None,
                "wall_s": round(self.wall_s, 3), "resumed_from_step": self.resumed_from_step}


def preference_dataset(rows: Sequence[dict]):
    """TRL's conversational preference format: the prompt as a user turn, each response as an
    assistant turn; the shaping offset (0 when absent) kept as a column."""
    from datasets import Dataset  # noqa: PLC0415

    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}],
                               "offset": float(r.get("offset", 0.0))} for r in rows])


def _shift_reference(dataset, beta: float):
    """Each chosen response's reference log-probability lowered by offset / beta (the margin offset)."""
    return dataset.map(lambda ex: {"ref_chosen_logps": ex["ref_chosen_logps"] - ex["offset"] / beta},
                       desc="margin offsets")


def trainer_for(model, tokenizer, rows: Sequence[dict], cfg, seed: int, out_dir: Path, device: str = "cpu"):
    """A DPOTrainer on `rows` (offsets applied), checkpointing into `out_dir`."""
    from peft import LoraConfig  # noqa: PLC0415
    from trl import DPOConfig, DPOTrainer  # noqa: PLC0415

    args = DPOConfig(
        output_dir=str(out_dir), beta=cfg.beta, learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, seed=seed, data_seed=seed, max_length=cfg.max_len,
        precompute_ref_log_probs=True, report_to=[], logging_steps=1, save_strategy="steps",
        save_steps=cfg.checkpoint_every, save_total_limit=1, use_cpu=device == "cpu", disable_dropout=True,
        lr_scheduler_type="linear", warmup_steps=0, remove_unused_columns=False)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=preference_dataset(rows), processing_class=tokenizer,
                         peft_config=lora)
    trainer.train_dataset = _shift_reference(trainer.train_dataset, cfg.beta)
    return trainer


def complete_checkpoints(resume_dir: Path) -> list[Path]:
    """The Trainer checkpoints in `resume_dir` that were written whole, oldest first. The Trainer
    writes a checkpoint's trainer_state.json last, so a run killed while saving leaves a folder
    without it (or with a cut one); such folders are removed, and the run resumes from the last
    whole checkpoint."""
    whole = []
    for path in sorted(resume_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            whole.append(path)
        except (OSError, ValueError):
            log.warning("removing %s: a checkpoint cut short (no whole trainer_state.json)", path)
            shutil.rmtree(path, ignore_errors=True)
    return whole


def train_dpo(model, tokenizer, rows: Sequence[dict], cfg, seed: int, resume_dir: Path, device: str = "cpu") -> DpoResult:
    """DPO with a fresh LoRA adapter on `model`; continues from the last checkpoint in `resume_dir`."""
    if not rows:
        raise ValueError("no pairs to train on")
    os.environ.setdefault("TQDM_DISABLE", "0")
    resume_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = complete_checkpoints(resume_dir)
    trainer = trainer_for(model, tokenizer, rows, cfg, seed, resume_dir, device)
    t0 = time.perf_counter()
    resumed = int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return DpoResult(trainer.model, len(rows), trainer.state.global_step, [float(h["loss"]) for h in history],
                     [float(h.get("rewards/accuracies", float("nan"))) for h in history],
                     time.perf_counter() - t0, resumed)
