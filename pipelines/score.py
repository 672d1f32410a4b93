"""score@<method> stage: scores/<method>.parquet (id, score; higher = keep) and its metrics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from igds.activations import pooled_feature_activations, tokenize_records
from igds.artifacts import read_json, write_json, write_parquet
from igds.config import ConfigError, Params
from igds.models import load_model
from igds.resonance import resonant_score
from igds.sae import load_sae
from igds.selection import auroc
from pipelines.common import main
from pipelines.io import peak_rss_bytes, read_split, timed

log = logging.getLogger("score")


def score_igds(params: Params, args: argparse.Namespace, pool: list) -> tuple[np.ndarray, dict, pd.DataFrame | None]:
    """Feature-Resonant Score of every pool example (the forward pass stops at layer L)."""
    cfg, layer = params.score, params.sae.layer
    features = read_json(args.features / "features.json")
    ranking = features["ranking"]
    if len(ranking) < cfg.k:
        raise ConfigError(f"params.yaml: score.k = {cfg.k} but identification kept {len(ranking)} feature(s); "
                          "lower score.k, or relax identify.min_effect / identify.min_contrast")
    chosen = ranking[:cfg.k]
    by_id = {f["feature"]: f for f in features["features"]}
    typical = [by_id[f]["mean_when_active"] for f in chosen]
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    sae = load_sae(args.sae, params.model.device)
    tok = tokenize_records(loaded.tokenizer, pool, cfg.max_len)
    acts = pooled_feature_activations(loaded.model, sae, tok, layer, cfg.batch_size, loaded.tokenizer.pad_token_id,
                                      cfg.scope, features=chosen, desc="scoring")
    scores = resonant_score(acts, typical, cfg.pooling)
    detail = pd.DataFrame({"id": [r.id for r in pool]})
    for j, f in enumerate(chosen):
        detail[f"f{f}_max"] = acts.max_act[:, j].numpy()
        detail[f"f{f}_mean"] = acts.mean_act[:, j].numpy()
    return scores, {"chosen_features": chosen, "k": cfg.k, "pooling": cfg.pooling, "scope": cfg.scope,
                    "n_tokens": int(acts.n_tokens.sum())}, detail


SCORERS = {"igds": score_igds}


def run(params: Params, args: argparse.Namespace) -> None:
    if args.method not in SCORERS:
        raise ConfigError(f"unknown method '{args.method}'; available: {', '.join(sorted(SCORERS))}")
    pool = read_split(args.data / "pool.jsonl")
    info: dict = {"method": args.method, "n_pool": len(pool)}
    with timed(info):
        scores, extra, detail = SCORERS[args.method](params, args, pool)
    info.update(extra)
    labels = np.array([r.task == params.data.target_task for r in pool]) if params.data else None
    info["auroc_on_task"] = round(auroc(scores, labels), 6) if labels is not None else None
    info["peak_rss_bytes"] = peak_rss_bytes()
    if "n_tokens" in info and info["wall_s"]:
        info["tokens_per_s"] = round(info["n_tokens"] / info["wall_s"], 1)
    out = args.out / f"{args.method}.parquet"
    write_parquet(out, pd.DataFrame({"id": [r.id for r in pool], "score": scores}))
    if detail is not None:
        write_parquet(args.out / f"{args.method}.activations.parquet", detail)
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
