"""Residual-stream hooks on a tiny model: capture, add, stop after layer L."""

from __future__ import annotations

import pytest
import torch

from igds.core.models.residual import add_to_residual, capture_residual, decoder_layers, layer_module_path, run_to_layer


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_captured_layer_output_equals_hidden_states(tiny_model, tiny_batch, layer):
    input_ids, mask = tiny_batch
    with torch.inference_mode():
        full = tiny_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        with capture_residual(tiny_model, layer) as captured:
            tiny_model(input_ids=input_ids, attention_mask=mask)
    # hidden_states[0] is the embedding output, so layer L's output is hidden_states[L + 1]
    torch.testing.assert_close(captured["resid"], full.hidden_states[layer + 1])


def test_run_to_layer_matches_full_forward_and_runs_no_later_layer(tiny_model, tiny_batch):
    input_ids, mask = tiny_batch
    layer = 1
    layers = decoder_layers(tiny_model)
    calls: list[int] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, k=k: calls.append(k)) for k, m in enumerate(layers)]
    head_calls: list[int] = []
    handles.append(tiny_model.lm_head.register_forward_hook(lambda *_: head_calls.append(1)))
    handles.append(tiny_model.model.norm.register_forward_hook(lambda *_: head_calls.append(1)))
    try:
        with torch.inference_mode():
            resid = run_to_layer(tiny_model, input_ids, mask, layer)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1], f"layers run: {calls}"
    assert head_calls == [], "final norm / LM head ran after the stop"
    with torch.inference_mode():
        full = tiny_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(resid, full.hidden_states[layer + 1])
    # the model is usable again afterwards: no hook left behind
    with torch.inference_mode():
        again = tiny_model(input_ids=input_ids, attention_mask=mask)
    torch.testing.assert_close(again.logits, full.logits)


def test_added_vector_changes_logits_and_downstream_residual(tiny_model, tiny_batch):
    input_ids, mask = tiny_batch
    d_model = tiny_model.config.hidden_size
    vector = torch.zeros(d_model)
    vector[3] = 5.0
    with torch.inference_mode():
        clean = tiny_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        with add_to_residual(tiny_model, 1, vector):
            steered = tiny_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        with add_to_residual(tiny_model, 1, torch.zeros(d_model)):
            zero = tiny_model(input_ids=input_ids, attention_mask=mask)
    # (transformers records hidden_states before our hook edits them: the exact shift at
    # layer 1 is checked in the next test; here the downstream layers must see it)
    assert not torch.allclose(steered.hidden_states[3], clean.hidden_states[3], atol=1e-4)
    assert not torch.allclose(steered.logits, clean.logits, atol=1e-4)
    torch.testing.assert_close(zero.logits, clean.logits)
    # earlier layers are untouched
    torch.testing.assert_close(steered.hidden_states[1], clean.hidden_states[1])


def test_add_then_capture_at_same_layer_sees_the_addition(tiny_model, tiny_batch):
    input_ids, mask = tiny_batch
    vector = torch.full((tiny_model.config.hidden_size,), 0.5)
    with torch.inference_mode():
        clean = run_to_layer(tiny_model, input_ids, mask, 2)
        with add_to_residual(tiny_model, 2, vector):
            steered = run_to_layer(tiny_model, input_ids, mask, 2)
    torch.testing.assert_close(steered - clean, vector.expand_as(clean))


def test_layer_bounds_and_module_path(tiny_model):
    assert layer_module_path(tiny_model, 3) == "model.layers.3"
    with pytest.raises(ValueError, match=r"layer 4 is outside the model: it has layers 0..3"):
        run_to_layer(tiny_model, torch.zeros(1, 2, dtype=torch.long), None, 4)
