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


def test_a_lock_dvc_was_interrupted_writing_is_set_aside_and_the_run_cache_restores_it(tmp_path):
    """DVC rewrites dvc.lock in place: a kill while it writes leaves half a lock, and DVC then
    refuses every command. `python -m pipelines.lock` moves it aside; `dvc repro` restores the
    stage from the run cache, without running it again."""
    import os

    work = project_copy(tmp_path / "work", ROOT / "configs" / "ci.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(["dvc", "repro", "prepare"], cwd=work, check=True, capture_output=True, env=env)
    whole = (work / "dvc.lock").read_text()
    before = (work / "data" / "report.json").read_bytes()
    cut = whole.index("size:", len(whole) // 2) + 2  # the write cut off half-way, inside a key
    (work / "dvc.lock").write_text(whole[:cut])
    broken = subprocess.run(["dvc", "status"], cwd=work, capture_output=True, text=True, env=env)
    assert broken.returncode != 0  # DVC stops on it
    check = run(work, "--check")
    assert check.returncode == 1 and "cannot be read" in check.stdout
    assert run(work).returncode == 0 and not (work / "dvc.lock").exists()
    assert [p.read_text() for p in work.glob("dvc.lock.broken-*")] == [whole[:cut]]  # kept, not deleted
    out = subprocess.run(["dvc", "repro", "prepare"], cwd=work, check=True, capture_output=True, text=True, env=env)
    assert "Running stage 'prepare'" not in out.stdout and "Stage 'prepare' is cached" in out.stdout, out.stdout
    assert (work / "data" / "report.json").read_bytes() == before
    assert "prepare" in yaml.safe_load((work / "dvc.lock").read_text())["stages"]
