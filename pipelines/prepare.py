"""prepare stage: data/{prior,pool,eval,general}.jsonl (+ probe.jsonl, val.jsonl, sae.jsonl: empty unless configured), data/rejects.jsonl, data/report.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from igds.core.artifacts import atomic_dir, write_json, write_jsonl
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import build_splits
from igds.core.data.splits import OPTIONAL_SPLITS
from pipelines.common import main

log = logging.getLogger("prepare")


def run(params: Params, args: argparse.Namespace) -> None:
    if params.data is None:
        raise ConfigError("params.yaml: section 'data' is missing")
    prepared = build_splits(params.data, params.seed)
    with atomic_dir(args.out) as tmp:
        for name in prepared.splits:
            write_jsonl(tmp / f"{name}.jsonl", (r.to_dict() for r in prepared.splits[name]))
        for optional in OPTIONAL_SPLITS:  # always present, so the stages reading them can depend on them
            if optional not in prepared.splits:
                write_jsonl(tmp / f"{optional}.jsonl", [])
        write_jsonl(tmp / "rejects.jsonl", (r.to_dict() for r in prepared.rejects))
        write_json(tmp / "report.json", prepared.report)
    report = prepared.report
    log.info("wrote %s: read %d = accepted %d + rejected %d", args.out, report["read"], report["accepted"], report["rejected"])
    for name, s in report["splits"].items():
        log.info("  %-12s %5d accepted  %4d rejected  on-task %.2f", name, s["accepted"], s["rejected"], s["on_task_share"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder (default: data)")


if __name__ == "__main__":
    main("prepare", run, _args)
