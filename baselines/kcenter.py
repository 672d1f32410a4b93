"""kcenter: k-center greedy on mean-pooled hidden states (Sener & Savarese 2018, "Active
Learning for Convolutional Neural Networks: A Core-Set Approach", Algorithm 1), a second
diversity baseline beside ZIP.

An example's embedding is the residual stream after decoder layer `layer`, averaged over
its tokens in chat format (prompt and response; position 0, an attention sink, and padding
excluded), optionally L2-normalised. The first center is drawn with the seeded rng; each
next one is the example farthest (Euclidean) from its nearest chosen center. The embeddings
are kept in scores/kcenter.parquet (columns h0..h{d-1}), so the select stage redraws the
first center for each training seed without the model.

The greedy order is returned as scores: score = n - position, so select_top at any ratio
keeps exactly the greedy prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from igds.core.config import ConfigError, check, fail
from igds.core.data import Record
from igds.core.diversity import kcenter_order
from igds.core.registry import SelectorResult, register
from igds.core.selection import scores_from_order

log = logging.getLogger(__name__)

_SALT = 0x4B43454E  # "KCEN": the first center's draw


@dataclass(frozen=True)
class KCenterParams:
    layer: int = -1  # decoder layer (0-based) whose output is pooled; negative counts from the end
    normalize: bool = True  # L2-normalise embeddings (distances then compare directions only)
    max_select: int | None = None  # stop the greedy here (None: order the whole pool)

    def __post_init__(self) -> None:
        check(self.max_select is None or self.max_select >= 1, "max_select", self.max_select,
              "a positive integer or null (the whole pool)")

    def check_model(self, n_layers: int, d_model: int) -> None:
        if not -n_layers <= self.layer < n_layers:
            fail("layer", self.layer, f"a decoder layer of the model: -{n_layers}..{n_layers - 1} (negative counts "
                 "from the end)")

    def resolved_layer(self, n_layers: int) -> int:
        return self.layer if self.layer >= 0 else n_layers + self.layer


@register("kcenter", KCenterParams)
class KCenterSelector:
    needs = ("model",)

    def __init__(self, params: KCenterParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        from igds.core.models.residual import decoder_layers  # noqa: PLC0415 (the model stack: only when scoring)
        from igds.core.pooling import mean_pooled_hidden  # noqa: PLC0415
        from igds.core.tokens import tokenize_records  # noqa: PLC0415

        if not pool:
            return SelectorResult(np.empty(0))
        loaded = ctx.model()
        n_layers = len(decoder_layers(loaded.model))
        layer = self.params.resolved_layer(n_layers)
        if not 0 <= layer < n_layers:
            raise ConfigError(f"params.yaml: methods.kcenter.layer = {self.params.layer} is outside the model's "
                              f"{n_layers} decoder layers (0..{n_layers - 1}, or -1..-{n_layers})")
        tok = tokenize_records(loaded.tokenizer, pool, ctx.max_len)
        emb, n_tokens = mean_pooled_hidden(loaded.model, tok, layer, ctx.batch_size, loaded.tokenizer.pad_token_id,
                                           desc="kcenter")
        if self.params.normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        first = int(ctx.rng(_SALT).integers(len(pool)))
        order = kcenter_order(emb, first, self.params.max_select)
        log.info("kcenter: ordered %d examples on layer %d embeddings", len(pool), layer)
        return SelectorResult(scores_from_order(order, len(pool)),
                              {"n_tokens": n_tokens, "layer": layer, "d_model": int(emb.shape[1])},
                              {f"h{j}": emb[:, j] for j in range(emb.shape[1])})

    def draw(self, frame, seed: int, run_seed: int) -> np.ndarray:
        """Training seed `run_seed`'s greedy order, from a first center drawn for it."""
        emb = frame[[f"h{j}" for j in range(sum(c.startswith("h") and c[1:].isdigit() for c in frame))]]
        emb = emb.to_numpy(dtype=np.float64)
        if len(emb) == 0:
            return np.empty(0)
        first = int(np.random.default_rng([seed, run_seed, _SALT]).integers(len(emb)))
        return scores_from_order(kcenter_order(emb, first, self.params.max_select), len(emb))
