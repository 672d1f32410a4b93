"""Selection by ratio, shared by IGDS and every baseline, and the training-free measures
of a selection on a mixed pool (on-task recall, AUROC of the scores)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np


def tie_key(seed: int, example_id: str) -> int:
    """A seeded hash of the id: breaks score ties the same way in every run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big")


def select_top(ids: Sequence[str], scores: np.ndarray, ratio: float, seed: int) -> list[str]:
    """The top ceil(ratio * n) ids by score (higher = keep), ties broken by a seeded hash.

    NaN scores (an example a method could not score) rank last.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio {ratio} is outside (0, 1]")
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    n_keep = math.ceil(ratio * len(ids))
    scores = np.asarray(scores, dtype=float)
    order = sorted(range(len(ids)), key=lambda i: (
        math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0.0, tie_key(seed, ids[i])))
    return [ids[i] for i in order[:n_keep]]


def on_task_recall(selected: Sequence[str], on_task_ids: set[str]) -> float:
    """Share of the pool's on-task examples that the selection keeps."""
    return len(set(selected) & on_task_ids) / len(on_task_ids) if on_task_ids else float("nan")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random on-task example outscores a random off-task one (ties 1/2)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
