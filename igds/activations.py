"""From records to residual-stream activations and pooled SAE feature activations.

Shared by the SAE stage (token activations to train on), identification (feature
frequencies on the prior and general sets) and Feature-Resonant scoring. Examples are
tokenised once in the model's chat format, sorted by length so that padding is minimal,
and the forward pass stops after layer L.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from igds.data import Record
from igds.models import run_to_layer
from igds.sae import encode_columns

log = logging.getLogger(__name__)

SCOPES = ("response", "all")


@dataclass(frozen=True)
class Tokenized:
    """Token ids of each example in chat format, and where its response starts."""

    input_ids: list[list[int]]
    response_start: list[int]  # index of the first response token; len(ids) if truncated away

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


def tokenize_records(tokenizer, records: Sequence[Record], max_len: int) -> Tokenized:
    """Tokenise prompt and response separately (so the boundary is exact), truncate to max_len."""
    ids, starts = [], []
    for record in records:
        prompt, response = chat_parts(tokenizer, record)
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        r = tokenizer(response, add_special_tokens=False).input_ids
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
            p = [tokenizer.bos_token_id, *p]
        full = (p + r)[:max_len]
        ids.append(full)
        starts.append(min(len(p), len(full)))
    return Tokenized(ids, starts)


@dataclass(frozen=True)
class Batch:
    index: np.ndarray  # positions of these examples in the Tokenized input
    input_ids: torch.Tensor  # [batch, seq], right-padded
    attention_mask: torch.Tensor  # [batch, seq]
    scope_mask: torch.Tensor  # [batch, seq] bool: tokens whose activations count


def iter_batches(tok: Tokenized, batch_size: int, pad_id: int, scope: str,
                 device: str | torch.device = "cpu") -> Iterator[Batch]:
    """Length-sorted, right-padded batches. Position 0 (an attention sink with a huge
    residual norm in most models) never counts; `scope='response'` keeps only answer tokens."""
    if scope not in SCOPES:
        raise ValueError(f"scope '{scope}' is not one of {SCOPES}")
    order = np.argsort([len(x) for x in tok.input_ids], kind="stable")
    for lo in range(0, len(order), batch_size):
        index = order[lo:lo + batch_size]
        seq = max(len(tok.input_ids[i]) for i in index)
        input_ids = torch.full((len(index), seq), pad_id, dtype=torch.long)
        attention = torch.zeros((len(index), seq), dtype=torch.long)
        scope_mask = torch.zeros((len(index), seq), dtype=torch.bool)
        for row, i in enumerate(index):
            n = len(tok.input_ids[i])
            input_ids[row, :n] = torch.tensor(tok.input_ids[i])
            attention[row, :n] = 1
            start = tok.response_start[i] if scope == "response" else 1
            scope_mask[row, max(start, 1):n] = True
        yield Batch(index, input_ids.to(device), attention.to(device), scope_mask.to(device))


def collect_token_activations(model, tok: Tokenized, layer: int, batch_size: int, pad_id: int,
                              max_tokens: int | None = None, scope: str = "all",
                              desc: str = "activations") -> torch.Tensor:
    """Residual activations after `layer` of every in-scope token: [n_tokens, d_model] float32, on CPU."""
    chunks, n = [], 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, pad_id, scope, device), desc=desc,
                          total=-(-len(tok) // batch_size), leave=False):
            resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer)  # [b, s, d]
            chunks.append(resid[batch.scope_mask].float().cpu())
            n += chunks[-1].shape[0]
            if max_tokens is not None and n >= max_tokens:
                break
    acts = torch.cat(chunks) if chunks else torch.empty(0, model.config.hidden_size)
    return acts[:max_tokens] if max_tokens is not None else acts


@dataclass
class FeatureActivations:
    """Per-example pooled SAE activations over in-scope tokens, plus per-feature totals."""

    max_act: torch.Tensor  # [n_examples, d_sae] max over tokens
    mean_act: torch.Tensor  # [n_examples, d_sae] mean over tokens
    n_tokens: np.ndarray  # [n_examples] in-scope tokens
    active_sum: torch.Tensor  # [d_sae] sum of activations over tokens where the feature fires
    active_count: torch.Tensor  # [d_sae] number of tokens where it fires

    @property
    def fired(self) -> torch.Tensor:  # [n_examples, d_sae] bool
        return self.max_act > 0

    @property
    def mean_when_active(self) -> torch.Tensor:  # [d_sae]
        return self.active_sum / self.active_count.clamp(min=1)


def pooled_feature_activations(model, sae, tok: Tokenized, layer: int, batch_size: int, pad_id: int,
                               scope: str, features: Sequence[int] | None = None,
                               desc: str = "encoding") -> FeatureActivations:
    """Encode every in-scope token with the SAE and pool per example (stops after `layer`).

    With `features` given, only those columns are kept and computed (`encode_columns`: the
    full-width encode runs only on tokens where a chosen feature's pre-activation is
    positive): memory is n_examples x len(features).
    """
    n = len(tok)
    device = next(model.parameters()).device
    cols = torch.as_tensor(list(features), dtype=torch.long) if features is not None else None
    width = len(cols) if cols is not None else sae.cfg.d_sae
    max_act = torch.zeros(n, width)
    sum_act = torch.zeros(n, width)
    n_tokens = np.zeros(n, dtype=np.int64)
    active_sum = torch.zeros(width)
    active_count = torch.zeros(width)
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, pad_id, scope, device), desc=desc,
                          total=-(-n // batch_size), leave=False):
            resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer)  # [b, s, d]
            rows = batch.scope_mask.nonzero()[:, 0].cpu()  # example row of each in-scope token
            x = resid[batch.scope_mask].to(sae.W_enc.dtype)
            acts = (sae.encode(x) if cols is None else encode_columns(sae, x, cols.to(x.device))).float().cpu()
            b = len(batch.index)
            bmax = torch.zeros(b, width).scatter_reduce_(0, rows[:, None].expand_as(acts), acts, "amax")
            bsum = torch.zeros(b, width).index_add_(0, rows, acts)
            counts = torch.bincount(rows, minlength=b)
            idx = torch.as_tensor(batch.index)
            max_act[idx] = bmax
            sum_act[idx] = bsum
            n_tokens[batch.index] = counts.numpy()
            active_sum += acts.sum(0)
            active_count += (acts > 0).sum(0)
    mean_act = sum_act / torch.as_tensor(n_tokens).clamp(min=1)[:, None].float()
    return FeatureActivations(max_act, mean_act, n_tokens, active_sum, active_count)
