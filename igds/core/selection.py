"""Selection by ratio, shared by IGDS and every baseline: the top ceil(ratio * n) examples
by score, ties broken by a seeded hash of the id, so no method repeats it."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from igds.core.config import RATIO_ALLOWED, ratio_ok


def tie_key(seed: int, example_id: str) -> int:
    """A seeded hash of the id: breaks score ties the same way in every run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big")


def select_top(ids: Sequence[str], scores: np.ndarray, ratio: float, seed: int) -> list[str]:
    """The top ceil(ratio * n) ids by score (higher = keep), ties broken by a seeded hash.

    NaN scores (an example a method could not score) rank last.
    """
    if not ratio_ok(ratio):
        raise ValueError(f"ratio {ratio} is not {RATIO_ALLOWED}")
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    n_keep = math.ceil(ratio * len(ids))
    return [ids[i] for i in ranking(ids, scores, seed)[:n_keep]]


def ranking(ids: Sequence[str], scores, seed: int, descending: bool = True) -> list[int]:
    """Positions of `ids` by score (highest first, or lowest with descending=False), NaN last,
    ties broken by the seeded hash of the id: the order select_top and the recipes keep by."""
    scores = np.asarray(scores, dtype=float)
    sign = -1.0 if descending else 1.0
    return sorted(range(len(ids)), key=lambda i: (
        math.isnan(scores[i]), sign * scores[i] if not math.isnan(scores[i]) else 0.0, tie_key(seed, ids[i])))


def scores_from_order(order: Sequence[int], n: int) -> np.ndarray:
    """Scores that make select_top keep a greedy method's prefix: n - position in `order`."""
    scores = np.empty(n)
    scores[np.asarray(order)] = n - np.arange(n)
    return scores
