"""Residual-stream access: read the output of decoder layer L, add a vector to it, and
stop the forward pass right after L so that no later layer runs.

Works on any HF causal LM whose decoder layers sit in a ModuleList (Llama, Gemma, Qwen,
Mistral: `model.model.layers`; GPT-2: `transformer.h`; GPT-NeoX: `gpt_neox.layers`).
"Layer L" is 0-based: its output equals `output_hidden_states=True`'s `hidden_states[L+1]`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


class _StopForward(Exception):
    """Raised by the layer-L hook to abandon the rest of the forward pass."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers in order."""
    for path in _LAYER_PATHS:
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}; "
        f"looked for {', '.join(_LAYER_PATHS)}"
    )


def layer_module_path(model: nn.Module, layer: int) -> str:
    """The HF module path of decoder layer `layer` (e.g. 'model.layers.6'), as sae-lens names hooks."""
    target = decoder_layers(model)[check_layer(model, layer)]
    for name, module in model.named_modules():
        if module is target:
            return name
    raise AssertionError("decoder layer not found among named_modules")


def check_layer(model: nn.Module, layer: int) -> int:
    n = len(decoder_layers(model))
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} is outside the model: it has layers 0..{n - 1}")
    return layer


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    # transformers >= 4.56 returns a tensor from decoder layers; older versions a tuple.
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def add_to_residual(
    model: nn.Module,
    layer: int,
    vector: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[None]:
    """Within the block, add `vector` to the output of decoder layer `layer`.

    `vector` is a tensor broadcastable to [batch, seq, d_model] (a [d_model] vector adds
    to every token: the steering of interventional filtering), or a function of the
    hidden states returning the delta.
    """
    module = decoder_layers(model)[check_layer(model, layer)]

    def hook(_mod, _inp, output):
        hidden = _hidden(output)
        delta = vector(hidden) if callable(vector) else vector
        return _replace_hidden(output, hidden + delta.to(hidden.dtype))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def resume_after_layer(model: nn.Module, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Within the block, a forward pass skips decoder layers 0..`layer`: they pass their input
    through, and layer `layer` outputs `hidden` (its output cached from an earlier pass, plus
    any steering). Everything else (embeddings, rotary positions, masks, later layers, the
    final norm) runs as usual, so the result equals the full forward pass with layer
    `layer`'s output replaced, whatever the architecture. Interventional filtering runs
    layers 0..L once per batch and only L+1.. per steering variant."""
    layers = decoder_layers(model)
    check_layer(model, layer)

    def skip(i):
        def forward(hidden_states, *args, **kwargs):  # transformers >= 4.56: layers return a tensor
            return hidden if i == layer else hidden_states
        return forward

    for i in range(layer + 1):
        layers[i].forward = skip(i)
    try:
        yield
    finally:
        for i in range(layer + 1):
            del layers[i].forward  # the instance attribute shadowed the class's forward


@contextlib.contextmanager
def capture_residual(model: nn.Module, layer: int, stop: bool = False) -> Iterator[dict]:
    """Within the block, record layer `layer`'s output in `captured["resid"]`.

    With `stop=True` the forward pass is abandoned right after the layer; call the model
    through `run_to_layer` (or catch nothing: the context manager swallows the stop).
    """
    module = decoder_layers(model)[check_layer(model, layer)]
    captured: dict = {}

    def hook(_mod, _inp, output):
        captured["resid"] = _hidden(output)
        if stop:
            raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    except _StopForward:
        pass
    finally:
        handle.remove()


def run_to_layer(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer: int,
) -> torch.Tensor:
    """Residual stream after decoder layer `layer`, running layers 0..layer only.

    Returns [batch, seq, d_model]. No later layer, final norm or LM head runs.
    """
    with capture_residual(model, layer, stop=True) as captured:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if "resid" not in captured:
        raise AssertionError(f"layer {layer} hook did not fire")
    return captured["resid"]
