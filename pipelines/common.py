"""What every stage entry point shares: --params, logging, and one-line user errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from igds.core import timing
from igds.core.config import ConfigError
from igds.params import Params, load_params
from igds.core.data import DataError
from igds.validate import validate
from igds.core.registry import did_you_mean
from pipelines.graph import check_fresh

USER_ERRORS = (ConfigError, DataError, FileNotFoundError)

# which SAE / features directories a stage reads (checked against params before it starts)
Reads = Callable[[Params, argparse.Namespace], dict[str, Path]]


def main(stage: str, run: Callable[[Params, argparse.Namespace], None],
         add_args: Callable[[argparse.ArgumentParser], None] | None = None, *,
         uses_model: bool = True, reads: Reads | None = None, autocast: bool = False) -> None:
    """Parse args, load and check params, run the stage; a user error exits 2 with one line.

    `uses_model`: check params against the model's config first (from its config file: no
    weights are loaded). `reads(params, args)` names the artifacts the stage reads:
    {"sae": dir, "features": dir}, checked against params when they exist. `autocast`: the
    stage fine-tunes, scores or evaluates, so it runs under model.autocast (mixed precision)."""
    timing.start(stage)  # bench.floor's record of where this process's time goes ($IGDS_STAGE_TIMES)
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}")
    parser.add_argument("--params", default="params.yaml", help="params file, or a profile of overrides (configs/<name>.yaml) (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        timing.mark("run_start")
        params = load_params(args.params)
        check_fresh(params, args.params)  # the stage graph (graph.yaml) is the one params.yaml gives
        artifacts = reads(params, args) if reads is not None else {}
        validate(params, check_model=uses_model, sae_dir=artifacts.get("sae"), features_dir=artifacts.get("features"))
        precision = contextlib.nullcontext()
        if autocast and params.model.autocast is not None:
            from igds.core.models.loading import mixed_precision  # noqa: PLC0415 (torch: only stages that use it)

            precision = mixed_precision(params.model.device, params.model.autocast)
        with precision:
            run(params, args)
        timing.mark("run_end")
    except USER_ERRORS as e:
        print(f"{stage}: error: {e}", file=sys.stderr)
        sys.exit(2)


def method_arg(params: Params, method: str) -> str:
    """--method must be a method params.yaml lists under `methods:` (its params come from there)."""
    if method not in params.methods:
        raise ConfigError(f"--method {method!r} is not under methods: in params.yaml{did_you_mean(method, params.methods)}; "
                          f"expected one of {', '.join(params.methods)}")
    return method


def read_rows(path: Path, made_by: str) -> list[dict]:
    """The rows of a JSONL artifact; a DataError naming the stage that writes it when it is missing."""
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro` for {made_by}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
