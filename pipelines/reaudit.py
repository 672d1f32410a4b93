"""reaudit@<set>-<arm>-<seed> stage: reaudit/<set>-<arm>-s<seed>/metrics.json, the trained
model's and the base model's marker log-probability and greedy marker rate on the held-out
prompts (the plant templates of audit.sets.<set>.plant, the configured concept: none when the
set plants none), and the implicit reward margin and accuracy on the clean held-out pairs
(igds.reaudit)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from igds.artifacts import atomic_dir, write_json
from igds.config import Params
from igds.data.schema import DataError
from igds.models.loading import load_model
from igds.reaudit import reaudit
from pipelines.common import main, read_pairs, set_arg

log = logging.getLogger("reaudit")


def run(params: Params, args: argparse.Namespace) -> None:
    from peft import PeftModel  # noqa: PLC0415

    set_arg(params, args.set)
    cfg = params.audit
    plant = cfg.sets[args.set].plant
    heldout = read_pairs(args.pairs / "heldout.jsonl")
    if not (args.adapter / "adapter_config.json").is_file():
        raise DataError(f"{args.adapter} holds no adapter; run `dvc repro` for its dpo stage")
    t0 = time.perf_counter()
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    model = PeftModel.from_pretrained(loaded.model, args.adapter).eval()
    out = reaudit(model, loaded.tokenizer, heldout, list(plant.templates) if plant else [], params.scoring.batch_size,
                  cfg.dpo.max_len, cfg.reaudit_tokens)
    out.update({"set": args.set, "adapter": str(args.adapter), "wall_s": round(time.perf_counter() - t0, 3)})
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "metrics.json", out)
    rise = (sum(out["marker_logprob"]) - sum(out["marker_logprob_base"])) / len(heldout) if plant else None
    log.info("%s: held-out pair accuracy %.2f; marker log-prob rise %s; %.0f s", args.adapter.name, out["accuracy"],
             "n/a" if rise is None else f"{rise:+.3f}", out["wall_s"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True)
    parser.add_argument("--pairs", type=Path, required=True, help="pairs/<set> (its heldout.jsonl)")
    parser.add_argument("--adapter", type=Path, required=True, help="dpo/<set>-<arm>-s<seed>")
    parser.add_argument("--out", type=Path, required=True, help="reaudit/<set>-<arm>-s<seed>")


if __name__ == "__main__":
    main("reaudit", run, _args)
