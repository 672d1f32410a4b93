"""Stage-level io shared by the pipelines: reading the prepared splits, timing, memory."""

from __future__ import annotations

import argparse

import json
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError, Record, pool_file


def read_split(path: str | Path) -> list[Record]:
    """Records of a prepared split (data/<split>.jsonl, written by the prepare stage)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro prepare` first")
    with open(path, encoding="utf-8") as f:
        return [Record(**json.loads(line)) for line in f if line.strip()]


def pools(params: Params) -> tuple[str, ...]:
    """The candidate pools, in params order: data.pools (the mixed pool without a data section)."""
    return params.data.pools if params.data is not None else ("mixed",)


def pool_arg(params: Params, pool: str) -> str:
    """--pool must be one of params.yaml's data.pools."""
    if pool not in pools(params):
        raise ConfigError(f"--pool {pool!r} is not in data.pools = {list(pools(params))} in params.yaml")
    return pool


def read_pool(data: str | Path, pool: str) -> list[Record]:
    """The records of candidate pool `pool` (data/pools/<pool>.jsonl)."""
    return read_split(Path(data) / f"{pool_file(pool)}.jsonl")


def read_pools(data: str | Path, params: Params) -> list[Record]:
    """Every pool's records once (the pools may share examples), in data.pools order."""
    seen, out = set(), []
    for pool in params.data.pools if params.data is not None else ("mixed",):
        for record in read_pool(data, pool):
            if record.id not in seen:
                seen.add(record.id)
                out.append(record)
    return out


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


@contextmanager
def timed(into: dict, key: str = "wall_s"):
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 3)


def subset_args(parser: argparse.ArgumentParser) -> None:
    """The arguments of the stage that writes a subset (pipelines.subset): the run's ratio and
    seed (igds.core.runs.RunId with --pool and the subset's name), its inputs and the output roots."""
    parser.add_argument("--ratio", default=None, help="the final size as a share of the pool, in (0, 1) (none for full)")
    parser.add_argument("--seed", type=int, required=True, help="the training seed this subset is for")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the candidate pool (one of data.pools; default: mixed)")
    parser.add_argument("--scores", type=Path, default=Path("scores"))
    parser.add_argument("--out", type=Path, default=Path("subsets"), help="the subsets' root (a pool's folder under it)")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="the metrics' root")
