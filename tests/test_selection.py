"""Shared selection by ratio and the training-free measures of a selection."""

from __future__ import annotations

import numpy as np
import pytest

from igds.selection import select_top
from igds.selection_metrics import auroc, on_task_recall


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
    with pytest.raises(ValueError, match="outside"):
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
    from igds.selection_metrics import n_tied

    assert n_tied([0.5, 0.5, 0.5, 1.0, 2.0, 2.0, np.nan, np.nan]) == 5
    assert n_tied([1.0, 2.0, 3.0]) == 0
