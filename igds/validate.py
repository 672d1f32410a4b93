"""Checks of params.yaml against the world outside it: data files on disk, the model's
config, the SAE and features a stage reads. Run by every stage's entry point before it does
any work, so a bad setting stops `dvc repro` at its first stage with one line, not twenty
minutes in. What params.yaml alone decides (every key, type and range, and the checks
across its sections) is checked when it is parsed (igds.core.config).

Each error names the parameter, the bad value and the allowed range (ConfigError). No
model weights are loaded and torch is not imported: a model's dimensions come from its
config file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from igds.core.config import ConfigError
from igds.params import Params
from igds.core.models.dims import model_dims

log = logging.getLogger(__name__)


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _looks_local(path: str) -> bool:
    """A hub id is 'owner/name'; anything absolute, relative-dotted or with a file suffix is a path."""
    return path.startswith(("/", "./", "../", "~")) or Path(path.removesuffix(".gz")).suffix in (".json", ".jsonl", ".parquet", ".csv")


def check_data_files(params: Params) -> None:
    if params.data is None:
        return
    for name, source in params.data.split_sources().items():
        key = f"data.splits.{name}.path" if name != "pool_distractors" else "data.mix.distractors.path"
        if source.kind == "jsonl" and not Path(source.path).expanduser().is_file():
            raise _bad(key, source.path, "an existing JSONL file (path relative to the project root)")
        if source.kind == "hf" and _looks_local(source.path) and not Path(source.path).expanduser().exists():
            raise _bad(key, source.path, "an existing local dataset folder or file, or a hub id 'owner/name'")


def model_layers(name: str) -> tuple[int, int] | None:
    """(decoder layers, d_model) from the model's config; None when it cannot be read offline."""
    try:
        return model_dims(name)
    except Exception as e:  # noqa: BLE001  a hub id without the network: the stage's own load reports it
        log.warning("cannot read the config of model %r to check layers (%s); checking at load time", name,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def check_sae_dir(params: Params, sae_dir: Path, dims: tuple[int, int] | None) -> None:
    """An SAE on disk (the sae stage's output) must read this model's residual at sae.layer."""
    cfg_file = Path(sae_dir) / "cfg.json"
    if not cfg_file.is_file():
        return  # not made yet: the stage that needs it says so
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if dims is not None and cfg.get("d_in") != dims[1]:
        raise ConfigError(f"{cfg_file}: the SAE's d_in = {cfg.get('d_in')} but {params.model.name} has d_model = "
                          f"{dims[1]}; rerun `dvc repro sae` for this model, or pick an SAE (sae.release/sae_id) "
                          "trained on it")
    if not params.sae.pretrained and dims is not None and cfg.get("d_sae") != params.sae.width * dims[1]:
        raise ConfigError(f"{cfg_file}: the SAE's d_sae = {cfg.get('d_sae')} but sae.width = {params.sae.width} "
                          f"asks for {params.sae.width * dims[1]}; rerun `dvc repro sae`")
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if hook and not hook.endswith(f".{params.sae.layer}"):
        raise ConfigError(f"{cfg_file}: the SAE reads {hook} but sae.layer = {params.sae.layer}; rerun "
                          "`dvc repro sae` or set sae.layer to the SAE's layer")


def check_features(params: Params, features_dir: Path) -> None:
    """What features.json decides for the methods that read it (e.g. methods.igds.k)."""
    path = Path(features_dir) / "features.json"
    if path.is_file():
        params.check_features(json.loads(path.read_text(encoding="utf-8")), str(path))


def validate(params: Params, *, sae_dir: Path | None = None, features_dir: Path | None = None,
             check_model: bool = True) -> None:
    """Every check against files and the model's config; `sae_dir`/`features_dir` are checked when they exist."""
    check_data_files(params)
    dims = model_layers(params.model.name) if check_model else None
    if dims is not None:
        params.check_model(*dims)
    if sae_dir is not None:
        check_sae_dir(params, sae_dir, dims)
    if features_dir is not None:
        check_features(params, features_dir)
