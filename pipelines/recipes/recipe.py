"""A recipe's subset, as the subset@<pool>-<recipe>-<ratio>-s<seed> stage (pipelines.subset) writes it: a recipe of params.yaml `recipes:` materialised
(igds.recipes.recipe) over the pool's cached signals into subsets/<pool>/<recipe>-<ratio>-s<seed>.jsonl,
the file a selector's subset has, so finetune/evaluate/report take it like one; and
results/metrics/<pool>/select-<recipe>-<ratio>-s<seed>.json with the select stage's fields (on-task
recall, degraded share) plus the recipe's trace (each step's size in and out) and the subset's
key (igds.recipes.recipe.subset_key). The signals are every score under scores/<pool>/ that a method
of `methods:` wrote; the final size is ceil(ratio x pool), as select's; the training seed seeds
the recipe's draws (mix, diversify), as select's per-seed draws.

subset@<pool>-search_<solver>_s<k>-<ratio>-s<seed> runs it with `--finalist search_<solver>_s<k>
--search search/<pool>/<solver>-s<k>`: the search's best.yaml materialised into
subsets/<pool>/search_<solver>_s<k>-<ratio>-s<seed>.jsonl for the full-fidelity retraining; its
metrics say whether the subset is the one the search evaluated (`same_as_searched`: a recipe
whose draws depend on the training seed gives each seed its own subset, as a stochastic selector's)."""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path

import pandas as pd
import yaml

from igds.core.artifacts import write_json, write_jsonl
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from igds.core.runs import RunId
from igds.recipes.recipe import materialise, parse_recipe, parse_recipes, signal_sources, signals_from_scores, subset_key
from igds.core.selection_metrics import selection_summary
from pipelines.io import pool_arg, read_pool, timed

log = logging.getLogger("recipe")


def read_signals(params: Params, scores: Path, pool: list, reads: set[str]):
    """igds.recipes.recipe.Signals from the score files the recipe reads (scalar signals and spaces)."""
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


def finalist_recipe(params: Params, name: str, search_dir: Path):
    """A search's best recipe (search_dir/best.yaml) and the key of the subset the search evaluated
    (best.yaml's `# subset <key>` line; None if absent)."""
    if name not in params.finalists:
        raise ConfigError(f"--finalist {name!r} is not a search of params.yaml; expected one of "
                          f"{', '.join(params.finalists) or '(none: search.solvers is empty)'}")
    best = search_dir / "best.yaml"
    if not best.is_file():
        solver, seed = params.finalists[name]
        raise DataError(f"{best} not found; run `dvc repro recipe-search@<pool>-{solver}-{seed}` first")
    text = best.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(f"{best}: not valid YAML ({e}); rerun the search stage that writes it") from None
    key = re.search(r"^# subset ([0-9a-f]+)$", text, re.MULTILINE)
    return parse_recipe(raw, f"{best}"), key.group(1) if key else None


def run(params: Params, args: argparse.Namespace) -> None:
    searched_key = None
    if args.finalist is not None:
        recipe, searched_key = finalist_recipe(params, args.finalist, args.search)
        args.recipe = args.finalist
    elif args.recipe not in params.recipes:
        raise ConfigError(f"--recipe {args.recipe!r} is not under recipes: in params.yaml; expected one of "
                          f"{', '.join(params.recipes) or '(none)'}")
    else:
        recipe = parse_recipes(params)[args.recipe]  # every recipe checked: one bad recipe stops them all
    run_id = RunId(pool_arg(params, args.pool), args.recipe, args.ratio, args.seed)
    ratio = run_id.share
    pool = read_pool(args.data, run_id.pool)
    info: dict = {}
    with timed(info, "wall_s"):
        signals = read_signals(params, args.scores, pool, recipe.signals())
        result = materialise(recipe, signals, math.ceil(ratio * len(pool)), params.seed, args.seed)
    kept = result.ids
    write_jsonl(run_id.subset(args.out), ({"id": i} for i in kept))
    metrics = {"method": args.recipe, "recipe": recipe.as_dict(), "pool": args.pool, "ratio": ratio,
               "seed": args.seed, "selection_seed": args.seed, "selection_randomness": "per_seed",
               "subset_key": subset_key(kept), "trace": result.trace,
               **selection_summary(pool, kept, params.data.target_task if params.data is not None else None), **info}
    if args.finalist is not None:  # is this training seed's subset the one the search evaluated?
        metrics.update(searched_key=searched_key,
                       same_as_searched=None if searched_key is None else metrics["subset_key"] == searched_key)
    write_json(run_id.selection_metrics(args.metrics), metrics)
    log.info("%s @ %g seed %d: kept %d of %d (%s); on-task recall %.3f", args.recipe, ratio, args.seed, len(kept),
             len(pool), " -> ".join(str(t["n_out"]) for t in result.trace), metrics["on_task_recall"])
