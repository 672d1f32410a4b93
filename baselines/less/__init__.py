"""less: LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted Instruction
Tuning"), the gradient-based selector: an example is kept when its Adam update points the
way the target task's gradients point.

Steps (paper §3-4, reference code princeton-nlp/LESS):
1. Warm-up: LoRA on a seeded random slice of the pool, AdamW with a linear schedule; one
   checkpoint per epoch (LoRA weights, Adam moments, the epoch's mean learning rate).
2. Per checkpoint, per-example LoRA gradients of the response loss: Adam-preconditioned for
   the pool (eq. 2, `obtain_gradients_with_adam`), plain (SGD) for the validation examples.
3. A seeded random projection to `proj_dim` dimensions, then L2 normalisation.
4. score(z) = sum_i lr_i / sum(lr) * mean_val cos(Gamma(z; theta_i), grad(z_val; theta_i))
   (eq. 3; LESS takes the max over validation subtasks of the mean, we have one task).

The gradient machinery (warm-up, per-example gradients, preconditioning, projection) is
baselines/less/gradients.py.

The scoring model is never modified: the adapter goes on a deep copy.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from igds.core.config import check
from igds.core.data import Record
from igds.core.registry import SelectorResult, register

log = logging.getLogger(__name__)

# seeded draws: warm-up slice, epoch order, validation sample, LoRA init, projection ("LESS" + i)
_SALT_WARMUP, _SALT_SHUFFLE, _SALT_VAL, _SALT_LORA, _SALT_PROJECTION = (0x4C455353 + i for i in range(5))


@dataclass(frozen=True)
class LessParams:
    warmup_share: float = 0.05  # share of the pool in the warm-up slice (LESS: 5%)
    min_warmup_examples: int = 8  # at least this many warm-up examples
    epochs: int = 2  # warm-up epochs = checkpoints (LESS: 4; 2 keeps the CPU default near 15 min)
    lr: float = 2e-4  # LESS: 2e-5 over ~420 steps; ~10 steps here, so the usual LoRA rate (QLoRA's)
    warmup_ratio: float = 0.03  # linear schedule's warm-up share of the steps (LESS: 0.03)
    batch_size: int = 4  # warm-up examples per optimizer step (LESS: 32; the slice here is ~20)
    lora_r: int = 8  # LESS: 128 on 7B models
    lora_alpha: float = 32.0  # LESS: 512, i.e. alpha / r = 4, kept
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    proj_dim: int = 8192  # LESS: 8192
    n_val: int = 16  # validation examples drawn from the target set

    def __post_init__(self) -> None:
        check(0.0 < self.warmup_share <= 1.0, "warmup_share", self.warmup_share, "a share in (0, 1]")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "a share in [0, 1)")
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "a positive number")
        for key in ("min_warmup_examples", "epochs", "batch_size", "lora_r", "proj_dim", "n_val"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(len(self.target_modules) > 0, "target_modules", self.target_modules,
              "a non-empty list of module names, e.g. [q_proj, k_proj, v_proj, o_proj]")

# --- the selector ---------------------------------------------------------------------------

@register("less", LessParams)
class LessSelector:
    needs = ("model", "target")  # target: the prior split's solved examples, LESS's validation set
    randomness = "fixed"  # the warm-up (slice, order, LoRA init), validation sample and projection: drawn once

    def __init__(self, params: LessParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        import torch  # noqa: PLC0415 (the model stack: only when scoring)

        from baselines.less.gradients import SrhtProjector, gradient_features, lora_copy, warm_up  # noqa: PLC0415
        from igds.core.tokens import tokenize_records  # noqa: PLC0415

        p = self.params
        loaded = ctx.model()
        tok = tokenize_records(loaded.tokenizer, pool, ctx.max_len)
        scorable = [i for i in range(len(tok)) if tok.response_start[i] < len(tok.input_ids[i])]
        if len(scorable) < len(pool):
            log.warning("less: %d pool examples have no response token within max_len %d; they score NaN",
                        len(pool) - len(scorable), ctx.max_len)
        if not scorable:
            return SelectorResult(np.full(len(pool), np.nan))
        if not ctx.target:
            raise ValueError("less: the scoring context has no target examples; LESS needs solved "
                             "validation examples")
        n_warm = min(len(scorable), max(p.min_warmup_examples, math.ceil(p.warmup_share * len(pool))))
        warm = ctx.rng(_SALT_WARMUP).choice(scorable, n_warm, replace=False)
        val_pick = ctx.rng(_SALT_VAL).choice(len(ctx.target), min(p.n_val, len(ctx.target)), replace=False)
        val_tok = tokenize_records(loaded.tokenizer, [ctx.target[i] for i in sorted(val_pick)], ctx.max_len)
        val = [i for i in range(len(val_tok)) if val_tok.response_start[i] < len(val_tok.input_ids[i])]
        if not val:
            raise ValueError(f"less: none of the {len(val_tok)} target examples drawn has a response token "
                             f"within max_len {ctx.max_len}; LESS needs solved validation examples")

        model, params = lora_copy(loaded.model, r=p.lora_r, alpha=p.lora_alpha, target_modules=p.target_modules,
                                  seed=int(ctx.rng(_SALT_LORA).integers(2**62)))
        d_lora = sum(q.numel() for q in params)
        t0 = time.perf_counter()
        checkpoints, warm_loss = warm_up(model, params, tok, warm, lr=p.lr, epochs=p.epochs, batch_size=p.batch_size,
                                         warmup_ratio=p.warmup_ratio, rng=ctx.rng(_SALT_SHUFFLE))
        warm_s = time.perf_counter() - t0
        project = SrhtProjector(d_lora, p.proj_dim, torch.Generator().manual_seed(
            int(ctx.rng(_SALT_PROJECTION).integers(2**62))))
        lrs = np.array([c.lr for c in checkpoints])
        # every epoch at lr 0 happens only when the whole warm-up is the schedule's first step
        weights = lrs / lrs.sum() if lrs.sum() > 0 else np.full(len(lrs), 1 / len(lrs))

        influence = np.zeros(len(scorable))
        t0 = time.perf_counter()
        for i, (ckpt, weight) in enumerate(zip(checkpoints, weights)):
            with torch.no_grad():
                for q, saved in zip(params, ckpt.lora):
                    q.copy_(saved)
            val_feats = gradient_features(model, params, val_tok, val, project, None, f"less val grads {i + 1}")
            pool_feats = gradient_features(model, params, tok, scorable, project, ckpt, f"less pool grads {i + 1}")
            influence += weight * (pool_feats @ val_feats.T).mean(1).double().numpy()  # [n_pool] mean cosine
        grads_s = time.perf_counter() - t0
        del model, params

        scores = np.full(len(pool), np.nan)
        scores[scorable] = influence
        n_grads = len(checkpoints) * (len(scorable) + len(val))
        info = {"d_lora": d_lora, "proj_dim": project.k, "n_warmup": n_warm, "n_val": len(val),
                "checkpoint_lr": lrs.tolist(), "checkpoint_weight": weights.tolist(),
                "warmup_loss": warm_loss, "warmup_s": warm_s, "grads_s": grads_s,
                "s_per_example_grad": grads_s / n_grads}
        log.info("less: %d checkpoints, d_lora %d -> %d, warm-up %.0f s, gradients %.0f s (%.2f s per example "
                 "per checkpoint)", len(checkpoints), d_lora, project.k, warm_s, grads_s, grads_s / n_grads)
        return SelectorResult(scores, info)
