"""The decoder's forward pass with the batch's common token prefix computed once.

Every example in a chat format begins with the same template tokens (SmolLM2's system prompt
and the user turn's marker: 24 of the default's ~56 tokens per example). In a causal decoder
the hidden states of a prefix depend only on the prefix, so they are the same in every row:
here the prefix runs once (batch 1), its keys and values are repeated over the batch, and the
rest of each row attends to them. Same hidden states as one full pass, up to float summation
order; gradients flow through the repeat into the shared prefix (the sum of every row's), as
they would through the rows' identical copies. The one difference is dropout (LoRA's): the
prefix positions draw one dropout mask for the whole batch instead of one per row.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every row shares."""
    if not rows:
        return 0
    first, n = rows[0], min(map(len, rows))
    for i in range(n):
        if any(row[i] != first[i] for row in rows):
            return i
    return n


def causal_lm(model):
    """The transformers causal LM inside `model` (a peft model wraps one)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(body) -> str:
    """The decoder's name for its key/value cache argument (transformers 5.x: `cache`, before: `past_key_values`)."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def last_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int = 0) -> torch.Tensor:
    """The decoder's last hidden states of right-padded `input_ids` [batch, seq], without the LM
    head: [batch, seq - prefix_len, d], the positions after the first `prefix_len` tokens,
    which every row must share (`common_prefix_len`) and which must be unpadded. With
    prefix_len 0 this is the plain forward pass over every position."""
    lm = causal_lm(model)
    body = lm.get_decoder()
    if prefix_len <= 0 or input_ids.shape[0] == 1:
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return hidden[:, max(prefix_len, 0):]
    from transformers import DynamicCache  # noqa: PLC0415

    if bool((input_ids[:, :prefix_len] != input_ids[:1, :prefix_len]).any()) or not bool(attention_mask[:, :prefix_len].all()):
        raise ValueError(f"the rows do not share their first {prefix_len} tokens")
    cache = DynamicCache(config=lm.config)
    name = _cache_kwarg(body)
    body(input_ids=input_ids[:1, :prefix_len], attention_mask=attention_mask[:1, :prefix_len], use_cache=True,
         **{name: cache})
    cache.batch_repeat_interleave(input_ids.shape[0])
    positions = torch.arange(prefix_len, input_ids.shape[1], device=input_ids.device)[None]
    return body(input_ids=input_ids[:, prefix_len:], attention_mask=attention_mask, position_ids=positions,
                use_cache=True, **{name: cache}).last_hidden_state
