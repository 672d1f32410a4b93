"""select@<pool>-<method>-<ratio>-<seed> stage: subsets/<pool>/<method>-<ratio>-s<seed>.jsonl (the
kept ids) and its metrics results/metrics/<pool>/select-<method>-<ratio>-s<seed>.json, one per
training seed.

A selector whose randomness is `per_seed` (random, k-center) redraws it for each training
seed from its cached scores (`draw`), so the seeds vary selection as well as training; a
deterministic one gives every seed the same subset, and one whose randomness is `fixed`
(LESS's warm-up) too (the metrics say which: `selection_seed`, `selection_randomness`). The
ratio comes from dvc.yaml's matrix over select.ratios; the run (igds.core.runs.RunId: pool,
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
from igds.core.runs import RunId
from igds.core.selection import select_top
from igds.core.selection_metrics import selection_summary
from pipelines.common import main, method_arg
from pipelines.io import pool_arg, read_pool, subset_args

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
    if params.methods.selector_class(method_arg(params, args.method)).keeps_all:
        raise ConfigError(f"select: method '{args.method}' keeps the whole pool; it has no selection to make "
                          "(finetune trains it on the pool)")
    run_id = RunId(pool_arg(params, args.pool), args.method, args.ratio, args.seed)
    pool = read_pool(args.data, run_id.pool)
    kept, selector = selection(params, args.method, args.scores, args.pool, pool, run_id.share, args.seed)
    per_seed = selector.randomness == "per_seed"
    write_jsonl(run_id.subset(args.out), ({"id": i} for i in kept))
    metrics = {"method": args.method, "pool": args.pool, "ratio": run_id.share, "seed": args.seed,
               "selection_seed": args.seed if per_seed else None,
               "selection_randomness": selector.randomness or "none",
               **selection_summary(pool, kept, params.data.target_task if params.data is not None else None)}
    write_json(run_id.selection_metrics(args.metrics), metrics)
    log.info("%s @ %s seed %d: kept %d of %d; on-task recall %.3f", args.method, run_id.ratio, args.seed, len(kept),
             len(pool), metrics["on_task_recall"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True)
    subset_args(parser)


if __name__ == "__main__":
    main("select", run, _args, uses_model=False)
