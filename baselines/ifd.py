"""IFD (Instruction-Following Difficulty, Li et al. 2023 "From Quantity to Quality"):
loss(response | instruction) / loss(response alone). IFD >= 1 means the instruction does
not help predict the response: those examples are dropped (score NaN, ranked last); the
rest are kept highest IFD first.

As the authors' chat-model scoring does (tianyi-lab/Cherry_LLM, cherry_seletion/
data_analysis_vic.py and data_by_IFD_vic.py: 'ASSISTANT:' + output alone, the whole prompt +
output conditioned, each loss the mean over the output's own tokens), with this model's
chat template: the conditioned text is the example in chat format, the response alone is the
template's assistant header followed by the response, and both losses are means over the
response's own tokens (its text: not the template's end-of-turn marker, which the reference's
template does not have). tests/test_baselines.py checks the scores against a transcription
of the reference's steps."""

from __future__ import annotations

import numpy as np

from igds.core.data import Record
from igds.core.registry import SelectorResult, register


def assistant_header(tokenizer) -> str:
    """What the chat template writes to open the assistant's turn ('<|im_start|>assistant\\n' for
    ChatML; the reference's 'ASSISTANT:'), or '' without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    user = [{"role": "user", "content": "x"}]
    opened = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    closed = tokenizer.apply_chat_template(user, add_generation_prompt=False, tokenize=False)
    if not opened.startswith(closed):
        raise ValueError("the chat template's generation prompt does not extend the conversation; "
                         "cannot find the assistant header")
    return opened[len(closed):]


def response_alone(tokenizer, records: list[Record], max_len: int):
    """Each response after the assistant header alone (no system prompt, no user turn), with a
    BOS token where the tokenizer adds one (else, without a template, a single start token);
    the response's own text is its content span, the tokens IFD's losses average over."""
    from igds.core.tokens import Tokenized, _span_tokens, chat_parts, with_bos  # noqa: PLC0415

    header = assistant_header(tokenizer)
    prefix, _ = with_bos(tokenizer, tokenizer(header, add_special_tokens=False).input_ids if header else [])
    if not prefix:
        bos = tokenizer.bos_token_id
        prefix = [bos if bos is not None else tokenizer.eos_token_id]
    ids, starts, content = [], [], []
    for record in records:
        _, response = chat_parts(tokenizer, record)
        r = tokenizer(response, add_special_tokens=False).input_ids
        c, d = _span_tokens(tokenizer, response, record.output, r)
        full = (prefix + r)[:max_len]
        ids.append(full)
        starts.append(min(len(prefix), len(full)))
        content.append(((min(len(prefix) + c, len(full)), min(len(prefix) + d, len(full))),))
    return Tokenized(ids, starts, content)


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
        scope = "response_content"  # the response's own tokens, as the reference averages
        loss_conditioned = -answer_loglik(loaded.model, conditioned, ctx.batch_size, pad, scope=scope)
        loss_alone = -answer_loglik(loaded.model, alone, ctx.batch_size, pad, scope=scope)
        ifd = loss_conditioned / np.maximum(loss_alone, 1e-8)
        info = {"n_tokens": int(conditioned.n_tokens + alone.n_tokens),
                "n_dropped_ifd_ge_1": int((ifd >= 1).sum()), "mean_ifd": float(np.mean(ifd))}
        return SelectorResult(np.where(ifd < 1, ifd, np.nan), info)
