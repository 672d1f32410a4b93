"""random: a seeded uniform sample of the pool (the score is a seeded uniform draw), drawn
anew for each training seed, so random's intervals carry selection variance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from igds.core.data import Record
from igds.core.registry import SelectorResult, register


@dataclass(frozen=True)
class RandomParams:
    seed: int | None = None  # the draw's own seed (null: the global `seed`); changes only random's runs


@register("random", RandomParams)
class RandomSelector:
    def __init__(self, params: RandomParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        seed = ctx.seed if self.params.seed is None else self.params.seed
        return SelectorResult(np.random.default_rng([seed, _SALT]).random(len(pool)))

    def draw(self, frame, seed: int, run_seed: int) -> np.ndarray:
        """Training seed `run_seed`'s uniform draw."""
        seed = seed if self.params.seed is None else self.params.seed
        return np.random.default_rng([seed, run_seed, _SALT]).random(len(frame))


_SALT = 0x52414E44  # "RAND"
