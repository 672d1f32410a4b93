"""Log-likelihood of each example's response under a model: the primitive of the Loss and
IFD baselines and of interventional filtering's task metric (IGDS step 2)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from igds.models.residual import add_to_residual
from igds.tokens import Tokenized, iter_batches


def answer_loglik(model, tok: Tokenized, batch_size: int, pad_id: int,
                  steer: tuple[int, torch.Tensor] | None = None) -> np.ndarray:
    """Mean log-likelihood per response token of each example: [n_examples].

    `steer = (layer, vector)` adds the vector to the residual after `layer` on every token.
    Only the response positions go through the LM head.
    """
    out = np.zeros(len(tok))
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    with torch.inference_mode():
        for batch in iter_batches(tok, batch_size, pad_id, "response", device):
            steering = add_to_residual(model, steer[0], steer[1].to(device)) if steer else contextlib.nullcontext()
            with steering:
                hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                          use_cache=False).last_hidden_state  # [b, s, d]
            # token t is predicted from position t - 1
            target = batch.scope_mask[:, 1:]
            rows, pos = target.nonzero(as_tuple=True)
            logits = head(hidden[:, :-1][rows, pos]).float()  # [n_response_tokens, vocab]
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            logp = torch.log_softmax(logits, -1).gather(1, batch.input_ids[:, 1:][rows, pos][:, None])[:, 0]
            per_row = torch.zeros(len(batch.index), device=logp.device).index_add_(0, rows, logp)
            counts = torch.bincount(rows, minlength=len(batch.index)).clamp(min=1)
            out[batch.index] = (per_row / counts).cpu().numpy()
    return out
