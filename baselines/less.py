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

Per-example gradients: one forward + backward per example and torch.autograd.grad over the
list of LoRA tensors. torch.func.vmap over a right-padded batch gives the same gradients but
was ~2x slower on CPU (padding, LM head on every position, no batching rule for SDPA).

Projection: a subsampled randomized Hadamard transform (a fast Johnson-Lindenstrauss
transform) instead of LESS's dense Rademacher matrix, which for ~1M LoRA parameters x 8192
would be ~30 GB or regenerated for every batch; SRHT costs O(d log d) per gradient
(~20 ms for d ~ 1M on this CPU).

The scoring model is never modified: the adapter goes on a deep copy.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from igds.activations import Tokenized, tokenize_records
from igds.config import _check
from igds.data import Record
from igds.selection import ScoringContext, register

log = logging.getLogger(__name__)

ADAM_BETAS = (0.9, 0.999)  # AdamW's defaults, hard-coded in LESS's obtain_gradients_with_adam
ADAM_EPS = 1e-8
PROJECT_EVERY = 16  # gradients projected together (LESS: project_interval 16)
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
        _check(0.0 < self.warmup_share <= 1.0, "warmup_share", self.warmup_share, "a share in (0, 1]")
        _check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "a share in [0, 1)")
        _check(self.lr > 0, "lr", self.lr, "a positive number")
        _check(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "a positive number")
        for key in ("min_warmup_examples", "epochs", "batch_size", "lora_r", "proj_dim", "n_val"):
            _check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        _check(len(self.target_modules) > 0, "target_modules", self.target_modules,
               "a non-empty list of module names, e.g. [q_proj, k_proj, v_proj, o_proj]")


@dataclass(frozen=True)
class Checkpoint:
    """The warm-up state at the end of one epoch."""

    lora: list[torch.Tensor]  # LoRA tensors, in trainable-parameter order
    exp_avg: torch.Tensor  # [d_lora] Adam first moment, flat in the same order
    exp_avg_sq: torch.Tensor  # [d_lora] Adam second moment
    lr: float  # the epoch's mean learning rate: LESS's checkpoint weight ("average lr of the epoch")


# --- gradients ------------------------------------------------------------------------------

def response_loss(model, input_ids: Sequence[int], response_start: int) -> torch.Tensor:
    """Mean token cross-entropy on the response: the SFT loss of one example."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(input_ids)], device=device)  # [1, seq]
    # token t is predicted at position t - 1: only positions start-1 .. n-2 go through the LM head
    n_keep = len(input_ids) - response_start + 1
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=n_keep).logits[0, :-1]  # [n_resp, vocab]
    return F.cross_entropy(logits.float(), ids[0, response_start:])


def flat_grad(model, params: list[torch.Tensor], input_ids: Sequence[int], response_start: int) -> torch.Tensor:
    """[d_lora] gradient of one example's response loss w.r.t. `params`, concatenated."""
    grads = torch.autograd.grad(response_loss(model, input_ids, response_start), params)
    return torch.cat([g.reshape(-1) for g in grads]).float()


def adam_precondition(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                      betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> torch.Tensor:
    """LESS eq. 2, as in its `obtain_gradients_with_adam`: the Adam step the example would
    cause from this state, m' / sqrt(v' + eps), with eps inside the root and no bias correction."""
    m = betas[0] * exp_avg + (1 - betas[0]) * grad
    v = betas[1] * exp_avg_sq + (1 - betas[1]) * grad ** 2
    return m / torch.sqrt(v + eps)


# --- projection -----------------------------------------------------------------------------

def hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix (entries +-1), n a power of 2."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def fwht(x: torch.Tensor, block: int = 6) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of each row of x [b, n], n a power of 2.

    H_n = H_64 (x) H_64 (x) ... (Kronecker): view each row as a tensor with axes of size <= 64
    and multiply every axis by its small Hadamard matrix, ~3x faster on CPU than log2(n)
    butterfly passes."""
    b, n = x.shape
    m = n.bit_length() - 1
    sizes = [1 << min(block, m - i) for i in range(0, m, block)]
    x = x.reshape(b, *sizes)
    for axis, size in enumerate(sizes, start=1):
        x = torch.movedim(torch.tensordot(x, hadamard(size).to(x), dims=([axis], [1])), -1, axis)
    return x.reshape(b, n)


class SrhtProjector:
    """x -> sqrt(1/k) S H D x: random signs D, Hadamard H (entries +-1, padded to n = 2^m >= d),
    k rows S drawn without replacement. E<Px, Py> = <x, y>, with Johnson-Lindenstrauss error
    bounds like a dense Rademacher projection (Ailon & Chazelle 2009; Tropp 2011)."""

    def __init__(self, d: int, proj_dim: int, generator: torch.Generator):
        self.d = d
        self.n = 1 << max(d - 1, 0).bit_length()
        self.k = min(proj_dim, self.n)  # k = n: an exact isometry, no projection left to do
        self.signs = torch.randint(0, 2, (d,), generator=generator).float() * 2 - 1  # [d]
        self.rows = torch.randperm(self.n, generator=generator)[:self.k]  # [k]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [b, d] -> [b, k]
        padded = torch.zeros(x.shape[0], self.n, device=x.device)
        padded[:, :self.d] = x.float() * self.signs.to(x.device)
        return fwht(padded)[:, self.rows.to(x.device)] / math.sqrt(self.k)


def gradient_features(model, params: list[torch.Tensor], tok: Tokenized, index: Sequence[int],
                      project: SrhtProjector, adam: Checkpoint | None, desc: str) -> torch.Tensor:
    """[len(index), k] unit-norm projected gradients: Adam-preconditioned with `adam`'s state, else plain."""
    out, pending = [], []
    for i in tqdm(index, desc=desc, leave=False):
        g = flat_grad(model, params, tok.input_ids[i], tok.response_start[i])
        pending.append(adam_precondition(g, adam.exp_avg, adam.exp_avg_sq) if adam is not None else g)
        if len(pending) == PROJECT_EVERY:
            out.append(project(torch.stack(pending)))
            pending = []
    if pending:
        out.append(project(torch.stack(pending)))
    return F.normalize(torch.cat(out), dim=1).cpu()


# --- warm-up --------------------------------------------------------------------------------

def warm_up(model, params: list[torch.Tensor], tok: Tokenized, index: Sequence[int], p: LessParams,
            rng: np.random.Generator) -> tuple[list[Checkpoint], list[float]]:
    """LoRA training on the examples `index` of `tok` (LESS §4.1: AdamW, weight decay 0, linear
    decay after a warm-up); a checkpoint at the end of every epoch, and each epoch's mean loss.

    Each step averages the per-example response losses of its batch, as LESS does (batch 1 with
    gradient accumulation)."""
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    optimizer = torch.optim.AdamW(params, lr=p.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)
    n_steps = p.epochs * math.ceil(len(index) / p.batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(n_steps * p.warmup_ratio), n_steps)
    checkpoints, epoch_loss = [], []
    for _ in tqdm(range(p.epochs), desc="less warm-up", leave=False):
        order = rng.permutation(np.asarray(index))
        lrs, losses = [], []
        for lo in range(0, len(order), p.batch_size):
            batch = order[lo:lo + p.batch_size]
            optimizer.zero_grad(set_to_none=True)
            for i in batch:
                loss = response_loss(model, tok.input_ids[i], tok.response_start[i])
                (loss / len(batch)).backward()
                losses.append(loss.item())
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        state = [optimizer.state[q] for q in params]
        checkpoints.append(Checkpoint(
            lora=[q.detach().clone() for q in params],
            exp_avg=torch.cat([s["exp_avg"].reshape(-1) for s in state]).float(),
            exp_avg_sq=torch.cat([s["exp_avg_sq"].reshape(-1) for s in state]).float(),
            lr=float(np.mean(lrs))))
        epoch_loss.append(float(np.mean(losses)))
    return checkpoints, epoch_loss


def lora_copy(model, p: LessParams, seed: int):
    """A deep copy of `model` with a fresh LoRA adapter (dropout 0, seeded init) and its
    trainable tensors; the original is untouched, so other selectors can share it."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    config = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=0.0,
                        target_modules=list(p.target_modules))
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # peft draws lora_A from the global generator: fork it
        peft_model = get_peft_model(copy.deepcopy(model), config)
    peft_model.eval()  # every dropout is 0 (LoRA's by config): eval keeps the warm-up deterministic
    params = [q for _, q in peft_model.named_parameters() if q.requires_grad]
    return peft_model, params


# --- the selector ---------------------------------------------------------------------------

@register("less", LessParams)
class LessSelector:
    def __init__(self, params: LessParams):
        self.params = params
        self.info: dict = {}

    def score(self, pool: list[Record], ctx: ScoringContext) -> np.ndarray:
        p = self.params
        loaded = ctx.model()
        tok = tokenize_records(loaded.tokenizer, pool, ctx.max_len)
        scorable = [i for i in range(len(tok)) if tok.response_start[i] < len(tok.input_ids[i])]
        if len(scorable) < len(pool):
            log.warning("less: %d pool examples have no response token within max_len %d; they score NaN",
                        len(pool) - len(scorable), ctx.max_len)
        if not scorable:
            return np.full(len(pool), np.nan)
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

        model, params = lora_copy(loaded.model, p, int(ctx.rng(_SALT_LORA).integers(2**62)))
        d_lora = sum(q.numel() for q in params)
        t0 = time.perf_counter()
        checkpoints, warm_loss = warm_up(model, params, tok, warm, p, ctx.rng(_SALT_SHUFFLE))
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
        self.info = {"d_lora": d_lora, "proj_dim": project.k, "n_warmup": n_warm, "n_val": len(val),
                     "checkpoint_lr": lrs.tolist(), "checkpoint_weight": weights.tolist(),
                     "warmup_loss": warm_loss, "warmup_s": warm_s, "grads_s": grads_s,
                     "s_per_example_grad": grads_s / n_grads}
        log.info("less: %d checkpoints, d_lora %d -> %d, warm-up %.0f s, gradients %.0f s (%.2f s per example "
                 "per checkpoint)", len(checkpoints), d_lora, project.k, warm_s, grads_s, grads_s / n_grads)
        return scores
