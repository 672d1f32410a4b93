"""The recipe-search stage (pipelines.search) on a tiny model: proxy fine-tunes scored on the
val split, its outputs, and a search SIGKILLed mid-way that, run again, ends with the study an
uninterrupted run of the same seed ends with."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from igds.artifacts import write_jsonl
from tests.conftest import ROOT, build_char_tokenizer, build_tiny_model, task


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    model = root / "tiny"
    build_tiny_model().save_pretrained(model)
    build_char_tokenizer().save_pretrained(model)
    pool, val = [task(i) for i in range(24)], [task(100 + i) for i in range(6)]
    write_jsonl(root / "data/pools/mixed.jsonl", (dataclasses.asdict(r) for r in pool))
    write_jsonl(root / "data/val.jsonl", (dataclasses.asdict(r) for r in val))
    raw = yaml.safe_load((ROOT / "configs/ci/params.yaml").read_text())
    raw["model"]["name"] = str(model)
    raw["sae"]["layer"] = 2
    raw["finetune"].update(max_len=96, batch_size=4)
    raw["scoring"].update(max_len=96, batch_size=4)
    raw["search"].update(solvers=["local"], seeds=[0], pools=["mixed"], budget=5, warmup=2, candidates=6)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(0)
    ids = [r.id for r in pool]
    (root / "scores").mkdir()
    for method in raw["methods"]:
        frame = pd.DataFrame({"id": ids, "score": rng.random(len(ids))})
        if method == "igds":
            for f in range(6):
                frame[f"a{f}"] = rng.random(len(ids))
        if method == "kcenter":
            for j in range(4):
                frame[f"h{j}"] = rng.normal(size=len(ids))
        frame.to_parquet(root / "scores" / f"{method}.parquet")
    return root


def command(root, out):
    return [sys.executable, "-m", "pipelines.search", "--params", str(root / "params.yaml"), "--pool", "mixed",
            "--solver", "local", "--seed", "0", "--data", str(root / "data"), "--scores", str(root / "scores"),
            "--out", str(out)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def finished(out):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    return [(t.params, t.value, t.user_attrs["key"]) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_the_search_stage_writes_its_study_and_resumes_after_sigkill(project):
    whole = project / "whole"
    proc = subprocess.run(command(project, whole), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["evaluated"] == 5 and summary["final_n"] == 12 and summary["metric"] == "answer_loglik"
    rows = [json.loads(line) for line in (whole / "evaluated.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and len({r["key"] for r in rows}) == 5 and all(r["value"] < 0 for r in rows)
    assert [r["best_so_far"] for r in rows] == list(np.maximum.accumulate([r["value"] for r in rows]))
    best = yaml.safe_load((whole / "best.yaml").read_text())
    assert best["process"][-1].keys() == {"fill"} and max(r["value"] for r in rows) == summary["best_value"]

    killed = project / "killed"
    running = subprocess.Popen(command(project, killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and running.poll() is None:
        if (killed / "study.journal").exists() and len(finished(killed)) >= 2:
            break
        time.sleep(0.05)
    assert running.poll() is None, "the search ended before it could be killed"
    running.send_signal(signal.SIGKILL)
    running.wait()
    assert 2 <= len(finished(killed)) < 5
    proc = subprocess.run(command(project, killed), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert finished(killed) == finished(whole)
    assert (killed / "best.yaml").read_text() == (whole / "best.yaml").read_text()
