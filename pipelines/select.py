"""A selector's subset, as the subset@<pool>-<method>-<ratio>-s<seed> stage (pipelines.subset)
writes it: subsets/<pool>/<method>-<ratio>-s<seed>.jsonl (the kept ids) and its metrics
results/metrics/<pool>/select-<method>-<ratio>-s<seed>.json, one per training seed; `full` (a
method that keeps the whole pool: subset@<pool>-full-s<seed>) is the pool's ids in its order.

A selector whose randomness is `per_seed` (random, k-center) redraws it for each training
seed from its cached scores (`draw`), so the seeds vary selection as well as training; a
deterministic one gives every seed the same subset, and one whose randomness is `fixed`
(LESS's warm-up) too (the metrics say which: `selection_seed`, `selection_randomness`). The
ratio comes from select.ratios (graph.yaml); the run (igds.core.runs.RunId: pool,
method, ratio as dvc.yaml writes it, seed) names the files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from igds.core.artifacts import write_json, write_jsonl
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from igds.core.runs import FULL, RunId
from igds.core.selection import select_top
from igds.core.selection_metrics import selection_summary
from pipelines.common import method_arg
from pipelines.io import pool_arg, read_pool

log = logging.getLogger("select")


def selection(params: Params, method: str, scores_dir: Path, pool_name: str, pool: list, ratio: float,
              run_seed: int):
    """(kept ids, the selector): method's top ceil(ratio x pool) by its cached scores, redrawn
    for training seed `run_seed` when its randomness is per seed."""
    path = scores_dir / f"{method}.parquet"
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro score@{pool_name}-{method}` first")
    scores = pd.read_parquet(path)
    if list(scores["id"]) != [r.id for r in pool]:
        raise DataError(f"{path} does not score pool {pool_name!r} (ids differ); rerun score@{pool_name}-{method}")
    selector = params.methods.build(method_arg(params, method))
    values = selector.draw(scores, params.seed, run_seed) if selector.randomness == "per_seed" else \
        scores["score"].to_numpy()
    return select_top(list(scores["id"]), values, ratio, params.seed), selector


def run(params: Params, args: argparse.Namespace) -> None:
    keeps_all = args.method == FULL
    if not keeps_all and params.methods.selector_class(method_arg(params, args.method)).keeps_all:
        raise ConfigError(f"--method {args.method!r} keeps the whole pool; its subset is `--method {FULL}` (one per "
                          "pool and seed), not one per method")
    run_id = RunId(pool_arg(params, args.pool), args.method, args.ratio, args.seed)
    pool = read_pool(args.data, run_id.pool)
    if keeps_all:
        kept, randomness = [r.id for r in pool], None
    else:
        kept, selector = selection(params, args.method, args.scores, args.pool, pool, run_id.share, args.seed)
        randomness = selector.randomness
    per_seed = randomness == "per_seed"
    write_jsonl(run_id.subset(args.out), ({"id": i} for i in kept))
    metrics = {"method": args.method, "pool": args.pool, "ratio": run_id.share, "seed": args.seed,
               "selection_seed": args.seed if per_seed else None,
               "selection_randomness": randomness or "none",
               **selection_summary(pool, kept, params.data.target_task if params.data is not None else None)}
    write_json(run_id.selection_metrics(args.metrics), metrics)
    log.info("%s @ %s seed %d: kept %d of %d; on-task recall %.3f", args.method, run_id.ratio or "all", args.seed,
             len(kept), len(pool), metrics["on_task_recall"])
