"""Scoring a pool in pieces: resumable chunks within a process, exact shards across processes.

A model's output for one example depends, in the last bits, on the batch it sits in (the
padded length changes the kernels' shapes: ~1e-6 nats between batchings here). So pieces
are cut from the *length-sorted* order that `iter_batches` uses, at batch boundaries: each
piece, scored alone, forms exactly the batches the whole pool would have formed, and its
scores are bit-identical to the unsharded run's. Methods whose score of an example depends
only on that example and its batch say so with `shardable = True` (igds, loss); the others
(set-level methods such as ZIP or k-center, or ones with other batchings such as IFD) score
the whole pool in shard 0, and their other shards are empty.

Chunks (`chunk_batches` batches each) are written atomically to `state_dir` as they finish;
a killed run restarted with the same fingerprint keeps them and scores only the rest.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from igds.core.artifacts import read_json, write_json, write_parquet
from igds.core.context import ScoringContext
from igds.core.data import Record
from igds.core.registry import Selector, SelectorResult
from igds.core.tokens import length_order

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r} is not allowed; expected 'i/n' with 0 <= i < n, e.g. 0/4")
    return i, n


def split_batches(order: np.ndarray, batch_size: int, n: int) -> list[np.ndarray]:
    """`order` cut into n contiguous runs of whole batches (sizes differ by at most one batch)."""
    n_batches = -(-len(order) // batch_size)
    bounds = np.linspace(0, n_batches, n + 1).round().astype(int) * batch_size
    return [order[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def shard_positions(pool: Sequence[Record], ctx: ScoringContext, shard: tuple[int, int]) -> np.ndarray:
    """Pool positions of shard i of n, in length order."""
    i, n = shard
    return split_batches(length_order(ctx.tokenized(list(pool))), ctx.batch_size, n)[i]


def _scored(selector: Selector, records: list[Record], ctx: ScoringContext) -> tuple[pd.DataFrame, dict]:
    """(id, score, the selector's per-example extras) of `records` in their order, and its info."""
    result = selector.score(records, ctx)
    if not isinstance(result, SelectorResult):
        raise TypeError(f"{selector.name}.score returned {type(result).__name__}, not a SelectorResult")
    scores = np.asarray(result.scores, dtype=float)
    if scores.shape != (len(records),):
        raise AssertionError(f"{selector.name} returned {scores.shape} scores for {len(records)} examples")
    frame = pd.DataFrame({"id": [r.id for r in records], "score": scores})
    for column, values in result.extras.items():
        if column in frame:
            raise ValueError(f"{selector.name}: extra column '{column}' clashes with id/score")
        frame[column] = np.asarray(values)
    return frame, dict(result.info)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=str), "score": pd.Series(dtype=float)})


def merge_info(infos: list[dict], sizes: list[int]) -> dict:
    """One info for the pieces: token counts add up, `mean_*` values are averaged over the
    pieces' examples, everything else (chosen features, settings) is the same in every piece."""
    pairs = [(info, n) for info, n in zip(infos, sizes) if n > 0]  # an empty piece says nothing
    if not pairs:
        return dict(infos[0]) if infos else {}
    infos, sizes = [info for info, _ in pairs], [n for _, n in pairs]
    merged = dict(infos[0])
    for key in merged:
        values = [info.get(key) for info in infos]
        if key.startswith("n_") and all(isinstance(v, int) for v in values):
            merged[key] = sum(values)
        elif key.startswith("mean_") and all(isinstance(v, (int, float)) for v in values):
            merged[key] = float(np.average(values, weights=sizes))
    return merged


def score_pool(selector: Selector, pool: Sequence[Record], ctx: ScoringContext, *,
               shard: tuple[int, int] = (0, 1), chunk_batches: int | None = None,
               state_dir: Path | None = None, fingerprint: str = "") -> tuple[pd.DataFrame, dict]:
    """Scores (id, score, any per-example extras) of the pool, or of one shard of it, and the
    selector's info. Rows come in pool order for the whole pool, in length order for a shard
    of a shardable method; a method scored whole fills shard 0 (pool order)."""
    pool = list(pool)
    if not selector.shardable:  # scored whole: in shard 0; the other shards are empty
        if shard[0] > 0:
            return _empty(), {}
        return _scored(selector, pool, ctx)

    positions = shard_positions(pool, ctx, shard)
    n_chunks = max(1, -(-len(positions) // (ctx.batch_size * chunk_batches))) if chunk_batches else 1
    chunks = split_batches(positions, ctx.batch_size, n_chunks)
    state_dir = Path(state_dir) if state_dir is not None else None
    if state_dir is not None:
        meta = state_dir / "fingerprint.json"
        if meta.is_file() and read_json(meta).get("fingerprint") != fingerprint:
            log.info("discarding %s: it belongs to another run", state_dir)
            shutil.rmtree(state_dir)
        if not meta.is_file():
            write_json(meta, {"fingerprint": fingerprint, "n_chunks": n_chunks})
    frames, infos, resumed = [], [], 0
    for j, chunk in enumerate(chunks):
        if len(chunk) == 0:  # more shards than batches: this piece is empty
            frames.append(_empty())
            infos.append({})
            continue
        path = state_dir / f"chunk-{j:04d}.parquet" if state_dir is not None else None
        if path is not None and path.is_file():
            frames.append(pd.read_parquet(path))
            infos.append(read_json(path.with_suffix(".json")))
            resumed += 1
            continue
        frame, info = _scored(selector, [pool[i] for i in chunk], ctx)
        if path is not None:
            write_json(path.with_suffix(".json"), info)  # before the parquet: a chunk counts once both exist
            write_parquet(path, frame)
        frames.append(frame)
        infos.append(info)
    if resumed:
        log.info("resumed: %d of %d chunks were already scored (%s)", resumed, len(chunks), state_dir)
    frame = pd.concat(frames, ignore_index=True)
    if shard == (0, 1):  # the whole pool: back to pool order
        frame = frame.set_index("id").loc[[r.id for r in pool]].reset_index()
    info = merge_info(infos, [len(c) for c in chunks])
    info["resumed_chunks"] = resumed
    return frame, info


def merge_shards(pool: Sequence[Record], frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The shards' rows in pool order; every pool example exactly once."""
    frame = pd.concat(frames, ignore_index=True)
    ids = [r.id for r in pool]
    counts = frame["id"].value_counts()
    if len(frame) != len(ids) or set(frame["id"]) != set(ids) or (counts > 1).any():
        missing = sorted(set(ids) - set(frame["id"]))[:3]
        raise ValueError(f"the shards hold {len(frame)} rows for a pool of {len(ids)} (missing e.g. {missing}, "
                         f"duplicated: {int((counts > 1).sum())}); rerun the shard stages on this pool")
    return frame.set_index("id").loc[ids].reset_index()
