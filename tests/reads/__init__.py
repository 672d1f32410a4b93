"""What stages read, against what they declare (issue 32: a stage reads only what it declares).

Run `dvc repro` with `env()` (sitecustomize.py logs each stage module's reads), then
`undeclared(work, logs)` lists every file a stage read inside the workspace that none of its
dvc.lock deps or outs holds."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# read by every stage, by design: the params (dvc.yaml names the keys), the generated stage
# graph (pipelines.graph checks it is fresh) and dvc.yaml (the code stage computes the kinds from it)
ALWAYS = {"params.yaml", "graph.yaml", "dvc.yaml"}


def env(logs: Path) -> dict[str, str]:
    """The environment that makes every Python process log its reads into `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "IGDS_READS": str(logs), "PYTHONPATH": path}


def _stage_of(argv: list[str], stages: dict) -> str | None:
    """The dvc.lock stage whose command is this process's: python -m <module> <args>."""
    module = Path(argv[0]).with_suffix("").parts
    for name, stage in stages.items():
        cmd = shlex.split(stage.get("cmd", ""))
        if cmd[:2] != ["python", "-m"] or cmd[3:] != argv[1:]:
            continue
        if tuple(cmd[2].split(".")) == module[-len(cmd[2].split(".")):] or module[-1] == "__main__":
            return name
    return None


def _inside(path: str, roots: list[str]) -> bool:
    """`path` is one of `roots`, under one, or one's atomic-write temporary (.name.tmp-*) or a
    stage's resume state (.resume/)."""
    parts = Path(path).parts
    if ".resume" in parts:
        return True
    for root in roots:
        r = Path(root)
        if path == root or Path(path).is_relative_to(r):
            return True
        if Path(path).parent == r.parent or Path(path).is_relative_to(r.parent):
            rel = Path(path).relative_to(r.parent).parts
            if rel and rel[0].startswith(f".{r.name}.tmp-"):
                return True
    return False


def undeclared(work: Path, logs: Path) -> dict[str, list[str]]:
    """stage -> the files and folders it read (or listed) that none of its deps or outs holds,
    nor ALWAYS; processes that match no stage of dvc.lock under `unmatched`."""
    stages = (yaml.safe_load((work / "dvc.lock").read_text()) or {}).get("stages", {})
    roots = {name: [d["path"] for d in s.get("deps", [])] + [o["path"] for o in s.get("outs", [])]
             for name, s in stages.items()}
    found: dict[str, set[str]] = {}
    for log in sorted(logs.glob("*.jsonl")):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            stage = _stage_of(entry["argv"], stages)
            path = entry["path"]
            if stage is None:
                found.setdefault("unmatched", set()).add(" ".join(entry["argv"][1:])[:120])
                continue
            if path in ALWAYS or _inside(path, roots[stage]):
                continue
            if entry["kind"] == "list" and any(Path(r).is_relative_to(path) for r in roots[stage]):
                continue  # listing a folder on the way to a declared path (mkdir -p, a glob's parent)
            found.setdefault(stage, set()).add(path)
    return {stage: sorted(paths) for stage, paths in sorted(found.items())}
