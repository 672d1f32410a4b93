"""Records to token ids in the model's chat format, and token ids to padded batches.

Shared by every model-based step (SAE caching, identification, scoring, fine-tuning,
LESS). An example is tokenised once, prompt and response separately so the boundary is
exact; batches are right-padded, and `collate` is the one place that pads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from igds.core.config import SCOPES
from igds.core.data import Record

IGNORE = -100  # label of tokens that carry no loss (prompt and padding)


@dataclass(frozen=True)
class Tokenized:
    """Token ids of each example in chat format, and where its response starts."""

    input_ids: list[list[int]]
    response_start: list[int]  # index of the first response token; len(ids) if truncated away
    # token ranges [start, end) of the record's own text (the user's prompt and the response),
    # without the chat template's system prompt and role markers; None: not computed
    content: list[tuple[tuple[int, int], ...]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_tokens(self) -> int:
        return sum(map(len, self.input_ids))


def chat_parts(tokenizer, record: Record) -> tuple[str, str]:
    """(prompt text up to the assistant turn, response text) in the tokenizer's chat format."""
    user = [{"role": "user", "content": record.prompt}]
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": record.output}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not extend the prompt with the answer; cannot locate the response")
        return prompt, full[len(prompt):]
    return f"{record.prompt}\n\n", f"{record.output}{tokenizer.eos_token or ''}"


def _span_tokens(tokenizer, text: str, part: str, ids: list[int]) -> tuple[int, int]:
    """[start, end) of the tokens of `ids` (= `text` encoded) that overlap `part`'s characters
    in `text` (its last occurrence: the system prompt comes first)."""
    lo = text.rfind(part) if part else -1
    if lo < 0:
        return (0, 0)
    hi = lo + len(part)
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        inside = [i for i, (a, b) in enumerate(offsets) if a < hi and b > lo]
        return (inside[0], inside[-1] + 1) if inside else (0, 0)
    # slow tokenizers have no offsets: count the tokens of the text before and through `part`
    start = len(tokenizer(text[:lo], add_special_tokens=False).input_ids)
    return (min(start, len(ids)), min(len(tokenizer(text[:hi], add_special_tokens=False).input_ids), len(ids)))


def with_bos(tokenizer, ids: list[int]) -> tuple[list[int], int]:
    """`ids` with a BOS token first when the tokenizer asks for one and they do not already begin
    with it (Gemma's chat template writes it: never two); and how many tokens were added (0 or 1)."""
    bos = tokenizer.bos_token_id
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and ids[:1] != [bos]:
        return [bos, *ids], 1
    return ids, 0


def tokenize_records(tokenizer, records: Sequence[Record], max_len: int) -> Tokenized:
    """Tokenise prompt and response separately (so the boundary is exact), truncate to max_len.

    A BOS token is added only when the tokenizer asks for one and the rendered chat text does
    not already begin with it (Gemma's template writes it: never two). `content` marks the
    record's own text, so a scope can leave the template's tokens out."""
    ids, starts, content = [], [], []
    for record in records:
        prompt, response = chat_parts(tokenizer, record)
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        r = tokenizer(response, add_special_tokens=False).input_ids
        p, offset = with_bos(tokenizer, p)
        full = (p + r)[:max_len]
        a, b = _span_tokens(tokenizer, prompt, record.prompt, p[offset:])
        c, d = _span_tokens(tokenizer, response, record.output, r)
        spans = ((a + offset, b + offset), (len(p) + c, len(p) + d))
        ids.append(full)
        starts.append(min(len(p), len(full)))
        content.append(tuple((min(x, len(full)), min(y, len(full))) for x, y in spans if y > x))
    return Tokenized(ids, starts, content)


def tokenize_plain(tokenizer, records: Sequence[Record], max_len: int) -> Tokenized:
    """Records as plain text, no chat template: the prompt, a newline, the response (the SAE's own
    text, data.splits.sae: an SAE trained on the template's tokens spends its latents on them).
    A BOS token as tokenize_records adds it; the response starts after the newline; the
    content is the whole text."""
    ids, starts, content = [], [], []
    for record in records:
        p = tokenizer(f"{record.prompt}\n", add_special_tokens=False).input_ids
        r = tokenizer(record.output, add_special_tokens=False).input_ids
        p, offset = with_bos(tokenizer, p)
        full = (p + r)[:max_len]
        ids.append(full)
        starts.append(min(len(p), len(full)))
        content.append(((offset, len(full)),) if len(full) > offset else ())
    return Tokenized(ids, starts, content)


@dataclass(frozen=True)
class Batch:
    index: np.ndarray  # positions of these examples in the Tokenized input
    input_ids: torch.Tensor  # [batch, seq], right-padded
    attention_mask: torch.Tensor  # [batch, seq]
    scope_mask: torch.Tensor  # [batch, seq] bool: tokens whose activations (or losses) count

    def labels(self) -> torch.Tensor:
        """[batch, seq] causal-LM labels: the token ids in scope, IGNORE elsewhere."""
        return self.input_ids.masked_fill(~self.scope_mask, IGNORE)


def collate(tok: Tokenized, index: Sequence[int], pad_id: int, scope: str,
            device: str | torch.device = "cpu") -> Batch:
    """The examples `index` of `tok`, right-padded. Position 0 (an attention sink with a huge
    residual norm in most models, and never a predicted token) is never in scope;
    `scope='response'` keeps only answer tokens (the template's end-of-turn marker included),
    `'response_content'` the response's own text (no template tokens), `'content'` the record's
    own text (prompt and response, without the chat template's system prompt and role markers)."""
    if scope not in SCOPES:
        raise ValueError(f"scope '{scope}' is not one of {SCOPES}")
    if scope in ("content", "response_content") and tok.content is None:
        raise ValueError(f"scope '{scope}' needs the content spans tokenize_records computes")
    index = np.asarray(index)
    seq = max(len(tok.input_ids[i]) for i in index)
    input_ids = torch.full((len(index), seq), pad_id, dtype=torch.long)
    attention = torch.zeros((len(index), seq), dtype=torch.long)
    scope_mask = torch.zeros((len(index), seq), dtype=torch.bool)
    for row, i in enumerate(index):
        n = len(tok.input_ids[i])
        input_ids[row, :n] = torch.tensor(tok.input_ids[i])
        attention[row, :n] = 1
        if scope in ("content", "response_content"):
            first = tok.response_start[i] if scope == "response_content" else 1
            for lo, hi in tok.content[i]:
                scope_mask[row, max(lo, first, 1):hi] = True
        else:
            start = tok.response_start[i] if scope == "response" else 1
            scope_mask[row, max(start, 1):n] = True
    return Batch(index, input_ids.to(device), attention.to(device), scope_mask.to(device))


def length_order(tok: Tokenized) -> np.ndarray:
    """Example positions sorted by token length (stable): the order `iter_batches` visits."""
    return np.argsort([len(x) for x in tok.input_ids], kind="stable")


def iter_batches(tok: Tokenized, batch_size: int, pad_id: int, scope: str,
                 device: str | torch.device = "cpu") -> Iterator[Batch]:
    """Length-sorted, right-padded batches of `tok` (little padding)."""
    if scope not in SCOPES:
        raise ValueError(f"scope '{scope}' is not one of {SCOPES}")
    order = length_order(tok)
    for lo in range(0, len(order), batch_size):
        yield collate(tok, order[lo:lo + batch_size], pad_id, scope, device)


def n_batches(tok: Tokenized, batch_size: int) -> int:
    return -(-len(tok) // batch_size)
