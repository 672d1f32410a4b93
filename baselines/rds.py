"""rds: RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning"), the
representation-based selector that study found beats most selectors, and random, as pools grow.

As the reference code does (hamishivi/automated-instruction-selection:
minimal_multitask/compute_influence_cosinesim.py with `--pooling weighted_mean`, then
get_top_influences.py with `--selection_method max`):

- an example's embedding is the model's last hidden state (after the final norm) over the
  whole example in chat format, averaged with weights that grow with position (SGPT's
  position-weighted mean: token i of the example weighs i + 1), then L2-normalised;
- each candidate's cosine similarity to each target example (the prior split: the task's
  solved examples);
- round-robin over the target examples: each in turn takes its most similar candidate not yet
  taken (a turn whose candidate was taken by another is spent, as in the reference), until
  every candidate is placed.

The round-robin order is returned as scores (n - position), so select_top at any ratio keeps
its prefix. The embeddings' cosine similarities are kept as extras (`max_sim`, `mean_sim`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from igds.core.config import check
from igds.core.data import Record
from igds.core.registry import SelectorResult, register
from igds.core.selection import scores_from_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RdsParams:
    weighting: str = "position"  # position: token i weighs i + 1 (RDS+); mean: equal weights (RDS)

    def __post_init__(self) -> None:
        check(self.weighting in ("position", "mean"), "weighting", self.weighting, "position (RDS+) or mean")


def round_robin(sims: np.ndarray) -> np.ndarray:
    """Candidates in the order the reference's round-robin takes them: `sims` [n_target, n_pool];
    each target in turn takes its most similar candidate, a turn on an already taken one is spent."""
    n_target, n_pool = sims.shape
    ranked = np.argsort(-sims, axis=1, kind="stable")
    taken = np.zeros(n_pool, dtype=bool)
    order: list[int] = []
    for depth in range(n_pool):
        for t in range(n_target):
            c = int(ranked[t, depth])
            if not taken[c]:
                taken[c] = True
                order.append(c)
        if len(order) == n_pool:
            break
    return np.asarray(order, dtype=np.int64)


def weighted_embeddings(loaded, tok, batch_size: int, weighting: str, desc: str) -> tuple[np.ndarray, int]:
    """[n, d] L2-normalised weighted means of the model's last hidden state (after its final norm)
    over each example's tokens (padding excluded), and the number of tokens pooled."""
    import torch  # noqa: PLC0415 (the model stack: only when scoring)
    from tqdm.auto import tqdm  # noqa: PLC0415

    from igds.core.tokens import iter_batches, n_batches  # noqa: PLC0415

    model = loaded.model
    device = next(model.parameters()).device
    out = np.zeros((len(tok), model.config.hidden_size), dtype=np.float32)
    n_tokens = 0
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, loaded.tokenizer.pad_token_id, "all", device), desc=desc,
                          total=n_batches(tok, batch_size), leave=False):
            hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                           use_cache=False).hidden_states[-1].float()  # [b, s, d], after the final norm
            mask = batch.attention_mask.float()
            weights = mask.cumsum(1) * mask if weighting == "position" else mask  # token i of an example: i + 1
            weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
            out[batch.index] = (hidden * weights[..., None]).sum(1).cpu().numpy()
            n_tokens += int(mask.sum())
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out, n_tokens


@register("rds", RdsParams)
class RdsSelector:
    needs = ("model", "target")

    def __init__(self, params: RdsParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        if not pool:
            return SelectorResult(np.empty(0))
        if not ctx.target:
            raise ValueError("rds needs the target task's examples (the prior split); it has none")
        loaded = ctx.model()
        cand, n_pool_tokens = weighted_embeddings(loaded, ctx.tokenized(pool), ctx.batch_size, self.params.weighting,
                                                  "rds pool")
        target, n_target_tokens = weighted_embeddings(loaded, ctx.tokenized(ctx.target), ctx.batch_size,
                                                      self.params.weighting, "rds target")
        sims = target @ cand.T  # [n_target, n_pool] cosine similarities
        order = round_robin(sims)
        log.info("rds: %d candidates ordered round-robin over %d target examples", len(pool), len(ctx.target))
        return SelectorResult(scores_from_order(order, len(pool)),
                              {"n_tokens": n_pool_tokens, "n_target_tokens": n_target_tokens,
                               "n_target": len(ctx.target)},
                              {"max_sim": sims.max(0), "mean_sim": sims.mean(0)})
