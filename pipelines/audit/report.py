"""report-audit@<set> stage: results/audit/<set>.md and .json, the audit's report (igds.audit.report):
the discoveries and which of them is the planted concept (the truth file: this stage and the
oracle arm are its only readers), and per trained arm the re-audit after DPO with the
comparisons between arms."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from igds.core.artifacts import atomic_file, read_json, write_json
from igds.audit.report import arm_table, identify_planted, render
from igds.params import Params
from igds.core.data.schema import DataError
from pipelines.audit.common import set_arg
from pipelines.common import main

log = logging.getLogger("report-audit")


def run(params: Params, args: argparse.Namespace) -> None:
    set_arg(params, args.set)
    cfg = params.audit
    if not (args.audit / "summary.json").is_file():
        raise DataError(f"{args.audit}/summary.json not found; run `dvc repro` for audit@{args.set}")
    summary = read_json(args.audit / "summary.json")
    concepts = pd.read_csv(args.audit / "concepts.csv", index_col="concept")
    with np.load(args.audit / "activations.npz") as npz:
        ids, chosen, rejected = npz["ids"].tolist(), npz["chosen"].astype(np.float64), npz["rejected"].astype(np.float64)
    identified = identify_planted(ids, chosen, rejected, concepts, read_json(args.truth), args.match)
    arms = {}
    for arm in cfg.dpo.arms:
        runs = []
        for seed in cfg.dpo.seeds:
            path = args.reaudit / f"{args.set}-{arm}-s{seed}" / "metrics.json"
            if not path.is_file():
                raise DataError(f"{path} not found; run `dvc repro` for reaudit@{args.set}-{arm}-{seed}")
            runs.append(read_json(path))
        arms[arm] = runs
    rng = np.random.default_rng(params.seed)
    table, comparisons = arm_table(arms, rng, params.report.n_boot, params.report.n_perm, params.report.level,
                                   cfg.accuracy_margin) if arms else (pd.DataFrame(), pd.DataFrame())
    text = render(args.set, summary, identified, concepts, table, comparisons, cfg.stats.fdr, cfg.accuracy_margin)
    with atomic_file(args.out.with_suffix(".md")) as f:
        f.write(text)
    write_json(args.out.with_suffix(".json"), {"set": args.set, "identified": identified,
                                               "arms": table.to_dict("records"),
                                               "comparisons": comparisons.to_dict("records")})
    log.info("%s: plant found %s, decoy found %s; wrote %s", args.set, identified["plant_found"],
             identified["decoy_found"], args.out.with_suffix(".md"))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True)
    parser.add_argument("--audit", type=Path, required=True, help="audit/<set>")
    parser.add_argument("--truth", type=Path, required=True, help="what prepare-pairs planted")
    parser.add_argument("--reaudit", type=Path, default=Path("reaudit"))
    parser.add_argument("--match", type=float, default=0.5, help="precision and recall that make a concept the plant")
    parser.add_argument("--out", type=Path, required=True, help="results/audit/<set> (.md and .json)")


if __name__ == "__main__":
    main("report-audit", run, _args, uses_model=False)
