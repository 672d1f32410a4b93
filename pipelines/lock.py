"""python -m pipelines.lock: drop dvc.lock's entries of stages that dvc.yaml no longer has.

Not a stage: upkeep of the lock file. DVC keeps a stage's lock entry after the stage leaves
dvc.yaml (a renamed stage, a method or seed taken out of a matrix; treeverse/dvc#5293, not
fixed), and it re-reads and rewrites the whole lock after every stage it runs, so stale entries
cost every later stage time (the 2026-12-04 lock: 56 stale of 207). The stages that remain
are kept as they are; `--check` only reports (exit 1 if any entry is stale).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from igds.core.artifacts import atomic_file


def dvc_stages(root: Path) -> set[str]:
    """Every stage name dvc.yaml defines for the current params (matrix items expanded)."""
    proc = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc stage list` failed in {root}: {proc.stderr.strip()}")
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def prune(lock: dict, keep: set[str]) -> tuple[dict, list[str]]:
    """(the lock without entries outside `keep`, the dropped stage names in lock order)."""
    stages = lock.get("stages") or {}
    dropped = [name for name in stages if name not in keep]
    return {**lock, "stages": {k: v for k, v in stages.items() if k in keep}}, dropped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.lock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the project (dvc.yaml, dvc.lock)")
    parser.add_argument("--check", action="store_true", help="report stale entries, change nothing")
    args = parser.parse_args(argv)
    path = args.root / "dvc.lock"
    if not path.is_file():
        print(f"lock: error: {path} not found (nothing has run yet)", file=sys.stderr)
        sys.exit(2)
    lock = yaml.safe_load(path.read_text(encoding="utf-8"))
    pruned, dropped = prune(lock, dvc_stages(args.root))
    print(f"{path}: {len(dropped)} of {len(lock.get('stages') or {})} entries name no stage of dvc.yaml"
          + "".join(f"\n  {name}" for name in dropped))
    if args.check:
        sys.exit(1 if dropped else 0)
    if dropped:
        with atomic_file(path) as f:
            yaml.safe_dump(pruned, f, sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    main()
