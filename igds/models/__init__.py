"""Models: loading (bundled GGUF default, hub id, local dir) and residual-stream hooks."""

from igds.models.loading import BUNDLED, LoadedModel, load_model, model_dims
from igds.models.residual import (
    add_to_residual,
    capture_residual,
    check_layer,
    decoder_layers,
    layer_module_path,
    run_to_layer,
)

__all__ = [
    "BUNDLED",
    "LoadedModel",
    "add_to_residual",
    "capture_residual",
    "check_layer",
    "decoder_layers",
    "layer_module_path",
    "load_model",
    "model_dims",
    "run_to_layer",
]
