"""prepare-pairs@<set> stage: pairs/<set>/{train,heldout}.jsonl (preference pairs),
rejects.jsonl and report.json; and, apart from them, truth/pairs/<set>.json: what the
poisoning generator planted, which only the report stage reads (tests/test_preference.py
checks that no other stage depends on it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from igds.core.artifacts import atomic_dir, write_json, write_jsonl
from igds.params import Params
from igds.audit.pairs import build_pairs, report
from pipelines.audit.common import set_arg
from pipelines.common import main

log = logging.getLogger("prepare-pairs")


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = set_arg(params, args.set)
    prepared = build_pairs(cfg)
    summary = report(cfg, prepared)
    with atomic_dir(args.out) as tmp:
        for name in ("train", "heldout"):
            write_jsonl(tmp / f"{name}.jsonl", (p.to_dict() for p in getattr(prepared, name).records))
        write_jsonl(tmp / "rejects.jsonl", (r.to_dict() for name in ("train", "heldout")
                                            for r in getattr(prepared, name).rejects))
        write_json(tmp / "report.json", summary)
    write_json(args.truth, prepared.truth)
    log.info("wrote %s: read %d = accepted %d + rejected %d", args.out, summary["read"], summary["accepted"],
             summary["rejected"])
    for name, s in summary["splits"].items():
        log.info("  %-8s %5d accepted  %4d rejected %s", name, s["accepted"], s["rejected"], s["rejected_by_kind"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True, help="a name under audit.sets in params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="the pairs' folder (pairs/<set>)")
    parser.add_argument("--truth", type=Path, required=True, help="what was planted (truth/pairs/<set>.json)")


if __name__ == "__main__":
    main("prepare-pairs", run, _args, uses_model=False)
