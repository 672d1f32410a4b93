"""pipelines.lock: dvc.lock's entries of stages dvc.yaml no longer has are dropped, the rest kept."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import ROOT, project_copy


def run(work, *args):
    return subprocess.run([sys.executable, "-m", "pipelines.lock", *args], cwd=work, capture_output=True, text=True)


def test_stale_lock_entries_are_reported_then_dropped_and_live_ones_kept(tmp_path):
    work = project_copy(tmp_path / "work", ROOT / "configs" / "ci.yaml")
    live = {"cmd": "python -m pipelines.prepare --out data", "outs": [{"path": "data", "md5": "0" * 32 + ".dir"}]}
    stale = {"cmd": "python -m pipelines.finetune --method igds", "outs": [{"path": "checkpoints/igds-0.5-s0"}]}
    lock = {"schema": "2.0", "stages": {"prepare": live, "finetune@igds-0.5-0": stale,
                                        "subset@within-igds-0.5-s0": live}}
    (work / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    check = run(work, "--check")
    assert check.returncode == 1 and "1 of 3 entries" in check.stdout and "finetune@igds-0.5-0" in check.stdout
    assert yaml.safe_load((work / "dvc.lock").read_text()) == lock  # --check changes nothing

    assert run(work).returncode == 0
    assert yaml.safe_load((work / "dvc.lock").read_text()) == {
        "schema": "2.0", "stages": {"prepare": live, "subset@within-igds-0.5-s0": live}}
    assert run(work, "--check").returncode == 0
    status = subprocess.run(["dvc", "status", "--json"], cwd=work, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr  # DVC reads the rewritten lock
