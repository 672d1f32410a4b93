"""full: train on the whole pool (the ratio does not apply)."""

from __future__ import annotations

import numpy as np

from igds.core.data import Record
from igds.core.registry import SelectorResult, register


@register("full")
class FullSelector:
    keeps_all = True  # select keeps every example whatever the ratio says

    def __init__(self, params):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        return SelectorResult(np.ones(len(pool)))
