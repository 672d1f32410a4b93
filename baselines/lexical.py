"""lexical: the surface-text baseline. A candidate's TF-IDF similarity to the target task's
examples (the prior split), with no model at all: what a selector gets from the words alone,
so the table shows what IGDS's SAE features add over them.

Each example's text is its prompt and response. A scikit-learn TfidfVectorizer is fitted on
the pool and the prior together (word unigrams and bigrams by default, sublinear term
frequency, L2-normalised rows), so a candidate's cosine similarity to each prior example is a
dot product. The score aggregates those similarities: `mean` (similarity to the prior as a
whole), `max` (to its nearest example), or `round_robin` (rds's selection rule on these
similarities: the same rule over words instead of hidden states).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from igds.core.config import check
from igds.core.data import Record
from igds.core.registry import SelectorResult, register
from igds.core.selection import scores_from_order

log = logging.getLogger(__name__)
AGGREGATES = ("mean", "max", "round_robin")


@dataclass(frozen=True)
class LexicalParams:
    aggregate: str = "mean"  # mean | max | round_robin over the prior's examples
    ngram_max: int = 2  # word n-grams 1..ngram_max
    sublinear_tf: bool = True  # 1 + log(tf)

    def __post_init__(self) -> None:
        check(self.aggregate in AGGREGATES, "aggregate", self.aggregate, f"one of {', '.join(AGGREGATES)}")
        check(isinstance(self.ngram_max, int) and self.ngram_max >= 1, "ngram_max", self.ngram_max,
              "a positive integer")


def text(record: Record) -> str:
    return f"{record.prompt}\n{record.output}"


def similarities(pool: list[Record], target: list[Record], params: LexicalParams) -> np.ndarray:
    """[n_target, n_pool] TF-IDF cosine similarities."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

    vectorizer = TfidfVectorizer(ngram_range=(1, params.ngram_max), sublinear_tf=params.sublinear_tf)
    matrix = vectorizer.fit_transform([text(r) for r in pool] + [text(r) for r in target])
    return (matrix[len(pool):] @ matrix[:len(pool)].T).toarray()


@register("lexical", LexicalParams)
class LexicalSelector:
    needs = ("target",)

    def __init__(self, params: LexicalParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        if not pool:
            return SelectorResult(np.empty(0))
        if not ctx.target:
            raise ValueError("lexical needs the target task's examples (the prior split); it has none")
        sims = similarities(pool, ctx.target, self.params)
        if self.params.aggregate == "round_robin":
            from baselines.rds import round_robin  # noqa: PLC0415

            scores = scores_from_order(round_robin(sims), len(pool))
        else:
            scores = sims.mean(0) if self.params.aggregate == "mean" else sims.max(0)
        log.info("lexical: %d candidates against %d prior examples (%s)", len(pool), len(ctx.target),
                 self.params.aggregate)
        return SelectorResult(scores, {"n_target": len(ctx.target)},
                              {"max_sim": sims.max(0), "mean_sim": sims.mean(0)})
