"""Shared selection by ratio and the training-free measures of a selection."""

from __future__ import annotations

import numpy as np
import pytest

from igds.core.selection import select_top
from igds.core.selection_metrics import auroc, on_task_recall


def test_select_top_keeps_the_highest_and_breaks_ties_by_seed():
    ids = [f"id{i}" for i in range(10)]
    scores = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5], dtype=float)
    assert select_top(ids, scores, 0.3, seed=0) == ["id1", "id3", "id5"]
    assert len(select_top(ids, scores, 0.25, seed=0)) == 3  # ceil
    ties = np.zeros(10)
    a, b = select_top(ids, ties, 0.5, seed=0), select_top(ids, ties, 0.5, seed=0)
    assert a == b
    assert any(select_top(ids, ties, 0.5, seed=s) != a for s in range(1, 6))
    with_nan = scores.copy()
    with_nan[1] = np.nan
    assert "id1" not in select_top(ids, with_nan, 0.9, seed=0)
    with pytest.raises(ValueError, match="is not a share in"):
        select_top(ids, scores, 0.0, seed=0)


def test_auroc_and_recall():
    labels = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert auroc(np.array([5, 4, 3, 2, 1.0]), labels) == 1.0
    assert auroc(np.array([1, 2, 3, 4, 5.0]), labels) == 0.0
    assert auroc(np.ones(5), labels) == 0.5
    assert auroc(np.array([3, 1, 2, 0, 0.0]), labels) == pytest.approx(5 / 6)
    assert on_task_recall(["a", "b"], {"a", "c"}) == 0.5


def test_auroc_matches_scikit_learn_with_ties_and_infinities():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        labels = rng.random(n) < 0.4
        labels[:2] = [True, False]  # both classes present
        scores = rng.integers(0, 6, n).astype(float)  # many ties
        scores[rng.random(n) < 0.1] = -np.inf  # unscored examples rank last (score stage)
        finite = np.where(np.isinf(scores), -1e9, scores)  # sklearn does not take -inf
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, finite), abs=1e-12)


def test_n_tied_counts_every_example_that_shares_its_score():
    from igds.core.selection_metrics import n_tied

    assert n_tied([0.5, 0.5, 0.5, 1.0, 2.0, 2.0, np.nan, np.nan]) == 5
    assert n_tied([1.0, 2.0, 3.0]) == 0


def _select(tmp_path, method: str, seed: int, scores) -> tuple[list[str], dict]:
    """pipelines.select on a planted pool and scores file; (kept ids, metrics)."""
    import dataclasses
    import json
    import subprocess
    import sys

    import pandas as pd

    from igds.core.data import make_record
    from tests.conftest import ROOT

    pool = [make_record(f"q{i}", "", f"a{i}", "t" if i % 2 else "u", "s") for i in range(40)]
    (tmp_path / "data/pools").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data/pools/mixed.jsonl").write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in pool))
    (tmp_path / "scores").mkdir(exist_ok=True)
    frame = pd.DataFrame({"id": [r.id for r in pool], "score": scores})
    for j in range(3):  # k-center's cached embeddings
        frame[f"h{j}"] = np.random.default_rng(j).normal(size=len(pool))
    frame.to_parquet(tmp_path / f"scores/{method}.parquet")
    proc = subprocess.run([sys.executable, "-m", "pipelines.subset", "--params", str(ROOT / "configs/ci.yaml"),
                           "--method", method, "--ratio", "0.5", "--seed", str(seed), "--data", str(tmp_path / "data"),
                           "--scores", str(tmp_path / "scores"), "--out", str(tmp_path / "subsets"),
                           "--metrics", str(tmp_path / "metrics")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    kept = [json.loads(line)["id"] for line in (tmp_path / f"subsets/mixed/{method}-0.5-s{seed}.jsonl").read_text().splitlines()]
    return kept, json.loads((tmp_path / f"metrics/mixed/select-{method}-0.5-s{seed}.json").read_text())


@pytest.mark.parametrize("method, varies", [("random", True), ("kcenter", True), ("loss", False), ("less", False)])
def test_a_stochastic_selector_draws_its_selection_per_training_seed(tmp_path, method, varies):
    scores = np.linspace(0.0, 1.0, 40)
    (a, meta_a), (b, meta_b) = (_select(tmp_path, method, s, scores) for s in (0, 1))
    assert len(a) == len(b) == 20
    assert (a != b) == varies
    assert meta_a["seed"] == 0 and meta_b["seed"] == 1
    assert (meta_a["selection_seed"], meta_b["selection_seed"]) == ((0, 1) if varies else (None, None))
    assert meta_a["selection_randomness"] == {"random": "per_seed", "kcenter": "per_seed", "loss": "none",
                                              "less": "fixed"}[method]
    assert _select(tmp_path, method, 1, scores)[0] == b  # a seed's draw is reproducible
