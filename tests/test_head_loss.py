"""The response-only LM-head loss equals the model's own loss and its gradients, without the
[batch, seq, vocab] logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import igds.core.finetune as ft
from igds.core.head_loss import IGNORE, ResponseLoss, head_cross_entropy
from igds.core.lora import add_lora
from igds.core.tokens import tokenize_records
from tests.conftest import build_char_tokenizer, build_tiny_model, task
from tests.test_finetune import CFG


def _reference(hidden, weight, target, bias=None, softcap=None):
    logits = (hidden @ weight.T).float()
    if bias is not None:
        logits = logits + bias.float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, target, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_head_cross_entropy_matches_torch_in_value_and_every_gradient(chunk, softcap, with_bias):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    target = torch.randint(0, 13, (10,), generator=g)
    ours = head_cross_entropy(hidden, weight, target, bias=bias, chunk=chunk, softcap=softcap)
    (ours * 0.7).backward()  # a scale downstream reaches every gradient
    got = [hidden.grad.clone(), weight.grad.clone()] + ([bias.grad.clone()] if with_bias else [])
    for x in (hidden, weight, bias):
        if x is not None:
            x.grad = None
    ref = _reference(hidden, weight, target, bias, softcap)
    (ref * 0.7).backward()
    want = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])
    torch.testing.assert_close(ours.double(), ref.double(), rtol=1e-5, atol=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)


def test_frozen_weight_gets_no_gradient_and_no_work():
    hidden = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(5, 3)  # a frozen head, as under LoRA
    loss = head_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 3]), chunk=2)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None


def _batch(tok, n=3):
    tokenized = tokenize_records(tok, [task(i) for i in range(n)], 128)
    return ft.step_batch(tokenized, list(range(n)), tok.pad_token_id, "cpu")


def test_response_loss_equals_the_models_own_loss_and_gradients_under_lora():
    tok = build_char_tokenizer()
    batch = _batch(tok)
    n_items = ft.response_items(batch)
    grads = []
    for use_ours in (False, True):
        model, params = add_lora(build_tiny_model(seed=0), r=4, alpha=8, dropout=0.0,
                                 target_modules=("q_proj", "v_proj"), seed=1, task_type="CAUSAL_LM")
        with torch.no_grad():  # lora_B starts at 0: move it, so the adapter is on the gradient path
            for q in params:
                q.add_(0.01 * torch.randn_like(q))
        if use_ours:
            loss = ResponseLoss(model, chunk=5)(batch["input_ids"], batch["attention_mask"], batch["labels"], n_items)
        else:
            loss = model(**batch, use_cache=False, num_items_in_batch=n_items).loss
        loss.backward()
        grads.append((loss.detach(), [q.grad.clone() for q in params]))
    (ref_loss, ref_grads), (our_loss, our_grads) = grads
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_response_loss_trains_a_tied_head_in_full_fine_tuning_like_the_models_loss():
    tok = build_char_tokenizer()
    batch = _batch(tok, 2)
    n_items = ft.response_items(batch)
    out = []
    for use_ours in (False, True):
        model = build_tiny_model(seed=0)
        if use_ours:
            loss = ResponseLoss(model)(batch["input_ids"], batch["attention_mask"], batch["labels"], n_items)
        else:
            loss = model(**batch, use_cache=False, num_items_in_batch=n_items).loss
        loss.backward()
        out.append(model.get_output_embeddings().weight.grad.clone())
    torch.testing.assert_close(out[1], out[0], rtol=1e-4, atol=1e-6)


def test_finetune_losses_are_what_the_models_own_loss_would_report():
    """A step's recorded loss is the model's own causal-LM loss of that step's batch with the
    weights before the step: checked on the first step (no update yet)."""
    tok = build_char_tokenizer()
    records = [task(i) for i in range(2)]
    cfg = dataclasses.replace(CFG, batch_size=2, loss_chunk=3)
    _, result = ft.finetune(build_tiny_model(seed=0), tok, records, cfg, seed=0, progress=False)
    tokenized = tokenize_records(tok, records, cfg.max_len)
    batch = ft.step_batch(tokenized, [0, 1], tok.pad_token_id, "cpu")
    with torch.no_grad():  # a fresh adapter is the identity (lora_B = 0): the base model's loss
        ref = build_tiny_model(seed=0)(**batch, use_cache=False).loss
    assert result.loss[0] == pytest.approx(float(ref), abs=1e-5)
    assert (batch["labels"] != IGNORE).any()
