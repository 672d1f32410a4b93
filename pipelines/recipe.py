"""recipe@<pool>-<recipe>-<ratio>-<seed> stage: a recipe of params.yaml `recipes:` materialised
(igds.recipes) over the pool's cached signals into subsets/<pool>/<recipe>-<ratio>-s<seed>.jsonl,
the file a select stage writes for a method, so finetune/evaluate/report take it like one; and
results/metrics/<pool>/select-<recipe>-<ratio>-s<seed>.json with the select stage's fields (on-task
recall, degraded share) plus the recipe's trace (each step's size in and out) and the subset's
key (igds.recipes.subset_key). The signals are every score under scores/<pool>/ that a method
of `methods:` wrote; the final size is ceil(ratio x pool), as select's; the training seed seeds
the recipe's draws (mix, diversify), as select's per-seed draws."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pandas as pd

from igds.artifacts import write_json, write_jsonl
from igds.config import ConfigError, Params, parse_ratio
from igds.data import DataError
from igds.recipes import materialise, parse_recipes, signal_sources, signals_from_scores, subset_key
from igds.selection_metrics import selection_summary
from pipelines.common import main
from pipelines.io import pool_arg, read_pool, timed

log = logging.getLogger("recipe")


def read_signals(params: Params, scores: Path, pool: list, reads: set[str]):
    """igds.recipes.Signals from the score files the recipe reads (scalar signals and spaces)."""
    _, spaces = signal_sources(params)
    wanted_spaces = {s.split(":", 1)[1] for s in reads if s.startswith("space:")}
    names = sorted({s for s in reads if s in params.methods} | {spaces[s] for s in wanted_spaces})
    frames = {}
    for name in names:
        path = scores / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path} not found; run `dvc repro score@<pool>-{name}` first")
        frames[name] = pd.read_parquet(path)
    return signals_from_scores(pool, frames, {s: spaces[s] for s in wanted_spaces})


def run(params: Params, args: argparse.Namespace) -> None:
    if args.recipe not in params.recipes:
        raise ConfigError(f"--recipe {args.recipe!r} is not under recipes: in params.yaml; expected one of "
                          f"{', '.join(params.recipes) or '(none)'}")
    recipe = parse_recipes(params)[args.recipe]  # every recipe checked: one bad recipe stops them all
    ratio = parse_ratio(args.ratio)
    pool = read_pool(args.data, pool_arg(params, args.pool))
    info: dict = {}
    with timed(info, "wall_s"):
        signals = read_signals(params, args.scores, pool, recipe.signals())
        result = materialise(recipe, signals, math.ceil(ratio * len(pool)), params.seed, args.seed)
    kept = result.ids
    name = f"{args.recipe}-{args.ratio}-s{args.seed}"  # the file name carries the ratio as dvc.yaml spells it
    write_jsonl(args.out / f"{name}.jsonl", ({"id": i} for i in kept))
    metrics = {"method": args.recipe, "recipe": recipe.as_dict(), "pool": args.pool, "ratio": ratio,
               "seed": args.seed, "selection_seed": args.seed, "selection_randomness": "per_seed",
               "subset_key": subset_key(kept), "trace": result.trace,
               **selection_summary(pool, kept, params.data.target_task if params.data is not None else None), **info}
    write_json(args.metrics / f"select-{name}.json", metrics)
    log.info("%s @ %g seed %d: kept %d of %d (%s); on-task recall %.3f", args.recipe, ratio, args.seed, len(kept),
             len(pool), " -> ".join(str(t["n_out"]) for t in result.trace), metrics["on_task_recall"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="a recipe under recipes: in params.yaml")
    parser.add_argument("--ratio", required=True, help="the final size as a share of the pool, in (0, 1)")
    parser.add_argument("--seed", type=int, required=True, help="the training seed this subset is for")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the candidate pool (one of data.pools; default: mixed)")
    parser.add_argument("--scores", type=Path, default=Path("scores"))
    parser.add_argument("--out", type=Path, default=Path("subsets"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"))


if __name__ == "__main__":
    main("recipe", run, _args, uses_model=False)
