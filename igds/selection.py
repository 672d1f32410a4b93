"""The Selector protocol and registry, selection by ratio (shared by IGDS and every
baseline), and the training-free measures of a selection on a mixed pool (on-task recall,
AUROC of the scores)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from igds.data import Record


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


def scores_from_order(order: Sequence[int], n: int) -> np.ndarray:
    """Scores that make select_top keep a greedy method's prefix: n - position in `order`."""
    scores = np.empty(n)
    scores[np.asarray(order)] = n - np.arange(n)
    return scores


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


# --- the Selector protocol and its registry -----------------------------------------------
# A selector scores every pool example (higher = keep); selection by ratio above is shared.
# Each method is one module with a params dataclass and an `@register(name, Params)` class.



@dataclasses.dataclass(frozen=True)
class NoParams:
    """For a method without parameters."""


@dataclasses.dataclass
class ScoringContext:
    """What a selector may use besides the pool. The eval split is deliberately absent."""

    seed: int
    target: list[Record]  # solved target-task examples (the prior split): LESS's validation set
    model_name: str = "smollm2-135m-instruct"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 16
    max_len: int = 384
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)  # e.g. sae/, features/
    loader: Callable[[], Any] | None = None  # returns a LoadedModel; default: igds.models.load_model
    _loaded: Any = None
    _tokens: dict = dataclasses.field(default_factory=dict)  # record id -> (input ids, response start)

    def model(self):
        """The scoring model and tokenizer (loaded once, on first use)."""
        if self._loaded is None:
            if self.loader is not None:
                self._loaded = self.loader()
            else:
                from igds.models import load_model  # noqa: PLC0415

                self._loaded = load_model(self.model_name, self.device, self.dtype)
        return self._loaded

    def tokenized(self, records: list[Record]):
        """`records` in chat format, tokenised once per context (chunks and shards of a pool
        reuse the ids the length ordering computed)."""
        from igds.activations import Tokenized, tokenize_records  # noqa: PLC0415

        todo = [r for r in records if r.id not in self._tokens]
        if todo:
            tok = tokenize_records(self.model().tokenizer, todo, self.max_len)
            self._tokens.update(zip((r.id for r in todo), zip(tok.input_ids, tok.response_start)))
        pairs = [self._tokens[r.id] for r in records]
        return Tokenized([ids for ids, _ in pairs], [start for _, start in pairs])

    def rng(self, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *salt])


class Selector(Protocol):
    name: ClassVar[str]

    def score(self, pool: list[Record], ctx: ScoringContext) -> np.ndarray:
        """One score per pool example, in pool order; higher = keep."""
        ...


SELECTORS: dict[str, tuple[type, type]] = {}  # name -> (selector class, params dataclass)


def register(name: str, params: type = NoParams) -> Callable[[type], type]:
    """Class decorator: make a selector available by `name` with its params dataclass."""
    def decorate(cls: type) -> type:
        if name in SELECTORS:
            raise ValueError(f"selector '{name}' is registered twice")
        cls.name = name
        SELECTORS[name] = (cls, params)
        return cls
    return decorate


def available() -> list[str]:
    import baselines  # noqa: F401, PLC0415  (importing registers every baseline)
    import igds.resonance  # noqa: F401, PLC0415  (registers igds)

    return sorted(SELECTORS)


def build_selector(name: str, raw_params: dict | None = None) -> Selector:
    """An instance of the selector `name`, its params validated from params.yaml's methods.<name>."""
    from igds.config import ConfigError, from_dict  # noqa: PLC0415

    if name not in available():
        raise ConfigError(f"params.yaml: unknown method '{name}'; available: {', '.join(available())}")
    cls, params_cls = SELECTORS[name]
    return cls(from_dict(params_cls, raw_params or {}, f"methods.{name}"))
