"""Where a stage process's time goes, for bench.floor (issue 33): off unless $IGDS_STAGE_TIMES
names a file, then each stage process appends one JSON line to it as it exits:

    {"stage", "argv", "pid", "started", "main", "run_start", "run_end", "exit",
     "model_load_s", "train_tokens", "forward_tokens"}

`started` is when the OS started the process (/proc/self/stat), `main` when the stage's entry
point began (so main - started is interpreter start-up and imports), `run_start`/`run_end`
bracket the stage's work (params checked, then the work itself), `exit` is when Python began
to exit (after the outputs were written). Times are seconds since the epoch.

The token counts are what every forward pass of a loaded model did, counted by hooks on its
decoder layers: the tokens that are not padding (as a share of the last input the embedding
saw), weighted by the share of the layers run (scoring to layer L counts L+1 of N). Passes
with gradients enabled count as training tokens, the rest as forward tokens; a
gradient-checkpointed backward's recomputation counts again as training.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator

ENV = "IGDS_STAGE_TIMES"

_record: dict | None = None


def process_started() -> float | None:
    """When the OS started this process (seconds since the epoch; Linux), else None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def start(stage: str) -> None:
    """Called first by a stage's entry point: when $IGDS_STAGE_TIMES names a file, this process's
    record is kept and appended to it (one line, one write) when the process exits."""
    global _record
    path = os.environ.get(ENV)
    if not path or _record is not None:
        return
    _record = {"stage": stage, "argv": sys.argv[1:], "pid": os.getpid(), "started": process_started(),
               "main": time.time(), "model_load_s": 0.0, "train_tokens": 0.0, "forward_tokens": 0.0}
    atexit.register(_write, path)


def mark(name: str) -> None:
    """The time of `name` (run_start, run_end) in this process's record, when one is kept."""
    if _record is not None:
        _record[name] = time.time()


@contextlib.contextmanager
def model_load() -> Iterator[None]:
    """Add the time inside the block to this process's model load seconds."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if _record is not None:
            _record["model_load_s"] += time.perf_counter() - t0


def count_tokens(model, pad_id: int | None) -> None:
    """Count `model`'s forward tokens into this process's record (nothing when none is kept)."""
    if _record is None:
        return
    import torch  # noqa: PLC0415

    from igds.core.models.residual import decoder_layers  # noqa: PLC0415

    layers = decoder_layers(model)
    real = {"share": 1.0}

    def on_embed(module, args):
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and ids.numel() and pad_id is not None:
            real["share"] = float((ids != pad_id).sum()) / ids.numel()

    def on_layer(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.dim() >= 2:
            key = "train_tokens" if torch.is_grad_enabled() else "forward_tokens"
            _record[key] += hidden.shape[0] * hidden.shape[1] * real["share"] / len(layers)

    model.get_input_embeddings().register_forward_pre_hook(on_embed)
    for layer in layers:
        layer.register_forward_pre_hook(on_layer, with_kwargs=True)


def _write(path: str) -> None:
    record = {**_record, "exit": time.time()}
    line = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines of concurrent processes never interleave
    finally:
        os.close(fd)
