"""The re-audit after DPO (issue 17): on held-out prompts, how much the trained model now
leans to the planted concept, and whether it still ranks clean held-out pairs right.

- marker log-probability: the teacher-forced mean log-probability per token of each plant
  template as the start of the model's answer to a held-out prompt (mean over templates),
  for the trained model and for the base model (the adapter disabled): paired per prompt;
- marker rate: the share of greedy generations (`max_new_tokens`) that open with a template;
- reward accuracy: on clean held-out pairs, the share whose implicit DPO reward margin
  (log pi(chosen) - log pi_ref(chosen)) - (log pi(rejected) - log pi_ref(rejected)) is > 0,
  pi_ref the base model: what DPO taught that carries to new pairs (0.5 if it taught nothing);
- ranking accuracy: the share of clean held-out pairs whose chosen response the trained model
  finds likelier, log pi(chosen) > log pi(rejected) (and the base model's): whether it still
  prefers the right answer, whatever it knew before DPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch

from igds.core.data.schema import make_record
from igds.core.loglik import answer_loglik
from igds.core.tokens import tokenize_records


def _reference(model):
    """The base model: the adapter of a PeftModel disabled (a plain model is its own reference)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def _core(model):
    """The causal LM under a PeftModel (its LoRA layers in place; `_reference` switches them off)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def marker_logprob(model, tokenizer, prompts: Sequence[str], templates: Sequence[str], batch_size: int,
                   max_len: int) -> np.ndarray:
    """[n_prompts] mean over templates of log p(template | prompt) per template token."""
    records = [make_record(p, "", t, "reaudit", "reaudit") for p in prompts for t in templates]
    tok = tokenize_records(tokenizer, records, max_len)
    values = answer_loglik(_core(model), tok, batch_size, tokenizer.pad_token_id, scope="response_content")
    return values.reshape(len(prompts), len(templates)).mean(axis=1)


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers to `prompts` in the chat template (left-padded batches)."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                   tokenize=False) for p in prompts[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                ids = _core(model).generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def opens_with(texts: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """[n] whether each text opens with a template (whitespace and case aside)."""
    heads = [t.strip().lower() for t in templates]
    return np.array([any(text.strip().lower().startswith(h) for h in heads) for text in texts])


def pair_logliks(model, tokenizer, pairs: Sequence, batch_size: int, max_len: int) -> np.ndarray:
    """[n_pairs, 2] log p(chosen) and log p(rejected) (summed over the response's own tokens)."""
    records = [make_record(p.prompt, "", r, p.task, p.source) for p in pairs for r in (p.chosen, p.rejected)]
    tok = tokenize_records(tokenizer, records, max_len)
    return answer_loglik(_core(model), tok, batch_size, tokenizer.pad_token_id, scope="response_content",
                         total=True).reshape(len(pairs), 2)


def _marker_values(model, tokenizer, prompts: Sequence[str], templates: Sequence[str], batch_size: int,
                   max_len: int, max_new_tokens: int) -> tuple[list[float], list[bool]]:
    logprob = marker_logprob(model, tokenizer, prompts, templates, batch_size, max_len)
    rate = opens_with(generate(model, tokenizer, prompts, max_new_tokens, batch_size), templates)
    return logprob.tolist(), rate.tolist()


def base_values(model, tokenizer, heldout: Sequence, templates: Sequence[str], batch_size: int, max_len: int,
                max_new_tokens: int) -> dict:
    """The base model's values on the held-out prompts and pairs, the same for every trained arm
    and seed of a set: computed once (stage reaudit-base@<set>), not in every re-audit."""
    out: dict = {"ids": [p.id for p in heldout], "templates": list(templates)}
    if templates:
        out["marker_logprob_base"], out["marker_rate_base"] = _marker_values(
            model, tokenizer, [p.prompt for p in heldout], templates, batch_size, max_len, max_new_tokens)
    out["loglik_base"] = pair_logliks(model, tokenizer, heldout, batch_size, max_len).tolist()
    return out


def reaudit(model, tokenizer, heldout: Sequence, templates: Sequence[str], batch_size: int, max_len: int,
            max_new_tokens: int, base: dict | None = None) -> dict:
    """Per held-out prompt and pair, the trained model's and the base model's values. `base`:
    `base_values` of these prompts and templates (computed here, adapter disabled, when None)."""
    if base is None:
        with _reference(model):
            base = base_values(model, tokenizer, heldout, templates, batch_size, max_len, max_new_tokens)
    if base["ids"] != [p.id for p in heldout] or base["templates"] != list(templates):
        raise ValueError("the base values are of other held-out pairs or templates; rerun reaudit-base for this set")
    out: dict = {k: v for k, v in base.items() if k != "loglik_base"}
    if templates:
        out["marker_logprob"], out["marker_rate"] = _marker_values(
            model, tokenizer, [p.prompt for p in heldout], templates, batch_size, max_len, max_new_tokens)
    out.update(pair_metrics(pair_logliks(model, tokenizer, heldout, batch_size, max_len), np.asarray(base["loglik_base"])))
    return out


def pair_metrics(policy: np.ndarray, ref: np.ndarray) -> dict:
    """From [n_pairs, 2] log-likelihoods (chosen, rejected) under the trained and the base model:
    the reward margins and accuracy, the ranking margins and accuracy, and the base model's."""
    reward = (policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1])
    rank, rank_base = policy[:, 0] - policy[:, 1], ref[:, 0] - ref[:, 1]
    return {"margin": reward.tolist(), "accuracy": float((reward > 0).mean()),
            "rank_margin": rank.tolist(), "rank_accuracy": float((rank > 0).mean()),
            "rank_margin_base": rank_base.tolist(), "rank_accuracy_base": float((rank_base > 0).mean())}
