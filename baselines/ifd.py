"""IFD (Instruction-Following Difficulty, Li et al. 2023 "From Quantity to Quality"):
loss(response | instruction) / loss(response alone). IFD >= 1 means the instruction does
not help predict the response: those examples are dropped (score NaN, ranked last); the
rest are kept highest IFD first."""

from __future__ import annotations

import numpy as np

from igds.core.data import Record
from igds.core.registry import SelectorResult, register


def response_alone(tokenizer, records: list[Record], max_len: int):
    """The response tokens (as in the chat format) after a single start token, all scored."""
    from igds.core.tokens import Tokenized, chat_parts  # noqa: PLC0415

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = []
    for record in records:
        _, response = chat_parts(tokenizer, record)
        ids.append(([start] + tokenizer(response, add_special_tokens=False).input_ids)[:max_len])
    return Tokenized(ids, [1] * len(ids))


@register("ifd")
class IfdSelector:
    needs = ("model",)

    def __init__(self, params):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        from igds.core.loglik import answer_loglik  # noqa: PLC0415 (the model stack: only when scoring)
        from igds.core.tokens import tokenize_records  # noqa: PLC0415

        loaded = ctx.model()
        pad = loaded.tokenizer.pad_token_id
        conditioned = tokenize_records(loaded.tokenizer, pool, ctx.max_len)
        alone = response_alone(loaded.tokenizer, pool, ctx.max_len)
        loss_conditioned = -answer_loglik(loaded.model, conditioned, ctx.batch_size, pad)
        loss_alone = -answer_loglik(loaded.model, alone, ctx.batch_size, pad)
        ifd = loss_conditioned / np.maximum(loss_alone, 1e-8)
        info = {"n_tokens": int(conditioned.n_tokens + alone.n_tokens),
                "n_dropped_ifd_ge_1": int((ifd >= 1).sum()), "mean_ifd": float(np.mean(ifd))}
        return SelectorResult(np.where(ifd < 1, ifd, np.nan), info)
