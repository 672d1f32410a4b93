"""score@<method> stage: scores/<method>.parquet (id, score; higher = keep; plus any per-example
detail the method keeps) and its metrics
(wall time, peak memory, tokens/s, and the scores' on-task AUROC on a mixed pool)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from igds.artifacts import write_json, write_parquet
from igds.config import ConfigError, Params
from igds.selection import ScoringContext, auroc, build_selector
from pipelines.common import main
from pipelines.io import peak_rss_bytes, read_split, timed

log = logging.getLogger("score")


def run(params: Params, args: argparse.Namespace) -> None:
    if params.data is None:
        raise ConfigError("params.yaml: section 'data' is missing")
    selector = build_selector(args.method, params.methods.get(args.method))
    pool = read_split(args.data / "pool.jsonl")
    ctx = ScoringContext(
        seed=params.seed, target=read_split(args.data / "prior.jsonl"), model_name=params.model.name,
        device=params.model.device, dtype=params.model.dtype, batch_size=params.scoring.batch_size,
        max_len=params.scoring.max_len, artifacts={"sae": args.sae, "features": args.features},
    )
    info: dict = {"method": args.method, "n_pool": len(pool)}
    with timed(info):
        scores = np.asarray(selector.score(pool, ctx), dtype=float)
    if scores.shape != (len(pool),):
        raise AssertionError(f"{args.method} returned {scores.shape} scores for {len(pool)} examples")
    info.update(getattr(selector, "info", {}))
    labels = np.array([r.task == params.data.target_task for r in pool])
    finite = ~np.isnan(scores)
    info["auroc_on_task"] = round(auroc(np.where(finite, scores, -np.inf), labels), 6)
    info["n_unscored"] = int((~finite).sum())
    info["peak_rss_bytes"] = peak_rss_bytes()
    if info.get("n_tokens") and info["wall_s"]:
        info["tokens_per_s"] = round(info["n_tokens"] / info["wall_s"], 1)
    args.out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": [r.id for r in pool], "score": scores})
    detail = getattr(selector, "detail", None)  # e.g. igds: the chosen features' pooled activations
    if detail is not None:
        frame = frame.merge(detail, on="id", how="left", validate="one_to_one")
    write_parquet(args.out / f"{args.method}.parquet", frame)
    write_json(args.metrics / f"score-{args.method}.json", info)
    log.info("%s: scored %d examples in %.1f s; on-task AUROC %.3f", args.method, len(pool), info["wall_s"],
             info["auroc_on_task"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--sae", type=Path, default=Path("sae"))
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--out", type=Path, default=Path("scores"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"))


if __name__ == "__main__":
    main("score", run, _args)
