"""input@<key> stages: manifests/inputs/<reader>/<key>.json, the sha256 of a file or folder that
params.yaml names (a `kind: jsonl` source, a local `kind: hf` dataset folder), so the stage that
reads it (prepare, prepare-pairs@<set>) re-runs when its contents change, and DVC's run cache
can never restore outputs built from other contents.

    python -m pipelines.inputs <path> --out manifests/inputs/<reader>/<key>.json

graph.yaml lists them (pipelines.graph: computed from params.yaml, never by hand); each input@
stage depends on its file, and its reader on the folder manifests/inputs/<reader>/. A hub
dataset is not a file: its id and pinned `revision` are params the reader already depends on.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from igds.core.artifacts import write_json

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.inputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a file or folder params.yaml names")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        files = contents(args.path)
    except OSError as e:
        print(f"inputs: error: {e}", file=sys.stderr)
        sys.exit(2)
    write_json(args.out, {"path": str(args.path), "files": files})


if __name__ == "__main__":
    main()
