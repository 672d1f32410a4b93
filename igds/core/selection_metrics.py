"""Training-free measures of a selection on a mixed pool, where each record's task label
(kept for analysis only) says whether it is on-task: on-task recall of a subset, and the
AUROC of the scores that made it, and how many scores are tied."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from igds.core.data import Record
from igds.core.data.degrade import degradation


def on_task_recall(selected: Sequence[str], on_task_ids: set[str]) -> float:
    """Share of the pool's on-task examples that the selection keeps."""
    return len(set(selected) & on_task_ids) / len(on_task_ids) if on_task_ids else float("nan")


def degraded_kept(pool: Sequence[Record], selected: Sequence[str]) -> dict:
    """On a within-task pool (igds.core.data.degrade): the share of the pool's degraded examples
    the selection keeps, per kind and in all, and the degraded share of the selection and of the
    pool. Empty
    when the pool has no degraded example."""
    kinds = {r.id: k for r in pool if (k := degradation(r)) is not None}
    if not kinds:
        return {}
    kept = [kinds[i] for i in selected if i in kinds]
    in_pool, in_kept = Counter(kinds.values()), Counter(kept)
    return {"degraded_kept": round(len(kept) / len(kinds), 6),
            "degraded_share_pool": round(len(kinds) / len(pool), 6),
            "degraded_share_selected": round(len(kept) / len(selected), 6) if selected else float("nan"),
            "degraded_kept_by_kind": {k: round(in_kept[k] / n, 6) for k, n in sorted(in_pool.items())}}


def selection_summary(pool: Sequence[Record], kept: Sequence[str], target_task: str | None) -> dict:
    """What the select and recipe stages record of a subset: sizes, on-task recall and share,
    and on a within-task pool the degraded share kept (degraded_kept)."""
    on_task = {r.id for r in pool if target_task is not None and r.task == target_task}
    return {"n_pool": len(pool), "n_selected": len(kept),
            "on_task_recall": round(on_task_recall(kept, on_task), 6),
            "on_task_share_selected": round(len(set(kept) & on_task) / len(kept), 6) if kept else float("nan"),
            **degraded_kept(pool, kept)}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random on-task example outscores a random off-task one (ties 1/2):
    the Mann-Whitney U of the on-task scores over n_pos * n_neg, from average ranks."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def n_tied(scores) -> int:
    """Scored examples (NaN left out) whose score another example shares: the ones whose order
    the seeded hash of the id decides, not the method."""
    values = np.asarray(scores, dtype=float)
    values = values[~np.isnan(values)]
    _, counts = np.unique(values, return_counts=True)
    return int(counts[counts > 1].sum())
