"""Log-likelihood of each example's response under a model: the primitive of the Loss and
IFD baselines and of interventional filtering's task metric (IGDS step 2)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from igds.core.models.residual import add_to_residual, capture_residual, resume_after_layer
from igds.core.tokens import Batch, Tokenized, iter_batches

log = logging.getLogger(__name__)

# the resumed pass must match the full one on the first batch (nats per token, float32)
_EXACT_TOL = 1e-4


def token_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token, and whether it is the greedy one, from the hidden
    states that predict it ([n, d] -> [n], [n]): only these rows go through the LM head, with
    the model's final logit softcap (Gemma) if it has one; float32."""
    logits = model.get_output_embeddings()(hidden).float()  # [n, vocab]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    logp = torch.log_softmax(logits, -1)
    return logp.gather(1, targets[:, None])[:, 0], logp.argmax(-1) == targets


def _response_loglik(model, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
    """Mean log-likelihood per response token of each row, from the last hidden states [b, s, d].
    Only the response positions go through the LM head."""
    # token t is predicted from position t - 1
    rows, pos = batch.scope_mask[:, 1:].nonzero(as_tuple=True)
    logp, _ = token_logprobs(model, hidden[:, :-1][rows, pos], batch.input_ids[:, 1:][rows, pos])
    per_row = torch.zeros(len(batch.index), device=logp.device).index_add_(0, rows, logp)
    counts = torch.bincount(rows, minlength=len(batch.index)).clamp(min=1)
    return per_row / counts


def _last_hidden(model, batch: Batch) -> torch.Tensor:
    return model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            use_cache=False).last_hidden_state


def answer_loglik(model, tok: Tokenized, batch_size: int, pad_id: int,
                  steer: tuple[int, torch.Tensor] | None = None, scope: str = "response",
                  total: bool = False) -> np.ndarray:
    """Mean log-likelihood per response token of each example: [n_examples] (`total`: the sum
    over the tokens); `scope` picks the tokens (response_content: without the end-of-turn marker).

    `steer = (layer, vector)` adds the vector to the residual after `layer` on every token.
    """
    out = np.zeros(len(tok))
    device = next(model.parameters()).device
    with torch.inference_mode(), tqdm(total=len(tok), desc="log-likelihood", unit="ex", leave=False) as bar:
        for batch in iter_batches(tok, batch_size, pad_id, scope, device):
            steering = add_to_residual(model, steer[0], steer[1].to(device)) if steer else contextlib.nullcontext()
            with steering:
                hidden = _last_hidden(model, batch)
            mean = _response_loglik(model, batch, hidden)
            if total:
                mean = mean * batch.scope_mask[:, 1:].sum(dim=1).clamp(min=1)
            out[batch.index] = mean.cpu().numpy()
            bar.update(len(batch.index))
    return out


def steered_logliks(model, tok: Tokenized, batch_size: int, pad_id: int, layer: int,
                    vectors: Sequence[torch.Tensor], progress=None) -> tuple[np.ndarray, np.ndarray]:
    """answer_loglik unsteered and with each vector added after `layer`: ([n], [n_vectors, n]).

    Per batch, the unsteered pass runs once and keeps layer `layer`'s output; each variant runs only the layers after it, from the
    cached residual plus the vector (`resume_after_layer`). The same values as one
    `answer_loglik(steer=(layer, v))` per vector, checked on the first batch against the full
    pass (a model this cannot resume exactly falls back to full passes, with a warning).
    `progress(n)` is called after each variant of each batch (a tqdm's update).
    """
    device = next(model.parameters()).device
    base, steered = np.zeros(len(tok)), np.zeros((len(vectors), len(tok)))
    exact = None
    with torch.inference_mode():
        for batch in iter_batches(tok, batch_size, pad_id, "response", device):
            with capture_residual(model, layer) as captured:  # the unsteered pass leaves layer L's output
                full = _response_loglik(model, batch, _last_hidden(model, batch))
            resid = captured["resid"]
            base[batch.index] = full.cpu().numpy()
            if exact is None:
                with resume_after_layer(model, layer, resid):
                    resumed = _response_loglik(model, batch, _last_hidden(model, batch))
                gap = float((resumed - full).abs().max())
                exact = gap <= _EXACT_TOL
                if not exact:
                    log.warning("resuming after layer %d differs from the full pass by %.2e on %s; running every "
                                "steering variant through the whole model", layer, gap, type(model).__name__)
            for j, vector in enumerate(vectors):
                vector = vector.to(device=device, dtype=resid.dtype)
                if exact:
                    with resume_after_layer(model, layer, resid + vector):
                        hidden = _last_hidden(model, batch)
                else:
                    with add_to_residual(model, layer, vector):
                        hidden = _last_hidden(model, batch)
                steered[j, batch.index] = _response_loglik(model, batch, hidden).cpu().numpy()
                if progress is not None:
                    progress(1)
    return base, steered
