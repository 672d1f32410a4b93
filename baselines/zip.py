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
instruction and input with "\n\n"). The reference compresses each whole record as JSON; here
that would include the record's `id` and its `source`, which names the damage of a degraded
example (" degraded:<kind>") and the task it came from: a label no selector may read. So only
the text a model is trained on is compressed; a set's bytes are its examples' UTF-8 texts, each
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
from dataclasses import dataclass

from igds.core.config import check
from igds.core.data import Record
from igds.core.diversity import example_bytes, zip_order
from igds.core.registry import SelectorResult, register
from igds.core.selection import scores_from_order

log = logging.getLogger(__name__)


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
