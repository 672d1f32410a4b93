"""Recipe search's params: search.* and recipes:, validated once at the stage entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from igds.core.config import RATIO_ALLOWED, check, fail, ratio_ok

FINALIST_PREFIX = "search_"  # a search's finalist is method search_<solver>_s<seed> (Params.finalists)


def finalist_name(solver: str, seed: int) -> str:
    return f"{FINALIST_PREFIX}{solver}_s{seed}"


SEARCH_SOLVERS = ("random", "tpe", "gp", "local")  # igds.recipes.search.SOLVERS (not imported: config stays light)
PROXY_METRICS = ("answer_loglik",)


@dataclass(frozen=True)
class ProxyConfig:
    """Recipe search's objective: a LoRA fine-tune of the subset with finetune's settings but
    `epochs`, scored on data/val.jsonl (never eval) by `metric`."""

    epochs: int = 1
    metric: str = "answer_loglik"  # mean log-likelihood per answer token of the val examples
    seed: int = 0  # the proxy fine-tune's seed (the same for every subset: a paired comparison)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        check(self.metric in PROXY_METRICS, "metric", self.metric, f"one of {PROXY_METRICS}")


@dataclass(frozen=True)
class CheckConfig:
    """The proxy's validation (proxy-check@<pool>): `recipes` recipes drawn from the search space
    with `seed` (the warm-up's zones, then the random solver's draws), each scored by the proxy
    and fine-tuned at full fidelity (finetune's settings) with every one of `seeds`, scored on
    data/val.jsonl; Spearman rho of proxy vs full beside the noise ceiling between seed halves."""

    recipes: int = 0  # 0: no check; the test asks for >= 12
    seeds: tuple[int, ...] = (0, 1)  # full-fidelity training seeds (>= 2: the noise ceiling splits them)
    seed: int = 0  # the recipes' draw

    def __post_init__(self) -> None:
        check(self.recipes == 0 or self.recipes >= 3, "recipes", self.recipes,
              "0 (no check) or an integer >= 3 (a rank correlation needs recipes to rank)")
        check(len(self.seeds) >= 2 and len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
              ">= 2 distinct training seeds (the noise ceiling compares halves of them)")


@dataclass(frozen=True)
class SearchConfig:
    """Recipe search (igds.recipes.search): recipe-search@<pool>-<solver>-<seed>, one per pool of
    `pools`, solver and search seed; each spends `budget` proxy fine-tunes of distinct subsets."""

    solvers: tuple[str, ...] = ()  # of random, tpe, gp, local; empty: no search stages
    seeds: tuple[int, ...] = (0,)
    pools: tuple[str, ...] = ()  # of data.pools
    budget: int = 12  # proxy fine-tunes per search, warm-up included
    warmup: int = 3  # probes in retention zones, the same for every solver and seed
    patience: int = 4  # local: evaluations without improvement before a reseeding probe
    candidates: int = 24  # local: edits materialised and ranked by the surrogate per step
    beta: float = 4.0  # local: UCB = mean + sqrt(beta) x sd
    ratio: float = 0.5  # the final size: ceil(ratio x pool), as select's
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    check: CheckConfig = field(default_factory=CheckConfig)

    def __post_init__(self) -> None:
        for i, solver in enumerate(self.solvers):
            check(solver in SEARCH_SOLVERS, f"solvers[{i}]", solver, f"one of {SEARCH_SOLVERS}")
        check(len(set(self.solvers)) == len(self.solvers), "solvers", list(self.solvers), "distinct solvers")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds), "distinct seeds")
        check(self.budget >= 1, "budget", self.budget, "a positive integer")
        check(1 <= self.warmup <= self.budget, "warmup", self.warmup, f"an integer in [1, budget = {self.budget}]")
        check(self.patience >= 1 and self.candidates >= 1, "patience", self.patience, "a positive integer")
        check(self.beta >= 0, "beta", self.beta, "a non-negative number")
        check(ratio_ok(self.ratio), "ratio", self.ratio, RATIO_ALLOWED)


class RecipeParams(dict):
    """params.yaml `recipes:`: recipe name -> its raw {process: [...]} mapping; dvc.yaml's recipe
    stages iterate over its keys, and finetune.methods may name them like selected methods.
    igds.recipes.recipe.parse_recipes parses and checks them where they are used (the recipe and
    search stages), so no other stage's code depends on the recipes' module."""

    @classmethod
    def parse(cls, raw: Any, where: str) -> RecipeParams:
        return parse_recipes(raw, where)


def parse_recipes(raw: Any, where: str = "recipes") -> RecipeParams:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(where, raw, "a mapping of recipe name -> {process: [...]}")
    out = RecipeParams()
    for name, value in raw.items():
        check(isinstance(name, str) and name.replace("_", "").isalnum(), where, name,
              "recipe names of letters, digits and _ (they name stages and files)")
        check(isinstance(value, dict) and isinstance(value.get("process"), list), f"{where}.{name}", value,
              "a mapping with a `process:` list of `- operator: {params}` steps (igds.recipes.recipe)")
        out[name] = value
    return out
