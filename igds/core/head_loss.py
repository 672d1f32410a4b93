"""The fine-tuning loss without the [batch, seq, vocab] logits: the causal-LM cross-entropy
computed only at the positions that predict a response token, through the LM head in chunks.

A causal LM's own loss (transformers' `ForCausalLMLoss`) materialises float32 logits over
the whole vocabulary at every position, then their log-softmax and its gradient: for a
135M model with a 49k vocabulary at batch 8 x 384 that is ~0.6 GB per copy and most of the
step's memory. Here the decoder runs as usual, the hidden states of the predicting
positions are gathered ([n_response_tokens, d]), and `head_cross_entropy` computes the
summed loss and its gradients chunk by chunk in the forward pass (the fused-linear-cross-
entropy scheme of Liger-Kernel, whose kernel needs Triton and a GPU; this is the same
arithmetic in plain torch, so it runs on a CPU too). Only one chunk of logits
([chunk, vocab]) exists at a time, and nothing of them is kept for the backward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from igds.core.prefix import causal_lm, last_hidden
from igds.core.tokens import IGNORE


class _HeadCrossEntropy(torch.autograd.Function):
    """sum_i CE(softcap(hidden_i @ weight.T + bias), target_i), gradients made in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, chunk: int, softcap: float | None):
        # hidden [n, d], weight [vocab, d], bias [vocab] or None, target [n]
        want_h, want_w = hidden.requires_grad, weight.requires_grad
        want_b = bias is not None and bias.requires_grad
        grad_h = torch.zeros_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if want_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for lo in range(0, hidden.shape[0], chunk):
            h, y = hidden[lo:lo + chunk], target[lo:lo + chunk]
            logits = (h @ weight.T).float()  # [chunk, vocab]
            if bias is not None:
                logits += bias.float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = softcap * capped
            lse = torch.logsumexp(logits, -1)
            total += (lse - logits.gather(1, y[:, None])[:, 0]).sum()
            if not (want_h or want_w or want_b):
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place: d CE / d logits = p - onehot(y)
            grad[torch.arange(len(y), device=y.device), y] -= 1
            if softcap:
                grad *= 1 - capped * capped
            if want_b:
                grad_b += grad.sum(0)
            grad = grad.to(hidden.dtype)
            if want_h:
                grad_h[lo:lo + chunk] = grad @ weight
            if want_w:
                grad_w += grad.T.float() @ h.float()
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.wants = (want_h, want_w, want_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        want_h, want_w, want_b = ctx.wants
        grad_h = next(saved) * grad_total if want_h else None
        grad_w = (next(saved) * grad_total).to(ctx.dtypes[0]) if want_w else None
        grad_b = (next(saved) * grad_total).to(ctx.dtypes[1]) if want_b else None
        return grad_h, grad_w, grad_b, None, None, None


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                       bias: torch.Tensor | None = None, chunk: int = 1024,
                       softcap: float | None = None) -> torch.Tensor:
    """Summed cross-entropy of `target` [n] under the logits `hidden @ weight.T + bias`
    ([n, vocab], computed `chunk` rows at a time, float32, `softcap * tanh(logits / softcap)`
    when the model caps them, as Gemma 2 does). Differentiable in hidden, weight and bias."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _HeadCrossEntropy.apply(hidden, weight, bias, target, int(chunk), softcap)


class ResponseLoss(nn.Module):
    """`model`'s causal-LM loss at the labelled positions only: forward(input_ids,
    attention_mask, labels, num_items) -> summed cross-entropy of the tokens whose label is
    not IGNORE (label t predicted from position t - 1), divided by `num_items` (the step's
    response tokens, as transformers' `num_items_in_batch`). The same value and gradients as
    `model(..., labels=labels, num_items_in_batch=num_items).loss`, without its logits.

    An nn.Module holding `model`, so DDP can wrap it (its parameters are the model's)."""

    def __init__(self, model, chunk: int = 1024):
        super().__init__()
        self.model = model
        self.chunk = chunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                num_items: int, prefix_len: int = 0) -> torch.Tensor:
        """`prefix_len`: the first tokens every row shares, run once for the batch (igds.core.prefix);
        they and the token after them carry no loss."""
        lm = causal_lm(self.model)
        if prefix_len and bool((labels[:, :prefix_len + 1] != IGNORE).any()):
            raise ValueError(f"a shared prefix of {prefix_len} tokens reaches a labelled token")
        hidden = last_hidden(self.model, input_ids, attention_mask, prefix_len)  # positions prefix_len..
        target = labels[:, prefix_len + 1:]  # hidden position prefix_len + j predicts token prefix_len + j + 1
        rows, pos = (target != IGNORE).nonzero(as_tuple=True)
        head = lm.get_output_embeddings()
        total = head_cross_entropy(hidden[:, :-1][rows, pos], head.weight, target[rows, pos],
                                   bias=getattr(head, "bias", None), chunk=self.chunk,
                                   softcap=getattr(lm.config, "final_logit_softcapping", None))
        return total / max(int(num_items), 1)
