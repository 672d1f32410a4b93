"""dpo@<set>-<arm>-<seed> stage: dpo/<set>-<arm>-s<seed>/ with the LoRA adapter DPO trained
on the arm's pairs (arms/<set>-<arm>/pairs.jsonl) and train.json (loss per step, TRL's reward
accuracy, wall time). A killed run continues from its last checkpoint (dpo/.resume/)."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from igds.core.artifacts import atomic_dir, write_json
from igds.core.config import ConfigError
from igds.params import Params
from igds.audit.dpo import train_dpo
from igds.core.models.loading import load_model
from pipelines.audit.common import set_arg
from pipelines.common import main, read_rows

log = logging.getLogger("dpo")


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = params.audit.dpo
    set_arg(params, args.set)
    if args.arm not in cfg.arms:
        raise ConfigError(f"--arm {args.arm!r} is not under audit.dpo.arms ({', '.join(cfg.arms) or 'none'})")
    rows = read_rows(args.pairs / "pairs.jsonl", "the arm's intervene (or oracle) stage")
    name = f"{args.set}-{args.arm}-s{args.seed}"
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    resume = args.out.parent / ".resume" / name
    log.info("%s: DPO on %d pairs, seed %d", name, len(rows), args.seed)
    result = train_dpo(loaded.model, loaded.tokenizer, rows, cfg, args.seed, resume, params.model.device)
    with atomic_dir(args.out) as tmp:
        result.model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / "train.json", {"set": args.set, "arm": args.arm, "seed": args.seed,
                                        "model": params.model.name, **result.summary()})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("%s: %d steps in %.0f s, loss %.3f -> %.3f", name, result.n_steps, result.wall_s,
             result.loss[0] if result.loss else float("nan"), result.loss[-1] if result.loss else float("nan"))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True)
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--pairs", type=Path, required=True, help="arms/<set>-<arm>")
    parser.add_argument("--out", type=Path, required=True, help="dpo/<set>-<arm>-s<seed>")


if __name__ == "__main__":
    main("dpo", run, _args)
