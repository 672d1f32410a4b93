"""view-audit@<set> stage: results/audit/<set>.html, the audit's viewer (igds.audit.view), one
self-contained page built from audit/<set>/ alone: it never reads what was planted, so a
person can judge the concepts blind."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from igds.core.artifacts import atomic_file, read_json
from igds.audit.view import audit_page
from igds.params import Params
from igds.core.data.schema import DataError
from pipelines.audit.common import set_arg
from pipelines.common import main

log = logging.getLogger("view-audit")


def run(params: Params, args: argparse.Namespace) -> None:
    set_arg(params, args.set)
    for name in ("summary.json", "concepts.csv", "topics.csv", "null.csv", "examples.json"):
        if not (args.audit / name).is_file():
            raise DataError(f"{args.audit}/{name} not found; run `dvc repro` for audit@{args.set}")
    concepts = pd.read_csv(args.audit / "concepts.csv", index_col="concept")
    topics = pd.read_csv(args.audit / "topics.csv")
    null = pd.read_csv(args.audit / "null.csv")
    examples = read_json(args.audit / "examples.json")["concepts"]
    text = audit_page(args.set, read_json(args.audit / "summary.json"), concepts, topics, null, examples,
                      params.audit.stats.fdr)
    with atomic_file(args.out) as f:
        f.write(text)
    log.info("%s: wrote %s (%.1f MB, %d concepts with examples)", args.set, args.out, len(text) / 1e6, len(examples))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True, help="a name under audit.sets in params.yaml")
    parser.add_argument("--audit", type=Path, required=True, help="audit/<set>")
    parser.add_argument("--out", type=Path, required=True, help="results/audit/<set>.html")


if __name__ == "__main__":
    main("view-audit", run, _args, uses_model=False)
