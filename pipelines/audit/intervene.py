"""intervene@<set>-<arm> and oracle@<set> stages: arms/<set>-<arm>/pairs.jsonl (the arm's train
pairs; the shaping arm's with their margin offsets) and summary.json. An arm reads the pairs
and the audit (audit/<set>/); only oracle@<set> reads what was planted (--truth), and writes
two arms from it: oracle (the planted pairs dropped, --out) and unpoisoned (the same pairs
before anything was planted, --unpoisoned)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from igds.core.artifacts import atomic_dir, read_json, write_json, write_jsonl
from igds.audit.config import AUDIT_ARMS
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data.schema import DataError
from igds.audit.intervene import Arm, arm_pairs, oracle_pairs, unpoisoned_pairs
from pipelines.audit.common import set_arg
from pipelines.common import main, read_rows

log = logging.getLogger("intervene")


def run(params: Params, args: argparse.Namespace) -> None:
    set_arg(params, args.set)
    pairs = read_rows(args.pairs / "train.jsonl", "its prepare-pairs stage")
    if args.truth is not None:
        if args.unpoisoned is None:
            raise ConfigError("--truth writes two arms: give --unpoisoned arms/<set>-unpoisoned too")
        truth = read_json(args.truth)
        write_arm(args.unpoisoned, args.set, unpoisoned_pairs(pairs, truth))
        arm = oracle_pairs(pairs, truth)
    else:
        if args.arm not in AUDIT_ARMS:
            raise ConfigError(f"--arm {args.arm!r}: expected one of {', '.join(AUDIT_ARMS)} (or --truth for the oracle)")
        if not (args.audit / "activations.npz").is_file():
            raise DataError(f"{args.audit}/activations.npz not found; run `dvc repro` for audit@{args.set}")
        with np.load(args.audit / "activations.npz") as npz:
            ids, chosen, rejected = npz["ids"].tolist(), npz["chosen"].astype(np.float64), npz["rejected"].astype(np.float64)
        if ids != [p["id"] for p in pairs]:
            raise DataError(f"{args.audit}/activations.npz holds other pairs than {args.pairs}/train.jsonl; re-run "
                            f"audit@{args.set}")
        concepts = pd.read_csv(args.audit / "concepts.csv", index_col="concept")
        cfg = params.audit
        arm = arm_pairs(args.arm, pairs, chosen, rejected, concepts, cfg.flag, cfg.shaping, cfg.drop_seed)
    write_arm(args.out, args.set, arm)


def write_arm(out: Path, name: str, arm: Arm) -> None:
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "pairs.jsonl", arm.rows)
        write_json(tmp / "summary.json", arm.summary)
    log.info("%s %s: kept %d of %d pairs (%s)", name, arm.summary["arm"], arm.summary["kept"], arm.summary["pairs"],
             ", ".join(f"{k} {v}" for k, v in arm.summary.items() if k not in ("arm", "kept", "pairs")))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True, help="a name under audit.sets in params.yaml")
    parser.add_argument("--arm", default=None, help=f"one of {', '.join(AUDIT_ARMS)}")
    parser.add_argument("--truth", type=Path, default=None, help="the oracle and unpoisoned arms: what prepare-pairs planted")
    parser.add_argument("--unpoisoned", type=Path, default=None, help="with --truth: arms/<set>-unpoisoned")
    parser.add_argument("--pairs", type=Path, required=True, help="pairs/<set>")
    parser.add_argument("--audit", type=Path, default=None, help="audit/<set>")
    parser.add_argument("--out", type=Path, required=True, help="arms/<set>-<arm>")


if __name__ == "__main__":
    main("intervene", run, _args, uses_model=False)
