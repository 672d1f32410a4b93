"""Per-example gradient features for LESS (Xia et al. 2024; reference code princeton-nlp/LESS):
a LoRA warm-up that keeps Adam's state per epoch, per-example LoRA gradients of the
response loss, Adam preconditioning (LESS eq. 2), and a fast Johnson-Lindenstrauss
projection. The selector itself (which examples, which checkpoints, the cosine score) is
baselines/less.py.

Per-example gradients: one forward + backward per example and torch.autograd.grad over the
list of LoRA tensors. torch.func.vmap over a right-padded batch gives the same gradients but
was ~2x slower on CPU (padding, LM head on every position, no batching rule for SDPA).

Projection: a subsampled randomized Hadamard transform (a fast Johnson-Lindenstrauss
transform) instead of LESS's dense Rademacher matrix, which for ~1M LoRA parameters x 8192
would be ~30 GB or regenerated for every batch; SRHT costs O(d log d) per gradient
(~20 ms for d ~ 1M on this CPU).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from igds.core.lora import add_lora, linear_schedule
from igds.core.tokens import Tokenized

ADAM_BETAS = (0.9, 0.999)  # AdamW's defaults, hard-coded in LESS's obtain_gradients_with_adam
ADAM_EPS = 1e-8
PROJECT_EVERY = 16  # gradients projected together (LESS: project_interval 16)



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

def warm_up(model, params: list[torch.Tensor], tok: Tokenized, index: Sequence[int], *, lr: float, epochs: int,
            batch_size: int, warmup_ratio: float, rng: np.random.Generator) -> tuple[list[Checkpoint], list[float]]:
    """LoRA training on the examples `index` of `tok` (LESS §4.1: AdamW, weight decay 0, linear
    decay after a warm-up); a checkpoint at the end of every epoch, and each epoch's mean loss.

    Each step averages the per-example response losses of its batch, as LESS does (batch 1 with
    gradient accumulation)."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)
    n_steps = epochs * math.ceil(len(index) / batch_size)
    schedule = linear_schedule(optimizer, n_steps, warmup_ratio)
    checkpoints, epoch_loss = [], []
    for _ in tqdm(range(epochs), desc="less warm-up", leave=False):
        order = rng.permutation(np.asarray(index))
        lrs, losses = [], []
        for lo in range(0, len(order), batch_size):
            batch = order[lo:lo + batch_size]
            optimizer.zero_grad(set_to_none=True)
            for i in batch:
                loss = response_loss(model, tok.input_ids[i], tok.response_start[i])
                (loss / len(batch)).backward()
                losses.append(loss.item())
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            torch.clear_autocast_cache()  # under model.autocast: the next forward casts the updated weights afresh
            schedule.step()
        state = [optimizer.state[q] for q in params]
        checkpoints.append(Checkpoint(
            lora=[q.detach().clone() for q in params],
            exp_avg=torch.cat([s["exp_avg"].reshape(-1) for s in state]).float(),
            exp_avg_sq=torch.cat([s["exp_avg_sq"].reshape(-1) for s in state]).float(),
            lr=float(np.mean(lrs))))
        epoch_loss.append(float(np.mean(losses)))
    return checkpoints, epoch_loss


def lora_copy(model, *, r: int, alpha: float, target_modules: Sequence[str], seed: int):
    """A deep copy of `model` with a fresh LoRA adapter (dropout 0, seeded init) and its
    trainable tensors; the original is untouched, so other selectors can share it."""
    peft_model, params = add_lora(copy.deepcopy(model), r=r, alpha=alpha, dropout=0.0,
                                  target_modules=target_modules, seed=seed)
    peft_model.eval()  # every dropout is 0 (LoRA's by config): eval keeps the warm-up deterministic
    return peft_model, params
