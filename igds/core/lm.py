"""lm-eval's HuggingFace model adapter with log-likelihoods computed at the continuation
positions only, and the batch's common token prefix run once.

lm-eval's `HFLM._loglikelihood_tokens` takes the log-softmax over the whole vocabulary at
every position of every batch ([batch, seq, vocab] in float32: 32 x 90 x 49k = 0.6 GB for
SmolLM2) and then keeps the few continuation positions. Here the decoder runs as usual, and
only the hidden states that predict a continuation token go through the LM head (as
`igds.core.loglik` and `igds.core.head_loss` do); the chat template's start, the same in every request,
runs once per batch (`igds.core.prefix`); the head step is `igds.core.loglik.token_logprobs`.
Requests, tokenisation, truncation (from the left, to `max_length`), batching (longest
first) and the returned (sum of log-probabilities, is greedy) pairs are lm-eval's;
generation is lm-eval's own `generate_until`, unchanged.
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from igds.core.loglik import token_logprobs
from igds.core.prefix import common_prefix_len, last_hidden


class ContinuationLM(HFLM):
    """HFLM whose log-likelihood requests put only the continuation positions through the LM head."""

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal":  # seq2seq: lm-eval's own path
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        model = self.model
        batch_size = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 16)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # lm-eval's order: longest first (time estimates err high, an OOM shows at once)
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (continuations)")
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                chunk = order[lo:lo + batch_size]
                # inputs: context + continuation without its last token, cut from the left to max_length
                inputs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1):][:-1] for i in chunk]
                width = max(map(len, inputs))
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, x in enumerate(inputs):
                    ids[row, :len(x)] = torch.tensor(x)
                    mask[row, :len(x)] = 1
                # the chat template's common start runs once per batch (igds.core.prefix): up to the
                # first position that predicts a continuation token
                first_scored = min(len(x) - len(requests[i][2]) for i, x in zip(chunk, inputs))
                prefix = max(0, min(common_prefix_len(inputs), first_scored))
                hidden = self._hidden(ids.to(self.device), mask.to(self.device), prefix)  # [batch, width - prefix, d]
                rows, positions, targets = [], [], []
                for row, (i, x) in enumerate(zip(chunk, inputs)):
                    cont = requests[i][2]
                    # position t predicts token t + 1: the last len(cont) positions of the input
                    rows += [row] * len(cont)
                    positions += range(len(x) - len(cont) - prefix, len(x) - prefix)
                    targets += cont
                target = torch.tensor(targets, device=hidden.device)
                token_logp, hit = token_logprobs(model, hidden[torch.tensor(rows), torch.tensor(positions)], target)
                token_logp, hit = token_logp.double().cpu(), hit.cpu()
                start = 0
                for i in chunk:
                    n = len(requests[i][2])
                    answer = (float(token_logp[start:start + n].sum()), bool(hit[start:start + n].all()))
                    start += n
                    out[i] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                    bar.update(1)
        bar.close()
        return out

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int = 0) -> torch.Tensor:
        """The decoder's last hidden states [batch, seq - prefix_len, d] of right-padded inputs
        (no LM head), the rows' common first `prefix_len` tokens run once."""
        return last_hidden(self.model, input_ids, attention_mask, max(prefix_len, 0))
