"""Per-example pooling of what the model computes: SAE feature activations pooled over an
example's tokens (identification, the Feature-Resonant Score, feature amplification), the
residual activations of every token (SAE training data) and mean-pooled hidden states
(k-center). The forward pass stops after the layer that is read (`run_to_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from igds.core.config import POOLING
from igds.core.models.residual import run_to_layer
from igds.core.tokens import Tokenized, iter_batches, n_batches


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

    def columns(self, positions: Sequence[int]) -> FeatureActivations:
        """These activations restricted to the columns at `positions` (in that order)."""
        j = torch.as_tensor(list(positions), dtype=torch.long)
        return FeatureActivations(self.max_act[:, j], self.mean_act[:, j], self.n_tokens, self.active_sum[j],
                                  self.active_count[j])

    def pooled(self, pooling: str) -> torch.Tensor:
        """[n_examples, d_sae] the max or the mean over each example's tokens."""
        if pooling not in POOLING:
            raise ValueError(f"pooling '{pooling}' is not one of {POOLING}")
        return self.max_act if pooling == "max" else self.mean_act


def pooled_feature_activations(model, sae, tok: Tokenized, layer: int, batch_size: int, pad_id: int,
                               scope: str, features: Sequence[int] | None = None,
                               desc: str = "encoding") -> FeatureActivations:
    """Encode every in-scope token with the SAE and pool per example (stops after `layer`).

    With `features` given, only those columns are kept and computed (`encode_columns`: the
    full-width encode runs only on tokens where a chosen feature's pre-activation is
    positive): memory is n_examples x len(features).
    """
    from igds.core.sae import encode_columns  # noqa: PLC0415 (sae-lens: only where an SAE is used)

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
                          total=n_batches(tok, batch_size), leave=False):
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


def collect_token_activations(model, tok: Tokenized, layer: int, batch_size: int, pad_id: int,
                              max_tokens: int | None = None, scope: str = "all",
                              desc: str = "activations") -> torch.Tensor:
    """Residual activations after `layer` of every in-scope token: [n_tokens, d_model] float32, on CPU."""
    chunks, n = [], 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, pad_id, scope, device), desc=desc,
                          total=n_batches(tok, batch_size), leave=False):
            resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer)  # [b, s, d]
            chunks.append(resid[batch.scope_mask].float().cpu())
            n += chunks[-1].shape[0]
            if max_tokens is not None and n >= max_tokens:
                break
    acts = torch.cat(chunks) if chunks else torch.empty(0, model.config.hidden_size)
    return acts[:max_tokens] if max_tokens is not None else acts


def mean_pooled_hidden(model, tok: Tokenized, layer: int, batch_size: int, pad_id: int,
                       desc: str = "hidden states") -> tuple[np.ndarray, int]:
    """[n_examples, d_model] float32 mean over each example's tokens (position 0 and padding
    excluded) of the residual after `layer`; and the number of tokens pooled."""
    device = next(model.parameters()).device
    out = np.zeros((len(tok), model.config.hidden_size), dtype=np.float32)
    n_tokens = 0
    with torch.inference_mode():
        for batch in tqdm(iter_batches(tok, batch_size, pad_id, "all", device), desc=desc,
                          total=n_batches(tok, batch_size), leave=False):
            resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer).float()  # [b, s, d]
            mask = batch.scope_mask[..., None].float()  # [b, s, 1]
            count = mask.sum(1)  # [b, 1]
            out[batch.index] = ((resid * mask).sum(1) / count.clamp(min=1)).cpu().numpy()
            n_tokens += int(count.sum())
    return out, n_tokens
