"""The batch's common prefix computed once: the same hidden states, loss and gradients as the
plain forward pass, and the same fine-tuning run (without dropout)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import igds.core.finetune as ft
from igds.core.config import ConfigError, FinetuneConfig
from igds.core.head_loss import ResponseLoss
from igds.core.lora import add_lora
from igds.core.prefix import common_prefix_len, last_hidden
from igds.core.tokens import tokenize_records
from tests.conftest import build_char_tokenizer, build_tiny_model, task
from tests.test_finetune import CFG


def _tokenized(n=4):
    tok = build_char_tokenizer()
    # different lengths, so rows are right-padded past the prefix
    return tok, tokenize_records(tok, [task(i * 37) for i in range(n)], 128)


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5, 6], [5, 6]]) == 2 and common_prefix_len([[1], [2]]) == 0
    assert common_prefix_len([]) == 0


def test_shared_prefix_hidden_states_equal_the_plain_pass():
    tok, tokenized = _tokenized()
    index = list(range(len(tokenized)))
    batch = ft.step_batch(tokenized, index, tok.pad_token_id, "cpu")
    prefix = ft.shared_prefix(tokenized, index)
    assert prefix >= 5  # '<|im_start|>user\nAdd ' is every row's
    model = build_tiny_model()
    with torch.no_grad():
        full = last_hidden(model, batch["input_ids"], batch["attention_mask"])
        shared = last_hidden(model, batch["input_ids"], batch["attention_mask"], prefix)
    mask = batch["attention_mask"][:, prefix:].bool()
    assert shared.shape == full[:, prefix:].shape
    torch.testing.assert_close(shared[mask], full[:, prefix:][mask], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not share their first"):
        last_hidden(model, batch["input_ids"], batch["attention_mask"], prefix + 3)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_shared_prefix_gives_the_same_loss_and_gradients(kind):
    tok, tokenized = _tokenized()
    index = list(range(len(tokenized)))
    batch = ft.step_batch(tokenized, index, tok.pad_token_id, "cpu")
    n_items = ft.response_items(batch)
    out = []
    for prefix in (0, ft.shared_prefix(tokenized, index)):
        if kind == "lora":
            model, params = add_lora(build_tiny_model(seed=0), r=4, alpha=8, dropout=0.0,
                                     target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"), seed=1,
                                     task_type="CAUSAL_LM")
            with torch.no_grad():  # lora_B starts at 0: move it, so every adapter is on the gradient path
                for q in params:
                    q.add_(0.01 * torch.randn(q.shape, generator=torch.Generator().manual_seed(q.numel())))
        else:
            model = build_tiny_model(seed=0)
            params = list(model.parameters())
        loss = ResponseLoss(model, chunk=7)(batch["input_ids"], batch["attention_mask"], batch["labels"], n_items,
                                            prefix)
        loss.backward()
        out.append((loss.detach(), [q.grad.clone() for q in params if q.grad is not None]))
    (ref_loss, ref_grads), (our_loss, our_grads) = out
    assert len(our_grads) == len(ref_grads) > 0
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_prefix_reaching_a_labelled_token_is_refused():
    tok, tokenized = _tokenized(2)
    batch = ft.step_batch(tokenized, [0, 1], tok.pad_token_id, "cpu")
    with pytest.raises(ValueError, match="reaches a labelled token"):
        ResponseLoss(build_tiny_model())(batch["input_ids"], batch["attention_mask"], batch["labels"], 1,
                                         tokenized.response_start[0] + 1)


def test_finetune_with_a_shared_prefix_trains_the_same_adapter():
    records = [task(i * 13) for i in range(6)]
    tok = build_char_tokenizer()
    runs = []
    for share in (False, True):
        cfg = dataclasses.replace(CFG, batch_size=3, epochs=2, share_prefix=share)
        model, result = ft.finetune(build_tiny_model(seed=0), tok, records, cfg, seed=0, progress=False)
        runs.append((result.loss, {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}))
    (loss_a, weights_a), (loss_b, weights_b) = runs
    assert loss_b == pytest.approx(loss_a, rel=1e-4, abs=1e-5)
    assert weights_a.keys() == weights_b.keys() and weights_a
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=1e-3, atol=1e-5)


def test_share_prefix_is_refused_with_gradient_checkpointing():
    with pytest.raises(ConfigError, match="share_prefix = True is not allowed; expected false with gradient_che"):
        FinetuneConfig(share_prefix=True, gradient_checkpointing=True)
