"""code-<kind> stage: one small file, manifests/<kind>.json, that changes exactly when the code
a kind of stage runs changes (the sha256 of every file and folder of the stage's deps in
dvc.yaml, read from there: one source of truth).

Why: the 100-odd stages of a kind (every finetune@..., every evaluate@...) depend on this one
file instead of listing their ~25 source files each. DVC re-reads and rewrites the whole of
dvc.lock, with a round-trip YAML parser, after every stage it runs; with ~4,600 dependency
entries that cost ~10 s per stage (a profile of `dvc repro`: 92% of DVC's own time), about half
an hour of the default's run. A code change still re-runs every stage whose code changed: it
re-runs code-<kind>, whose output changes, and DVC re-runs what depends on it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import yaml

from igds.artifacts import write_json


def files_of(deps: list[str], root: Path) -> list[Path]:
    """The files of `deps` (a folder: every file under it, Python caches left out), sorted."""
    out: set[Path] = set()
    for dep in deps:
        path = root / dep
        if path.is_dir():
            out.update(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif path.is_file():
            out.add(path)
        else:
            raise FileNotFoundError(f"dvc.yaml: code stage dep {dep!r} does not exist")
    return sorted(out)


def manifest(kind: str, dvc_yaml: Path) -> dict:
    """{"kind", "files": {path: sha256}} of the deps of stage `code-<kind>` in dvc.yaml."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    deps = stages.get(f"code-{kind}", {}).get("deps")
    if not deps:
        raise KeyError(f"{dvc_yaml}: no stage code-{kind} with deps")
    root = dvc_yaml.parent
    return {"kind": kind, "files": {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                                    for p in files_of(deps, root)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.code", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", help="the code set: stage code-<kind> in dvc.yaml")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        doc = manifest(args.kind, args.dvc_yaml)
    except (KeyError, FileNotFoundError) as e:
        print(f"code: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(2)
    write_json(args.out, doc)


if __name__ == "__main__":
    main()
