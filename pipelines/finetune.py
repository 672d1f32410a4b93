"""finetune@<pool>-<stem> stage (graph.yaml lists them: every selection, recipe, finalist and
full): SFT of the trained model on the run's subset of a pool, written to checkpoints/<pool>/<stem>/ (LoRA adapter or
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
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from igds.core.finetune import finetune, fingerprint, save_trained
from igds.core.models.loading import load_model
from igds.core.runs import RunId
from pipelines.common import distributed, main
from pipelines.graph import trained
from pipelines.io import peak_rss_bytes, pool_arg, read_pool

log = logging.getLogger("finetune")


def training_records(run_id: RunId, data: Path, subsets: Path):
    """The examples run `run_id` trains on: its subset's ids (subsets/<pool>/<stem>.jsonl under the
    root `subsets`, written by subset@<pool>-<stem>; full's is the whole pool) looked up in the pool,
    in the subset's order."""
    pool = read_pool(data, run_id.pool)
    path = run_id.subset(subsets)
    made_by = run_id.stage("subset")
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro {made_by}` first")
    by_id = {r.id: r for r in pool}
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} id(s) are not in pool {run_id.pool!r} (first: {unknown[0]}); "
                        f"rerun {made_by}")
    if not ids:
        raise DataError(f"{path} keeps no example; rerun {made_by}")
    return [by_id[i] for i in ids]


def run_arg(params: Params, args: argparse.Namespace) -> RunId:
    """The run a finetune or evaluate stage names on its command line (--pool, --method, --ratio,
    --seed): one that params.yaml asks for (pipelines.graph.trained)."""
    run_id = RunId(pool_arg(params, args.pool), args.method, args.ratio, args.seed)
    asked = trained(params)
    if run_id not in asked:
        names = sorted({r.name for r in asked if r.pool == run_id.pool})
        raise ConfigError(f"run {run_id.key} is not one params.yaml trains (pool {run_id.pool}: {', '.join(names)}; "
                          f"ratios {', '.join(sorted({r.ratio for r in asked if r.ratio}))}; seeds "
                          f"{', '.join(str(s) for s in params.finetune.seeds)})")
    return run_id


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = params.finetune
    run_id = run_arg(params, args)
    name = run_id.stem
    records = training_records(run_id, args.data, args.subsets)
    model_name = cfg.model or params.model.name
    loaded = load_model(model_name, params.model.device, params.model.dtype)
    out = run_id.checkpoint(args.out)
    state_dir = out.parent / ".resume" / name
    key = fingerprint(cfg, [r.id for r in records], args.seed, f"{loaded.source} autocast={params.model.autocast}")
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
    info = {"run": name, "pool": args.pool, "method": args.method, "ratio": run_id.share,
            "seed": args.seed, "model": model_name, "kind": cfg.kind, **result.summary(),
            "n_processes": n_processes, "peak_rss_bytes": peak_rss_bytes()}
    if dist is not None and not dist.is_main_process:
        dist.wait_for_everyone()
        return
    with atomic_dir(out) as tmp:
        save_trained(model, loaded.tokenizer, tmp, cfg.kind)
        write_json(tmp / "train.json", info)
    shutil.rmtree(state_dir, ignore_errors=True)
    if dist is not None:
        dist.wait_for_everyone()
    log.info("%s: %d steps in %.0f s (%.0f tokens/s), loss %.3f -> %.3f; wrote %s", name, result.n_steps,
             result.wall_s, info["tokens_per_s"] or 0, info["loss_first"], info["loss_last"], out)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True)
    parser.add_argument("--ratio", default=None, help="the selection's ratio (omit for full)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the candidate pool (one of data.pools; default: mixed)")
    parser.add_argument("--subsets", type=Path, default=Path("subsets"), help="the subsets' root")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"), help="the checkpoints' root (a pool's folder under it)")


if __name__ == "__main__":
    main("finetune", run, _args, autocast=True)
