"""Greedy diversity orders over a set of examples, shared by the diversity baselines
(baselines.zip, baselines.kcenter) and the recipes' `diversify` operator (igds.recipes.recipe).

- `zip_order`: the Entropy Law paper's ZIP (Yin et al. 2024, Algorithm 1): the subset grows in
  rounds by the examples that keep its zlib compression ratio lowest (baselines/zip.py has
  the algorithm's description and where it follows the reference implementation's intent).
- `kcenter_order`: k-center greedy (Sener & Savarese 2018, Algorithm 1) on embeddings.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from igds.core.data import Record

SEPARATOR = "\n\n"


def example_bytes(record: Record) -> bytes:
    """What ZIP compresses for one example (see the module docstring)."""
    return f"{record.prompt}{SEPARATOR}{record.output}{SEPARATOR}".encode()


class CompressedPrefix:
    """A zlib stream fed a set's bytes once; `ratio_with(x)` compresses set + x by branching
    off a copy of the stream, so the set is never recompressed. Exact: the stream's output
    does not depend on how its input is chunked, so this equals zlib.compress(set + x)."""

    def __init__(self, level: int):
        self._stream = zlib.compressobj(level)
        self.raw_bytes = 0
        self.compressed_bytes = 0  # output the stream has emitted so far

    def add(self, data: bytes) -> None:
        self.compressed_bytes += len(self._stream.compress(data))
        self.raw_bytes += len(data)

    def copy(self) -> CompressedPrefix:
        twin = CompressedPrefix.__new__(CompressedPrefix)
        twin._stream = self._stream.copy()
        twin.raw_bytes, twin.compressed_bytes = self.raw_bytes, self.compressed_bytes
        return twin

    def ratio_with(self, data: bytes) -> float:
        """Compression ratio of (this set + data): raw bytes / compressed bytes."""
        branch = self._stream.copy()
        n_out = self.compressed_bytes + len(branch.compress(data)) + len(branch.flush())
        return (self.raw_bytes + len(data)) / n_out


def compression_ratio(data: bytes, level: int = 9) -> float:
    return len(data) / len(zlib.compress(data, level))


def zip_order(texts: Sequence[bytes], k1: int, k2: int, k3: int, level: int = 9,
              max_select: int | None = None, stage3_with_selected: bool = False) -> tuple[np.ndarray, dict]:
    """ZIP's greedy selection order over `texts`: a permutation of range(n) whose first
    min(max_select, n) entries are the greedy picks in order; the rest follow by ascending
    final global status. Ties go to the earlier text. Also returns run statistics."""
    n = len(texts)
    budget = n if max_select is None else min(max_select, n)
    status = np.array([compression_ratio(t, level) for t in texts])  # global status
    unselected = np.ones(n, dtype=bool)
    selected = CompressedPrefix(level)
    order: list[int] = []
    n_rounds, n_compressions = 0, n
    with tqdm(total=budget, desc="zip", leave=False) as bar:
        while len(order) < budget:
            n_rounds += 1
            # Stage 1 (global selection): lowest status among the unselected.
            live = np.flatnonzero(unselected)
            stage1 = live[np.argsort(status[live], kind="stable")[:k1]]
            # Stage 2 (local coarse-grained): redundancy of each candidate with the selected set.
            ratios = np.array([selected.ratio_with(texts[i]) for i in stage1])
            n_compressions += len(stage1)
            status[stage1] = ratios
            stage2 = list(stage1[np.argsort(ratios, kind="stable")[:k2]])
            # Stage 3 (local fine-grained): greedy within the round.
            picks = selected.copy() if stage3_with_selected else CompressedPrefix(level)
            round_picks = []
            for _ in range(min(k3, budget - len(order), len(stage2))):
                round_ratios = [picks.ratio_with(texts[i]) for i in stage2]
                n_compressions += len(stage2)
                best = stage2.pop(int(np.argmin(round_ratios)))
                picks.add(texts[best])
                round_picks.append(best)
            if stage3_with_selected:
                selected = picks  # already the selected set followed by this round's picks
            else:
                for i in round_picks:
                    selected.add(texts[i])
            order += round_picks
            unselected[round_picks] = False
            bar.update(len(round_picks))
    rest = np.flatnonzero(unselected)
    rest = rest[np.argsort(status[rest], kind="stable")]
    stats = {"n_rounds": n_rounds, "n_compressions": n_compressions}
    return np.concatenate([np.asarray(order, dtype=np.int64), rest]), stats


def kcenter_order(x: np.ndarray, first: int, max_select: int | None = None) -> np.ndarray:
    """k-center greedy order over the rows of x [n, d]: a permutation of range(n) whose first
    min(max_select, n) entries are the centers in the order chosen; the rest follow by
    descending distance to their nearest center. Ties go to the lowest index.

    A running min-distance vector keeps this O(n * m * d) time and O(n) extra memory.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    m = n if max_select is None else min(max_select, n)
    min_sq_dist = np.full(n, np.inf)  # squared distance to the nearest chosen center
    order = np.empty(n, dtype=np.int64)
    center = first
    for pos in range(m):
        order[pos] = center
        np.minimum(min_sq_dist, ((x - x[center]) ** 2).sum(1), out=min_sq_dist)
        min_sq_dist[center] = -np.inf  # a center never comes back (min keeps it at -inf)
        center = int(np.argmax(min_sq_dist))
    rest = np.flatnonzero(min_sq_dist > -np.inf) if m < n else np.empty(0, dtype=np.int64)
    order[m:] = rest[np.argsort(-min_sq_dist[rest], kind="stable")]
    return order
