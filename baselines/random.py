"""random: a seeded uniform sample of the pool (the score is a seeded uniform draw)."""

from __future__ import annotations

import numpy as np

from igds.data import Record
from igds.selection import ScoringContext, register


@register("random")
class RandomSelector:
    def __init__(self, params):
        self.params = params

    def score(self, pool: list[Record], ctx: ScoringContext) -> np.ndarray:
        return ctx.rng(0x52414E44).random(len(pool))  # salt: "RAND"
