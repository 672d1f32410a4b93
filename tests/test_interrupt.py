"""SIGKILL in the middle of a stage (dvc and the stage's python, the whole process group):
no output DVC would accept is left, and `dvc repro` continues from the stage's last
checkpoint to exactly what an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, project_copy

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def dvc(work: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def kill_when(work: Path, stage: str, ready, timeout: float = 600) -> None:
    """Start `dvc repro <stage>` and SIGKILL its whole process group once `ready()` holds."""
    proc = subprocess.Popen(["dvc", "repro", "--single-item", stage], cwd=work, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"{stage} finished before it could be killed"
            assert time.monotonic() < deadline, f"{stage}: no checkpoint after {timeout} s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stale(work: Path) -> set[str]:
    """Stages `dvc status` reports as changed (their outputs missing or not matching dvc.lock)."""
    proc = subprocess.run(["dvc", "status", "--json"], cwd=work, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {s.split(":")[-1] for s in json.loads(proc.stdout)}


def test_killed_stages_leave_nothing_accepted_and_resume_from_their_checkpoint(tmp_path):
    work = project_copy(tmp_path / "clone", ROOT / "configs" / "ci.yaml")
    params = (work / "params.yaml").read_text()
    params = params.replace("  chunk_batches: 4", "  chunk_batches: 1")  # a chunk per batch of 16
    assert "chunk_batches: 1" in params
    (work / "params.yaml").write_text(params)
    dvc(work, "repro", "prepare")
    dvc(work, "repro", "code")  # the code manifests the --single-item runs below depend on
    dvc(work, "repro", "--glob", "input@*")  # and the models' input manifests (manifests/inputs/model)

    # SAE training: killed after its first checkpoint (step 50 of 150)
    state = work / ".resume/sae/sae-train-state.pt"
    kill_when(work, "sae", state.is_file)
    assert not (work / "sae").exists() and "sae" in stale(work)  # nothing half-written is accepted
    assert not list(work.glob("sae.tmp-*")) or not (work / "sae/cfg.json").exists()
    log = dvc(work, "repro", "--single-item", "sae", "-v")
    assert "resuming SAE training from step 50 of 150" in log, log[-3000:]
    assert not state.exists() and "sae" not in stale(work)
    resumed = (work / "sae/sae_weights.safetensors").read_bytes()
    dvc(work, "repro", "--single-item", "--force", "sae")  # the same stage uninterrupted
    assert (work / "sae/sae_weights.safetensors").read_bytes() == resumed

    # scoring: shard 0 of 2 (two chunks of one batch each) killed after its first chunk (every
    # score stage depends on the SAE and the features, whichever its method reads)
    dvc(work, "repro", "--single-item", "identify")
    chunks, out = work / ".resume/score-mixed-loss-shard-0-of-2", work / "scores/mixed/shards/loss/0.parquet"
    kill_when(work, "score-shard@mixed-loss-0", lambda: len(list(chunks.glob("chunk-*.parquet"))) >= 1)
    assert not out.exists() and "score-shard@mixed-loss-0" in stale(work)
    log = dvc(work, "repro", "--single-item", "score-shard@mixed-loss-0", "-v")
    assert "chunks were already scored" in log, log[-3000:]
    resumed = out.read_bytes()
    assert not chunks.exists()
    dvc(work, "repro", "--single-item", "--force", "score-shard@mixed-loss-0")
    assert out.read_bytes() == resumed


def test_a_full_disk_leaves_nothing_accepted_and_a_rerun_completes(tmp_path):
    """Fault injection: every open for writing of a report.json fails with ENOSPC (tests/reads'
    audit hook) while prepare writes its folder; the stage fails naming the cause, leaves no
    data/ (nor its temporary) and no dvc.lock entry, and the rerun on a disk with room completes."""
    from tests.reads import HERE

    work = project_copy(tmp_path / "clone", ROOT / "configs" / "ci.yaml")
    full = {**ENV, "IGDS_ENOSPC": "report.json", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(["dvc", "repro", "prepare"], cwd=work, capture_output=True, text=True, env=full)
    assert proc.returncode != 0 and "No space left on device" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not (work / "data").exists() and not list(work.glob(".data.tmp-*"))
    lock = work / "dvc.lock"
    assert not lock.exists() or "prepare" not in (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    dvc(work, "repro", "prepare")
    assert json.loads((work / "data" / "report.json").read_text())["read"] > 0
