"""Stage-level io shared by the pipelines: reading the prepared splits, timing, memory."""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from igds.data import DataError, Record


def read_split(path: str | Path) -> list[Record]:
    """Records of a prepared split (data/<split>.jsonl, written by the prepare stage)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro prepare` first")
    with open(path, encoding="utf-8") as f:
        return [Record(**json.loads(line)) for line in f if line.strip()]


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


@contextmanager
def timed(into: dict, key: str = "wall_s"):
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 3)
