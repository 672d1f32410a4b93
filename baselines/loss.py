"""loss: the scoring model's mean token loss on each example's response."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from igds.core.config import check
from igds.core.data import Record
from igds.core.registry import SelectorResult, register


@dataclass(frozen=True)
class LossParams:
    keep: str = "high"  # high: hardest examples first; low: easiest first

    def __post_init__(self) -> None:
        check(self.keep in ("high", "low"), "keep", self.keep, "high or low")


@register("loss", LossParams)
class LossSelector:
    needs = ("model",)
    shardable = True  # an example's score depends only on it and its batch (igds.core.scoring)

    def __init__(self, params: LossParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        from igds.core.loglik import answer_loglik  # noqa: PLC0415 (the model stack: only when scoring)

        loaded = ctx.model()
        tok = ctx.tokenized(pool)
        loss = -answer_loglik(loaded.model, tok, ctx.batch_size, loaded.tokenizer.pad_token_id)
        info = {"n_tokens": int(tok.n_tokens), "mean_loss": float(np.mean(loss)), "keep": self.params.keep}
        return SelectorResult(loss if self.params.keep == "high" else -loss, info)
