"""python -m pipelines.lock: drop dvc.lock's entries of stages that dvc.yaml no longer has, and
set aside a lock that DVC was interrupted while writing.

Not a stage: upkeep of the lock file. DVC keeps a stage's lock entry after the stage leaves
dvc.yaml (a renamed stage, a method or seed taken out of a matrix; treeverse/dvc#5293, not
fixed), and it re-reads and rewrites the whole lock after every stage it runs, so stale entries
cost every later stage time (the 2026-12-04 lock: 56 stale of 207). The stages that remain
are kept as they are; `--check` only reports (exit 1 if any entry is stale).

DVC rewrites dvc.lock in place, so a kill (or a full disk) while it writes leaves a lock it
cannot parse, and every later `dvc` command stops on it. Such a lock is moved to
dvc.lock.broken-<time> (nothing is deleted) and the stages are then restored from DVC's run
cache by `dvc repro` without running again (their outputs are in the cache).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
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
    try:
        lock = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(lock, dict) or not isinstance(lock.get("stages", {}), dict):
            raise yaml.YAMLError("not a mapping of stages")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        if args.check:
            print(f"{path}: cannot be read ({first}): DVC was interrupted while writing it; run "
                  "`python -m pipelines.lock` to set it aside, then `dvc repro` (the run cache restores what ran)")
            sys.exit(1)
        aside = path.with_name(f"dvc.lock.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        print(f"{path}: cannot be read ({first}); moved to {aside.name}. `dvc repro` now restores every stage that "
              "ran from the run cache (no stage runs again whose inputs did not change)")
        return
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
