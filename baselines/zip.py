"""zip: the Entropy Law paper's greedy diversity selection (Yin et al. 2024, "Entropy Law:
The Story Behind Data Compression and LLM Performance", Algorithm 1 "ZIP").

The subset grows in rounds by the examples that keep its zlib compression ratio (raw bytes /
compressed bytes: higher = more redundant) lowest. Each round has three stages:
1. global: the k1 unselected examples with the lowest "global status" (initially each
   example's own compression ratio);
2. local coarse: the ratio of (selected set + example) for each of the k1; these ratios
   become their new status; keep the k2 lowest;
3. local fine: from the k2, pick k3 one at a time, each time the one whose addition keeps
   the ratio of this round's picks lowest; add them to the selected set.

An example's text is `record.prompt + "\n\n" + record.output` (Record.prompt already joins
instruction and input with "\n\n"); a set's bytes are its examples' UTF-8 texts, each
followed by "\n\n", concatenated in selection order. zlib only sees 32 KB back, so an
example can only look redundant against the last ~32 KB of the selected set (as in the
reference implementation, which also uses plain zlib).

Stage 3 compares this round's picks only, as the reference implementation does
(github.com/USTC-StarTeam/ZIP, ZIP.py: `anchor_data=[]`); `stage3_with_selected` appends
them to the selected set instead. Where the reference departs from what it evidently
intends, this follows the intent:
- the stage-2 candidates not picked in stage 3 stay in the pool with their updated status
  (the reference gives all k2 the "taken" status 1e6 though it removes only the k3 picks);
- stage 1 draws from unselected examples only (the reference can re-draw selected ones
  once k1 exceeds the unselected count), and the last round stops at the budget instead
  of overshooting by up to k3 - 1.

The greedy order is returned as scores: score = n - position, so select_top at any ratio
keeps exactly the greedy prefix.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from igds.config import check
from igds.data import Record
from igds.registry import SelectorResult, register
from igds.selection import scores_from_order

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ZipParams:
    # The paper's defaults (k1=10000, k2=200, k3=100) are for a ~300k-example pool; these
    # keep the three stages meaningful on a pool of a few hundred examples.
    k1: int = 200  # stage 1: candidates taken by lowest global status per round
    k2: int = 20  # stage 2: candidates kept by lowest ratio of (selected + example)
    k3: int = 10  # stage 3: examples added per round, one at a time
    level: int = 9  # zlib compression level (the reference implementation uses 9)
    max_select: int | None = None  # stop the greedy here (None: order the whole pool)
    # Stage 3 measures this round's picks alone, as the reference implementation does;
    # true: this round's picks appended to the selected set.
    stage3_with_selected: bool = False

    def __post_init__(self) -> None:
        check(self.k1 >= 1, "k1", self.k1, "a positive integer")
        check(1 <= self.k2 <= self.k1, "k2", self.k2, f"an integer in [1, k1 = {self.k1}]")
        check(1 <= self.k3 <= self.k2, "k3", self.k3, f"an integer in [1, k2 = {self.k2}]")
        check(1 <= self.level <= 9, "level", self.level, "a zlib level in [1, 9]")
        check(self.max_select is None or self.max_select >= 1, "max_select", self.max_select,
              "a positive integer or null (the whole pool)")


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


@register("zip", ZipParams)
class ZipSelector:
    def __init__(self, params: ZipParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        p = self.params
        texts = [example_bytes(r) for r in pool]
        order, stats = zip_order(texts, p.k1, p.k2, p.k3, p.level, p.max_select, p.stage3_with_selected)
        info = {"n_bytes": sum(map(len, texts)), **stats}
        log.info("zip: ordered %d examples in %d rounds (%d compressions)", len(pool), stats["n_rounds"],
                 stats["n_compressions"])
        return SelectorResult(scores_from_order(order, len(pool)), info)
