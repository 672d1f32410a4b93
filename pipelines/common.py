"""What every stage entry point shares: --params, logging, and one-line user errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from igds.config import ConfigError, Params, load_params
from igds.data import DataError
from igds.validate import validate

USER_ERRORS = (ConfigError, DataError, FileNotFoundError)
MODEL_STAGES = ("prepare", "sae", "identify", "score", "finetune", "evaluate")  # prepare: fail before any work


def _artifacts_read(stage: str, args: argparse.Namespace) -> dict:
    """The SAE / features directories this stage reads, checked against params before it starts."""
    if stage in ("identify", "evaluate") or (stage == "score" and args.method == "igds"):
        return {"sae_dir": args.sae, "features_dir": getattr(args, "features", None)}
    return {}


def main(stage: str, run: Callable[[Params, argparse.Namespace], None],
         add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Parse args, load params, run the stage; a user error exits 2 with one line, no traceback."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
        validate(params, check_model=stage in MODEL_STAGES, **_artifacts_read(stage, args))
        run(params, args)
    except USER_ERRORS as e:
        print(f"{stage}: error: {e}", file=sys.stderr)
        sys.exit(2)


def distributed(cpu: bool):
    """accelerate's process state when this runs as one of several processes (launched by
    `accelerate launch` or torchrun: data-parallel scoring or fine-tuning), else None (accelerate is not
    even imported). On CPU the processes talk through gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState  # noqa: PLC0415

    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        raise ConfigError(f"WORLD_SIZE = {os.environ['WORLD_SIZE']} but accelerate set up one process; launch with "
                          "`accelerate launch --multi_gpu --num_processes N` (gloo on CPU) or torchrun")
    return state
