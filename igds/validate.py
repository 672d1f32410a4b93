"""Checks of params.yaml that need more than one section, the model's config or the
method registry: run by every stage's entry point before it does any work, so a bad
setting stops `dvc repro` at its first stage with one line, not twenty minutes in.

Each error names the parameter, the bad value and the allowed range (ConfigError). What a
single section can check by itself lives in its dataclass (igds.config).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from igds.config import ConfigError, Params
from igds.selection import available, build_selector

log = logging.getLogger(__name__)


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _looks_local(path: str) -> bool:
    """A hub id is 'owner/name'; anything absolute, relative-dotted or with a file suffix is a path."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).suffix in (".json", ".jsonl", ".parquet", ".csv")


def check_methods(params: Params) -> None:
    names = available()
    for i, name in enumerate(params.select.methods):
        if name not in names:
            raise _bad(f"select.methods[{i}]", name, f"one of {', '.join(n for n in names if n != 'full')}")
    for name, raw in params.methods.items():
        if name not in names:
            raise _bad("methods", name, f"keys among the registered methods {', '.join(names)}")
        build_selector(name, raw)  # each method's own dataclass checks its keys and ranges
    igds = params.methods.get("igds") or {}
    k = igds.get("k", 1)
    if isinstance(k, int) and k > params.identify.top_n:
        raise _bad("methods.igds.k", k, f"at most identify.top_n = {params.identify.top_n} (features are ranked "
                   "among the recalled ones)")


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
    from igds.models import model_dims  # noqa: PLC0415 (transformers import is slow; only when needed)

    try:
        return model_dims(name)
    except (OSError, ValueError) as e:  # a hub id without the network: the stage's own load reports it
        log.warning("cannot read the config of model %r to check layers (%s); checking at load time", name,
                    str(e).splitlines()[0])
        return None


def check_model_fit(params: Params, dims: tuple[int, int]) -> None:
    n_layers, d_model = dims
    if not 0 <= params.sae.layer < n_layers:
        raise _bad("sae.layer", params.sae.layer,
                   f"a decoder layer of {params.model.name}: 0..{n_layers - 1}")
    kcenter = params.methods.get("kcenter") or {}
    layer = kcenter.get("layer", -1)
    if isinstance(layer, int) and not -n_layers <= layer < n_layers:
        raise _bad("methods.kcenter.layer", layer, f"a decoder layer of {params.model.name}: "
                   f"-{n_layers}..{n_layers - 1} (negative counts from the end)")


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
    """methods.igds.k cannot exceed the features identification kept."""
    path = Path(features_dir) / "features.json"
    if not path.is_file() or "igds" not in params.methods:
        return
    ranking = json.loads(path.read_text(encoding="utf-8")).get("ranking", [])
    k = (params.methods.get("igds") or {}).get("k", 1)
    if isinstance(k, int) and k > len(ranking):
        raise _bad("methods.igds.k", k, f"at most the {len(ranking)} feature(s) identification kept ({path}); "
                   "or relax identify.min_effect / identify.min_contrast")


def validate(params: Params, *, sae_dir: Path | None = None, features_dir: Path | None = None,
             check_model: bool = True) -> None:
    """Every cross-section check; `sae_dir`/`features_dir` are checked when they exist."""
    check_methods(params)
    check_data_files(params)
    dims = model_layers(params.model.name) if check_model else None
    if dims is not None:
        check_model_fit(params, dims)
    if sae_dir is not None:
        check_sae_dir(params, sae_dir, dims)
    if features_dir is not None:
        check_features(params, features_dir)
