"""finetune@<pool>-<method>-<ratio>-<seed> stage (and finetune-full@<pool>-<seed>): SFT of the
trained model on a selection from a pool, written to checkpoints/<pool>/<run>/ (LoRA adapter or
full model, plus train.json). A resume checkpoint lives beside it in
checkpoints/<pool>/.resume/<run>/ (DVC removes a
stage's outputs before running it, so it cannot live inside), and is deleted on success.

Data-parallel: `accelerate launch --multi_gpu --num_processes N -m pipelines.finetune ...`
(on a CPU-only machine this starts N processes over gloo); the main process writes."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from igds.core.artifacts import atomic_dir, write_json
from igds.core.config import ConfigError, parse_ratio
from igds.params import Params
from igds.core.data import DataError
from igds.core.finetune import finetune, fingerprint, save_trained
from igds.core.models.loading import load_model
from igds.core.registry import selector_class
from pipelines.common import distributed, main, method_arg
from pipelines.io import peak_rss_bytes, pool_arg, read_pool

log = logging.getLogger("finetune")


def run_name(method: str, ratio: str | None, seed: int) -> str:
    """checkpoints/<run> and results/eval/<run>; a method that keeps the whole pool has no ratio."""
    return f"{method}-s{seed}" if ratio is None else f"{method}-{ratio}-s{seed}"


def training_records(method: str, ratio: str | None, data: Path, subsets: Path, seed: int = 0, pool: str = "mixed",
                     kind: str | None = None):
    """The examples to train on: the ids of training seed `seed`'s subset looked up in the
    pool; without a ratio (a method that keeps everything, e.g. full) the whole pool.
    `kind`: the method's registered selector (params.methods.kind), when its name is a variant's;
    "recipe" for a recipe of params.yaml `recipes:` (its subset is the recipe stage's)."""
    pool_name, pool = pool, read_pool(data, pool)
    if ratio is None:
        if kind == "recipe" or not selector_class(kind or method).keeps_all:
            raise ConfigError(f"finetune: method '{method}' needs --ratio (only a method that keeps the whole "
                              "pool trains without a selection)")
        return pool
    path = subsets / f"{run_name(method, ratio, seed)}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro select@{pool_name}-{method}-{ratio}-{seed}` first")
    by_id = {r.id: r for r in pool}
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} id(s) are not in pool {pool_name!r} (first: {unknown[0]}); "
                        f"rerun select@{pool_name}-{method}-{ratio}-{seed}")
    return [by_id[i] for i in ids]


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = params.finetune
    if args.ratio is not None:
        parse_ratio(args.ratio)
    name = run_name(args.method, args.ratio, args.seed)
    subset_made = args.method in params.recipes or args.method in params.finalists  # by recipe@ or finalist@
    method = args.method if subset_made else method_arg(params, args.method)
    records = training_records(method, args.ratio, args.data, args.subsets, args.seed, pool_arg(params, args.pool),
                               kind="recipe" if subset_made else params.methods.kind(method))
    model_name = cfg.model or params.model.name
    loaded = load_model(model_name, params.model.device, params.model.dtype)
    state_dir = args.out / ".resume" / name
    key = fingerprint(cfg, [r.id for r in records], args.seed, loaded.source)
    dist = distributed(cpu=params.model.device == "cpu")
    accelerator = None
    if dist is not None:
        from accelerate import Accelerator  # noqa: PLC0415

        accelerator = Accelerator(cpu=params.model.device == "cpu")
    n_processes = 1 if dist is None else dist.num_processes
    log.info("%s: fine-tuning %s (%s) on %d examples, seed %d, %d process(es)", name, model_name, cfg.kind,
             len(records), args.seed, n_processes)
    model, result = finetune(loaded.model, loaded.tokenizer, records, cfg, args.seed, state_dir, key,
                             accelerator=accelerator)
    info = {"run": name, "pool": args.pool, "method": args.method, "ratio": float(args.ratio) if args.ratio else 1.0,
            "seed": args.seed, "model": model_name, "kind": cfg.kind, **result.summary(),
            "n_processes": n_processes, "peak_rss_bytes": peak_rss_bytes()}
    if dist is not None and not dist.is_main_process:
        dist.wait_for_everyone()
        return
    with atomic_dir(args.out / name) as tmp:
        save_trained(model, loaded.tokenizer, tmp, cfg.kind)
        write_json(tmp / "train.json", info)
    shutil.rmtree(state_dir, ignore_errors=True)
    if dist is not None:
        dist.wait_for_everyone()
    log.info("%s: %d steps in %.0f s (%.0f tokens/s), loss %.3f -> %.3f; wrote %s", name, result.n_steps,
             result.wall_s, info["tokens_per_s"] or 0, info["loss_first"], info["loss_last"], args.out / name)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True)
    parser.add_argument("--ratio", default=None, help="the selection's ratio (omit for full)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the candidate pool (one of data.pools; default: mixed)")
    parser.add_argument("--subsets", type=Path, default=Path("subsets"))
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))


if __name__ == "__main__":
    main("finetune", run, _args)
