"""pipelines.fanout on a local Ray with 2 workers: the stages that do not depend on each other run at
the same time, every stage is DVC's own (the lock is complete, nothing is left changed), a rerun
runs only what changed and what is downstream of it, and a failed stage stops its downstream
stages, not the others."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

STAMP = "import json, sys, time; s = time.time(); time.sleep(float(sys.argv[2])); " \
        "open(sys.argv[1], 'w').write(json.dumps([s, time.time()]))"


def _project(tmp_path, c_cmd: str | None = None):
    (tmp_path / "stamp.py").write_text(STAMP)
    stamp = f"{sys.executable} stamp.py"
    stages = {
        "a": {"cmd": f"{stamp} a.txt 0", "deps": ["stamp.py"], "outs": ["a.txt"]},
        "b": {"cmd": f"{stamp} b.txt 3", "deps": ["a.txt"], "outs": ["b.txt"]},
        "c": {"cmd": c_cmd or f"{stamp} c.txt 3", "deps": ["a.txt"], "outs": ["c.txt"]},
        "d": {"cmd": f"{stamp} d.txt 0", "deps": ["b.txt", "c.txt"], "outs": ["d.txt"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    if not (tmp_path / ".dvc").exists():
        for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
            subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def _changed(root) -> dict:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    return json.loads(out.stdout or "{}")


def test_independent_stages_run_side_by_side_and_dvc_records_each(tmp_path):
    from pipelines.fanout import fan_out, plan

    root = _project(tmp_path)
    order, needs = plan(root, None)
    assert order.index("a") < order.index("b") < order.index("d") and needs["d"] == ["b", "c"] and needs["a"] == []
    runs = {r["stage"]: r for r in fan_out(root, None, workers=2, address=None, cpus_per_stage=1, gpus_per_stage=0)}
    assert set(runs) == {"a", "b", "c", "d"}
    b, c = runs["b"], runs["c"]
    assert max(b["start"], c["start"]) < min(b["end"], c["end"])  # b and c overlapped
    assert runs["d"]["start"] >= max(b["end"], c["end"]) and min(b["start"], c["start"]) >= runs["a"]["end"]
    assert _changed(root) == {}  # every stage's lock entry is written
    assert plan(root, None)[0] == []  # nothing left to run

    _project(root, c_cmd=f"{sys.executable} stamp.py c.txt 1")  # c changed: c and what reads it
    assert plan(root, None)[0] == ["c", "d"]
    assert plan(root, ["b"])[0] == []  # b and what it needs are up to date


def test_a_failed_stage_stops_what_is_downstream_of_it_and_says_so(tmp_path):
    from pipelines.fanout import fan_out

    root = _project(tmp_path, c_cmd=f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.raises(SystemExit, match=r"(?s)2 of 4 stages did not run to the end \(c, d\).*stage c failed.*exited with 3"):
        fan_out(root, None, workers=2, address=None, cpus_per_stage=1, gpus_per_stage=0)
    assert (root / "b.txt").is_file() and not (root / "d.txt").exists()
    assert set(_changed(root)) == {"c", "d"}  # b was recorded; a rerun continues with c
    with pytest.raises(SystemExit, match="no stage nope"):
        fan_out(root, ["nope"], workers=2, address=None, cpus_per_stage=1, gpus_per_stage=0)
