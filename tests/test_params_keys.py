"""The repo's settings DVC reads: no param key its run cache drops, and analytics off.

DVC's run-cache hash leaves out every key named `size` or `nfiles`, even under params
(treeverse/dvc#10296): changing such a param makes `dvc repro` restore the old outputs as
"cached". So no profile may use those names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.common import subprocess_env
from igds.params import read_params
from tests.conftest import ROOT

DROPPED = ("size", "nfiles")  # keys DVC's run cache drops from the hash
PROFILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def dropped_keys(value: Any, where: str = "") -> list[str]:
    """The paths (data.splits.pool.size, x[0].nfiles) of every key named in DROPPED, nested anywhere."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in DROPPED:
                found.append(path)
            found += dropped_keys(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += dropped_keys(item, f"{where}[{i}]")
    return found


def test_the_scan_finds_a_planted_key_anywhere():
    planted = {"data": {"splits": {"pool": {"size": 3, "n": 4}}}, "runs": [{"ok": 1}, {"nfiles": 2}], "sizes": 1}
    assert dropped_keys(planted) == ["data.splits.pool.size", "runs[1].nfiles"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_profile_has_a_key_dvc_run_cache_drops(profile: Path):
    keys = dropped_keys(read_params(profile))
    assert keys == [], f"{profile.relative_to(ROOT)}: {', '.join(keys)}: DVC's run cache ignores a key named " \
                       f"{' or '.join(DROPPED)} (treeverse/dvc#10296); rename it (e.g. to n)"


def test_every_profile_is_scanned():
    assert {p.relative_to(ROOT).as_posix() for p in PROFILES} >= {
        "params.yaml", "configs/ci.yaml", "configs/cpu-bench.yaml", "configs/gpu-paper.yaml"}


def test_dvc_analytics_are_off_in_the_repo_config():
    """The default profile runs offline: no dvc command of this repo phones home."""
    proc = subprocess.run(["dvc", "config", "--project", "core.analytics"], cwd=ROOT, capture_output=True, text=True,
                          env=subprocess_env(), check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "false", proc.stdout + proc.stderr


def stage_param_keys() -> set[str]:
    """Every fixed params key a dvc.yaml stage declares (interpolated ones like methods.${item.method} left out)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    keys = set()
    for stage in stages.values():
        for entry in stage.get("do", stage).get("params", []):
            if isinstance(entry, str) and "${" not in entry:
                keys.add(entry)
    return keys


def has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem if p.parent != ROOT else "default")
def test_every_profile_has_every_param_a_stage_declares(profile):
    """DVC refuses to run a stage whose declared param is missing from params.yaml ('Parameters
    ... are missing'): a profile's whole params (its overrides on params.yaml) carry every declared key."""
    keys = stage_param_keys()
    assert "finetune.train" in keys and "finetune.train.kind" in keys and "seed" in keys
    raw = read_params(profile)
    assert [k for k in sorted(keys) if not has_key(raw, k)] == []
