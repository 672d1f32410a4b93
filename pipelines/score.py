"""score stages: scores/<pool>/<method>.parquet (id, score; higher = keep; plus any per-example
extras the method keeps) and its metrics (wall time, peak memory, tokens/s, and the scores'
on-task AUROC on a mixed pool).

Every method of params.yaml's `methods:` is scored on every pool of data.pools as
score-shard@<pool>-<method>-<i> (`--shard i`: shard i of scoring.shards, into
scores/<pool>/shards/) and joined by score@<pool>-<method> (`--merge`);
the merged scores equal one process's bit for bit (igds.core.scoring). A method that cannot be
sharded scores the whole pool in shard 0 and leaves the others empty. Without --shard or
--merge the whole pool is scored in one process, or data-parallel under `accelerate launch`.
Shardable methods score in chunks kept in .resume/score-<method>[-shard-i-of-n]/: a killed
run continues where it stopped; the chunks are removed once the output is written."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from igds.core.artifacts import read_json, write_json, write_parquet
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.context import ScoringContext
from igds.core.data import DataError
from igds.core.scoring import merge_info, merge_shards, score_pool
from igds.core.selection_metrics import auroc, n_tied
from pipelines.common import distributed, main, method_arg
from pipelines.io import peak_rss_bytes, pool_arg, read_pool, read_split, timed

log = logging.getLogger("score")


def needed_artifacts(params: Params, method: str, sae: Path | None, features: Path | None) -> dict[str, Path]:
    """Of the artifact directories the stage is given, those the method's selector declares it needs."""
    given = {"sae": sae, "features": features}
    return {name: Path(given[name]) for name in params.methods.selector_class(method).needs
            if name in given and given[name] is not None}


def _artifacts(params: Params, method: str, args: argparse.Namespace) -> dict[str, Path]:
    return needed_artifacts(params, method, args.sae, args.features)


def scoring_context(params: Params, method: str, data: Path, artifacts: dict[str, Path],
                    loader=None) -> ScoringContext:
    """The context the score stage gives method `method`: the scoring model and batch shape of
    params.yaml, the prior split as target examples if the method needs them, its artifacts."""
    needs = params.methods.selector_class(method).needs
    return ScoringContext(
        seed=params.seed, target=read_split(data / "prior.jsonl") if "target" in needs else [],
        model_name=params.model.name, device=params.model.device, dtype=params.model.dtype,
        batch_size=params.scoring.batch_size, max_len=params.scoring.max_len, artifacts=artifacts, loader=loader)


def _fingerprint(params: Params, method: str, pool, args: argparse.Namespace) -> str:
    """What resumable chunks and shards must match: method params, batch shape, model, pool,
    and the files of every artifact the method reads."""
    blob = json.dumps([method, dataclasses.asdict(params.methods[method]), dataclasses.asdict(params.scoring),
                       params.seed, dataclasses.asdict(params.model), [r.id for r in pool]],
                      sort_keys=True, default=str)
    h = hashlib.sha256(blob.encode())
    for name, directory in sorted(_artifacts(params, method, args).items()):
        for file in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            h.update(f"{name}/{file.relative_to(directory)}".encode())
            h.update(file.read_bytes())
    if "target" in params.methods.selector_class(method).needs:
        h.update(json.dumps([r.id for r in read_split(args.data / "prior.jsonl")]).encode())
    return h.hexdigest()[:16]


def _finish(params: Params, args: argparse.Namespace, pool, frame: pd.DataFrame, info: dict) -> None:
    """The merged scores: on-task AUROC, the parquet and its metrics."""
    scores = frame["score"].to_numpy(dtype=float)
    labels = np.array([r.task == params.data.target_task for r in pool])
    finite = ~np.isnan(scores)
    info["auroc_on_task"] = round(auroc(np.where(finite, scores, -np.inf), labels), 6)
    info["n_unscored"] = int((~finite).sum())
    info["n_tied"] = n_tied(scores)
    info["peak_rss_bytes"] = max(info.get("peak_rss_bytes", 0), peak_rss_bytes())
    if info.get("n_tokens") and info["wall_s"]:
        info["tokens_per_s"] = round(info["n_tokens"] / info["wall_s"], 1)
    write_parquet(args.out / f"{args.method}.parquet", frame)
    write_json(args.metrics / f"score-{args.method}.json", info)
    log.info("%s: scored %d examples in %.1f s; on-task AUROC %.3f", args.method, len(pool), info["wall_s"],
             info["auroc_on_task"])


def run(params: Params, args: argparse.Namespace) -> None:
    if params.data is None:
        raise ConfigError("params.yaml: section 'data' is missing")
    method = method_arg(params, args.method)
    pool = read_pool(args.data, pool_arg(params, args.pool))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return _merge(params, args, pool)
    selector = params.methods.build(method)
    shard, dist = _shard(params, args, selector)
    ctx = scoring_context(params, method, args.data, _artifacts(params, method, args))
    fingerprint = _fingerprint(params, method, pool, args)
    state_dir = args.resume / (f"score-{args.pool}-{method}" + (f"-shard-{shard[0]}-of-{shard[1]}" if shard[1] > 1 else ""))
    info: dict = {"method": method, "pool": args.pool, "n_pool": len(pool)}
    with timed(info, "setup_wall_s"):
        if selector.shardable or shard[0] == 0:  # (a whole-pool method's other shards are empty)
            _load_needs(selector, ctx)
    with timed(info):
        frame, selector_info = score_pool(selector, pool, ctx, shard=shard,
                                          chunk_batches=params.scoring.chunk_batches,
                                          state_dir=state_dir, fingerprint=fingerprint)
    info.update(selector_info)
    if dist is not None:
        _gather_and_finish(params, args, pool, dist, frame, info)
    elif args.shard is not None:  # one shard: its rows and timing, merged by score@<pool>-<method>
        info.update(shard=f"{shard[0]}/{shard[1]}", n_scored=len(frame), fingerprint=fingerprint,
                    peak_rss_bytes=peak_rss_bytes())
        write_json(args.metrics / "shards" / method / f"{shard[0]}.json", info)  # timings: not cached
        write_parquet(args.out / "shards" / method / f"{shard[0]}.parquet", frame)
        log.info("%s shard %d/%d: scored %d examples in %.1f s", method, *shard, len(frame), info["wall_s"])
    else:
        _finish(params, args, pool, frame, info)
    shutil.rmtree(state_dir, ignore_errors=True)


def _load_needs(selector, ctx: ScoringContext) -> None:
    """The model and the SAE machinery the selector needs, loaded before its scoring is timed
    (model loading and importing sae-lens are every stage's setup, not a method's cost)."""
    if "model" in selector.needs:
        ctx.model()
    if "sae" in selector.needs:
        importlib.import_module("igds.core.sae")


def _shard(params: Params, args: argparse.Namespace, selector) -> tuple[tuple[int, int], object]:
    """(shard i of n this process scores, accelerate's state when data-parallel)."""
    dist = distributed(cpu=params.model.device == "cpu")
    shard = (args.shard, len(params.scoring.shards)) if args.shard is not None else (0, 1)
    if dist is not None:  # `accelerate launch --num_processes n`: process i scores shard i of n
        if args.shard is not None:
            raise ConfigError("--shard and a multi-process launch do not combine; use one or the other")
        if not selector.shardable:
            raise ConfigError(f"method '{selector.name}' scores the pool as a whole and cannot run data-parallel")
        shard = (dist.process_index, dist.num_processes)
    if args.shard is not None and args.shard not in params.scoring.shards:
        raise ConfigError(f"--shard {args.shard} is not allowed; expected one of scoring.shards = "
                          f"{list(params.scoring.shards)}")
    return shard, dist


def _gather_and_finish(params: Params, args: argparse.Namespace, pool, dist, frame: pd.DataFrame,
                       info: dict) -> None:
    """Every process's shard to the main process, which writes what one process would."""
    from accelerate.utils import gather_object  # noqa: PLC0415

    info["peak_rss_bytes"] = peak_rss_bytes()
    frames, infos = gather_object([frame]), gather_object([info])
    if dist.is_main_process:
        merged = merge_info(infos, [len(f) for f in frames])
        merged.update(n_processes=dist.num_processes, n_pool=len(pool),
                      wall_s=max(i["wall_s"] for i in infos), peak_rss_bytes=max(i["peak_rss_bytes"] for i in infos))
        _finish(params, args, pool, merge_shards(pool, frames), merged)
    dist.wait_for_everyone()


def _merge(params: Params, args: argparse.Namespace, pool) -> None:
    """score@<pool>-<method>: the shards of scoring.shards joined in pool order, as one process writes them."""
    n = len(params.scoring.shards)
    frames_at = [args.out / "shards" / args.method / f"{i}.parquet" for i in range(n)]
    infos_at = [args.metrics / "shards" / args.method / f"{i}.json" for i in range(n)]
    missing = [str(p) for p in frames_at + infos_at if not p.is_file()]
    if missing:
        raise DataError(f"missing shard output(s) {', '.join(missing)}; run `dvc repro score-shard@{args.pool}-{args.method}-<i>` "
                        "first")
    infos = [read_json(p) for p in infos_at]
    expected = _fingerprint(params, args.method, pool, args)
    stale = [f"{i}/{n}" for i, info in enumerate(infos) if info.get("fingerprint") != expected or
             info.get("shard") != f"{i}/{n}"]
    if stale:
        raise DataError(f"shard(s) {', '.join(stale)} were scored for another pool, params or feature set; "
                        f"rerun the score-shard@{args.pool}-{args.method}-<i> stages")
    try:
        frame = merge_shards(pool, [pd.read_parquet(p) for p in frames_at])
    except ValueError as e:
        raise DataError(str(e)) from None
    info = {k: v for k, v in merge_info(infos, [i["n_scored"] for i in infos]).items()
            if k not in ("shard", "n_scored", "wall_s", "setup_wall_s", "fingerprint", "peak_rss_bytes")}
    info.update(n_pool=len(pool), n_shards=n,
                wall_s=round(sum(i["wall_s"] for i in infos), 3),  # compute time of all shards
                setup_wall_s=round(sum(i.get("setup_wall_s", 0.0) for i in infos), 3),  # loading model/SAE code
                wall_s_slowest_shard=max(i["wall_s"] for i in infos),
                peak_rss_bytes=max(i["peak_rss_bytes"] for i in infos))
    _finish(params, args, pool, frame, info)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the candidate pool (one of data.pools; default: mixed)")
    parser.add_argument("--sae", type=Path, default=Path("sae"))
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--out", type=Path, default=Path("scores"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"))
    parser.add_argument("--shard", type=int, default=None,
                        help="score only shard i of scoring.shards (written to <out>/shards/<method>/<i>.parquet)")
    parser.add_argument("--merge", action="store_true", help="join the shards of scoring.shards")
    parser.add_argument("--resume", type=Path, default=Path(".resume"), help="resume checkpoint root")


def _reads(params: Params, args: argparse.Namespace) -> dict[str, Path]:
    return _artifacts(params, args.method, args) if args.method in params.methods else {}


if __name__ == "__main__":
    main("score", run, _args, reads=_reads, autocast=True)
