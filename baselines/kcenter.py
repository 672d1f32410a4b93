"""kcenter: k-center greedy on mean-pooled hidden states (Sener & Savarese 2018, "Active
Learning for Convolutional Neural Networks: A Core-Set Approach", Algorithm 1), a second
diversity baseline beside ZIP.

An example's embedding is the residual stream after decoder layer `layer`, averaged over
its tokens in chat format (prompt and response; position 0, an attention sink, and padding
excluded), optionally L2-normalised. The first center is drawn with the seeded rng; each
next one is the example farthest (Euclidean) from its nearest chosen center.

The greedy order is returned as scores: score = n - position, so select_top at any ratio
keeps exactly the greedy prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from igds.activations import iter_batches, tokenize_records
from igds.config import ConfigError, _check
from igds.data import Record
from igds.models import decoder_layers, run_to_layer
from igds.selection import ScoringContext, register, scores_from_order

log = logging.getLogger(__name__)

_SALT = 0x4B43454E  # "KCEN": the first center's draw


@dataclass(frozen=True)
class KCenterParams:
    layer: int = -1  # decoder layer (0-based) whose output is pooled; negative counts from the end
    normalize: bool = True  # L2-normalise embeddings (distances then compare directions only)
    max_select: int | None = None  # stop the greedy here (None: order the whole pool)

    def __post_init__(self) -> None:
        _check(self.max_select is None or self.max_select >= 1, "max_select", self.max_select,
               "a positive integer or null (the whole pool)")


def mean_pooled_embeddings(model, tokenizer, records: Sequence[Record], layer: int, batch_size: int,
                           max_len: int) -> tuple[np.ndarray, int]:
    """[n_examples, d_model] float32 mean over each example's tokens (position 0 and padding
    excluded) of the residual after `layer`; and the number of tokens pooled."""
    tok = tokenize_records(tokenizer, records, max_len)
    device = next(model.parameters()).device
    out = np.zeros((len(tok), model.config.hidden_size), dtype=np.float32)
    n_tokens = 0
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, tokenizer.pad_token_id, "all", device), desc="kcenter",
                          total=-(-len(tok) // batch_size), leave=False):
            resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer).float()  # [b, s, d]
            mask = batch.scope_mask[..., None].float()  # [b, s, 1]
            count = mask.sum(1)  # [b, 1]
            out[batch.index] = ((resid * mask).sum(1) / count.clamp(min=1)).cpu().numpy()
            n_tokens += int(count.sum())
    return out, n_tokens


def kcenter_order(x: np.ndarray, first: int, max_select: int | None = None) -> np.ndarray:
    """k-center greedy order over the rows of x [n, d]: a permutation of range(n) whose first
    min(max_select, n) entries are the centers in the order chosen; the rest follow by
    descending distance to their nearest center. Ties go to the lowest index.

    A running min-distance vector keeps this O(n * m * d) time and O(n) extra memory.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    m = n if max_select is None else min(max_select, n)
    min_sq_dist = np.full(n, np.inf)  # squared distance to the nearest chosen center
    order = np.empty(n, dtype=np.int64)
    center = first
    for pos in range(m):
        order[pos] = center
        np.minimum(min_sq_dist, ((x - x[center]) ** 2).sum(1), out=min_sq_dist)
        min_sq_dist[center] = -np.inf  # a center never comes back (min keeps it at -inf)
        center = int(np.argmax(min_sq_dist))
    rest = np.flatnonzero(min_sq_dist > -np.inf) if m < n else np.empty(0, dtype=np.int64)
    order[m:] = rest[np.argsort(-min_sq_dist[rest], kind="stable")]
    return order


@register("kcenter", KCenterParams)
class KCenterSelector:
    def __init__(self, params: KCenterParams):
        self.params = params
        self.info: dict = {}

    def score(self, pool: list[Record], ctx: ScoringContext) -> np.ndarray:
        if not pool:
            return np.empty(0)
        loaded = ctx.model()
        n_layers = len(decoder_layers(loaded.model))
        layer = self.params.layer if self.params.layer >= 0 else n_layers + self.params.layer
        if not 0 <= layer < n_layers:
            raise ConfigError(f"params.yaml: methods.kcenter.layer = {self.params.layer} is outside the model's "
                             f"{n_layers} decoder layers (0..{n_layers - 1}, or -1..-{n_layers})")
        emb, n_tokens = mean_pooled_embeddings(loaded.model, loaded.tokenizer, pool, layer, ctx.batch_size,
                                               ctx.max_len)
        if self.params.normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        first = int(ctx.rng(_SALT).integers(len(pool)))
        order = kcenter_order(emb, first, self.params.max_select)
        self.info = {"n_tokens": n_tokens, "layer": layer, "d_model": int(emb.shape[1])}
        log.info("kcenter: ordered %d examples on layer %d embeddings", len(pool), layer)
        return scores_from_order(order, len(pool))
