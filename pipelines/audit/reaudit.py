"""reaudit@<set>-<arm>-<seed> stage: reaudit/<set>-<arm>-s<seed>/metrics.json, the trained
model's and the base model's marker log-probability and greedy marker rate on the held-out
prompts (the plant templates of audit.sets.<set>.plant, the configured concept: none when the
set plants none), and on the clean held-out pairs the implicit reward margin and the ranking
margin with their accuracies (igds.audit.reaudit).

reaudit-base@<set> (no --adapter): reaudit-base/<set>/metrics.json, the base model's values,
which every arm and seed of the set shares (--base of each re-audit): computed once."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from igds.core.artifacts import atomic_dir, read_json, write_json
from igds.params import Params
from igds.core.data.schema import DataError
from igds.core.models.loading import load_model
from igds.audit.reaudit import base_values, reaudit
from pipelines.audit.common import read_pairs, set_arg
from pipelines.common import main

log = logging.getLogger("reaudit")


def run(params: Params, args: argparse.Namespace) -> None:
    from peft import PeftModel  # noqa: PLC0415

    set_arg(params, args.set)
    cfg = params.audit
    plant = cfg.sets[args.set].plant
    heldout = read_pairs(args.pairs / "heldout.jsonl")
    templates = list(plant.templates) if plant else []
    t0 = time.perf_counter()
    if args.adapter is None:
        loaded = load_model(params.model.name, params.model.device, params.model.dtype)
        out = base_values(loaded.model.eval(), loaded.tokenizer, heldout, templates, params.scoring.batch_size,
                          cfg.dpo.max_len, cfg.reaudit_tokens)
        out.update({"set": args.set, "wall_s": round(time.perf_counter() - t0, 3)})
        with atomic_dir(args.out) as tmp:
            write_json(tmp / "metrics.json", out)
        log.info("%s: base values of %d held-out pairs in %.0f s", args.set, len(heldout), out["wall_s"])
        return
    if not (args.adapter / "adapter_config.json").is_file():
        raise DataError(f"{args.adapter} holds no adapter; run `dvc repro` for its dpo stage")
    if args.base is None or not (args.base / "metrics.json").is_file():
        raise DataError(f"{args.base}/metrics.json not found; run `dvc repro` for reaudit-base@{args.set}")
    base = read_json(args.base / "metrics.json")
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    model = PeftModel.from_pretrained(loaded.model, args.adapter).eval()
    try:
        out = reaudit(model, loaded.tokenizer, heldout, templates, params.scoring.batch_size, cfg.dpo.max_len,
                      cfg.reaudit_tokens, base)
    except ValueError as e:
        raise DataError(f"{args.base}: {e}") from None
    out.update({"set": args.set, "adapter": str(args.adapter), "wall_s": round(time.perf_counter() - t0, 3)})
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "metrics.json", out)
    rise = (sum(out["marker_logprob"]) - sum(out["marker_logprob_base"])) / len(heldout) if plant else None
    log.info("%s: held-out reward accuracy %.2f, ranking accuracy %.2f (base %.2f); marker log-prob rise %s; %.0f s",
             args.adapter.name, out["accuracy"], out["rank_accuracy"], out["rank_accuracy_base"],
             "n/a" if rise is None else f"{rise:+.3f}", out["wall_s"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True)
    parser.add_argument("--pairs", type=Path, required=True, help="pairs/<set> (its heldout.jsonl)")
    parser.add_argument("--adapter", type=Path, help="dpo/<set>-<arm>-s<seed>; none: the base model's values")
    parser.add_argument("--base", type=Path, help="reaudit-base/<set>: the base model's values (with --adapter)")
    parser.add_argument("--out", type=Path, required=True, help="reaudit/<set>-<arm>-s<seed> or reaudit-base/<set>")


if __name__ == "__main__":
    main("reaudit", run, _args)
