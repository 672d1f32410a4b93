"""Every stage end to end on the real default model (CI profile sizes): dvc repro through
sae, identify, score@<method> and select@<method> for every method; a second repro does
nothing and a new ratio re-runs only the select stages."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

from tests.conftest import ROOT, project_copy

pytestmark = pytest.mark.slow


def dvc(work, *args):
    proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_igds_stages_end_to_end(tmp_path):
    work = project_copy(tmp_path / "clone", ROOT / "configs" / "ci" / "params.yaml")
    dvc(work, "repro")

    sae = json.loads((work / "results/metrics/sae.json").read_text())
    assert sae["l0"] == pytest.approx(32.0) and 0.5 < sae["explained_variance"] <= 1.0
    assert 0.0 < sae["ce_loss_recovered"] <= 1.0 and (work / "sae" / "cfg.json").is_file()

    features = json.loads((work / "features/features.json").read_text())
    assert features["ranking"] and all(
        f["freq_prior"] - f["freq_general"] >= 0.2 for f in features["features"])
    assert 0.0 <= features["stability"]["jaccard_top_n"] <= 1.0
    assert "⟦" in (work / "features/cards.md").read_text()  # firing tokens are marked

    pool = [json.loads(line) for line in (work / "data/pool.jsonl").read_text().splitlines()]
    scores = pd.read_parquet(work / "scores/igds.parquet")
    assert list(scores["id"]) == [r["id"] for r in pool] and scores["score"].notna().all()
    metrics = json.loads((work / "results/metrics/score-igds.json").read_text())
    assert metrics["chosen_features"] == features["ranking"][:1] and 0.0 <= metrics["auroc_on_task"] <= 1.0
    subset = [json.loads(line)["id"] for line in (work / "subsets/igds-0.5.jsonl").read_text().splitlines()]
    assert len(subset) == (len(pool) + 1) // 2
    top = set(scores.sort_values("score", ascending=False)["id"][:len(subset) - 1])
    assert top <= set(subset)  # the subset is the top of the scores
    select = json.loads((work / "results/metrics/select-igds.json").read_text())
    assert 0.0 <= select["on_task_recall"] <= 1.0

    methods = ["igds", "full", "random", "loss", "ifd", "zip", "kcenter", "less"]
    for method in methods:
        m = json.loads((work / f"results/metrics/score-{method}.json").read_text())
        assert m["wall_s"] >= 0 and m["peak_rss_bytes"] > 0, method
        assert (work / f"subsets/{method}-0.5.jsonl").is_file(), method
    n_full = len((work / "subsets/full-0.5.jsonl").read_text().splitlines())
    assert n_full == len(pool)  # full keeps everything

    assert "Running stage" not in dvc(work, "repro")  # nothing changed, nothing runs
    params = (work / "params.yaml").read_text().replace("ratio: 0.5", "ratio: 0.25")
    (work / "params.yaml").write_text(params)
    out = dvc(work, "repro")
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert ran == sorted(f"select@{m}" for m in methods), ran
    assert (work / "subsets/igds-0.25.jsonl").is_file()
