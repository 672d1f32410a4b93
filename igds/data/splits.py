"""The splits (prior, pool, eval, general, and the optional probe), the mixed pool, and their
disjointness.

No example is in two splits: ids are content hashes, and an id found in more than one
split is kept in the one with priority (eval first, so nothing evaluated is ever trained
on or used to pick features) and rejected from the others with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from igds.config import ConfigError, DataConfig
from igds.data.schema import Record, Reject
from igds.data.sources import DataError, SplitData, read_source

log = logging.getLogger(__name__)

SPLITS = ("prior", "pool", "eval", "general")  # always present
OPTIONAL_SPLITS = ("probe",)  # held-out non-target tasks for evaluation, when configured
PRIORITY = ("eval", "probe", "prior", "pool", "general")  # an id in several splits stays in the first


def split_names(cfg: DataConfig) -> tuple[str, ...]:
    """The splits this config prepares, in file order."""
    return SPLITS + tuple(n for n in OPTIONAL_SPLITS if getattr(cfg.splits, n) is not None)


@dataclass
class Prepared:
    splits: dict[str, list[Record]]
    rejects: list[Reject]
    report: dict


def mix_pool(on_task: list[Record], distractors: list[Record], rng: np.random.Generator) -> list[Record]:
    """A mixed pool: both lists shuffled together (labels stay in Record.task)."""
    pool = on_task + distractors
    order = rng.permutation(len(pool))
    return [pool[i] for i in order]


def on_task_share(records: list[Record], target_task: str) -> float:
    return sum(r.task == target_task for r in records) / len(records) if records else 0.0


def drop_cross_split(data: dict[str, SplitData]) -> None:
    """Reject every record whose id already sits in a split of higher priority."""
    owner: dict[str, str] = {}
    for name in PRIORITY:
        if name not in data:
            continue
        split, kept = data[name], []
        for record in split.records:
            if record.id in owner:
                location, line = split.origin.get(record.id, (record.source, 0))
                split.rejects.append(Reject(
                    name, location, line, "in_other_split",
                    f"id {record.id} is also in split '{owner[record.id]}', which keeps it", record.instruction[:300],
                ))
            else:
                owner[record.id] = name
                kept.append(record)
        split.records = kept
        split.check()


def build_splits(cfg: DataConfig, seed: int) -> Prepared:
    """Read every split's source, build the (mixed) pool, enforce disjointness, report."""
    names = split_names(cfg)
    data: dict[str, SplitData] = {}
    for name in names:
        source = getattr(cfg.splits, name)
        data[name] = _mixed_pool(cfg, source, seed) if name == "pool" and cfg.mix is not None else \
            read_source(name, source, max_chars=cfg.max_chars, strict=cfg.strict)
        log.info("%s: %d accepted, %d rejected from %s", name, len(data[name].records),
                 len(data[name].rejects), source.describe())
    # Duplicates inside the mixed pool (a distractor equal to an on-task example) count once.
    _dedup_within(data["pool"])
    drop_cross_split(data)
    for name in names:
        _check_not_empty(cfg, name, data[name])
    rejects = [r for name in names for r in data[name].rejects]
    return Prepared({name: data[name].records for name in names}, rejects, _report(cfg, names, data))


def _mixed_pool(cfg: DataConfig, source, seed: int) -> SplitData:
    """The pool's on-task share from its own source, the rest distractors, shuffled together."""
    total = source.n
    if total is None:
        raise ConfigError("params.yaml: data.splits.pool.n = None is not allowed; expected a positive "
                          "integer when data.mix makes a mixed pool")
    n_on = round(cfg.mix.on_task_share * total)
    on = read_source("pool", source, max_chars=cfg.max_chars, strict=cfg.strict, size=n_on)
    off = (read_source("pool", dataclasses.replace(cfg.mix.distractors, n=total - n_on), max_chars=cfg.max_chars,
                       strict=cfg.strict) if total > n_on else SplitData("pool"))
    _drop_distractor_copies(on, off)  # the on-task copy is kept, whatever the shuffle
    merged = SplitData("pool", n_read=on.n_read + off.n_read, rejects=on.rejects + off.rejects,
                       origin={**off.origin, **on.origin})
    merged.records = mix_pool(on.records, off.records, np.random.default_rng([seed, source.seed]))
    merged.check()
    return merged


def _check_not_empty(cfg: DataConfig, name: str, split: SplitData) -> None:
    if split.records:
        return
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.kind for r in split.rejects).items()))
    first = f"; first: {split.rejects[0].message()}" if split.rejects else ""
    raise DataError(f"split '{name}' ({_describe(cfg, name)}) is empty after validation: {split.n_read} read, "
                    f"{len(split.rejects)} rejected ({kinds or 'none'}){first}; fix the records or point "
                    f"data.splits.{name} at another source")


def _report(cfg: DataConfig, names, data: dict[str, SplitData]) -> dict:
    """data/report.json: per split, where it came from, read = accepted + rejected, why, which tasks."""
    report = {
        "target_task": cfg.target_task,
        "splits": {
            name: {
                "source": _describe(cfg, name),
                "read": data[name].n_read,
                "accepted": len(data[name].records),
                "rejected": len(data[name].rejects),
                "rejected_by_kind": dict(sorted(Counter(r.kind for r in data[name].rejects).items())),
                "on_task_share": round(on_task_share(data[name].records, cfg.target_task), 6),
                "tasks": dict(sorted(Counter(r.task for r in data[name].records).items())),
            }
            for name in names
        },
    }
    for key in ("read", "accepted", "rejected"):
        report[key] = sum(s[key] for s in report["splits"].values())
    assert report["read"] == report["accepted"] + report["rejected"]
    return report


def _drop_distractor_copies(on: SplitData, off: SplitData) -> None:
    """A distractor with the content of an on-task record is rejected at its own file:line."""
    kept = []
    for record in off.records:
        if record.id in on.origin:
            location, line = off.origin.get(record.id, (record.source, 0))
            at = ":".join(map(str, on.origin[record.id]))
            off.rejects.append(Reject(off.name, location, line, "duplicate_id",
                                      f"duplicate id {record.id} within split '{off.name}': the same content as "
                                      f"the on-task record at {at}", record.instruction[:300]))
            off.origin.pop(record.id, None)
        else:
            kept.append(record)
    off.records = kept
    off.check()


def _dedup_within(split: SplitData) -> None:
    seen, kept = set(), []
    for record in split.records:
        if record.id in seen:
            location, line = split.origin.get(record.id, (record.source, 0))
            split.rejects.append(Reject(split.name, location, line, "duplicate_id",
                                        f"duplicate id {record.id} within split '{split.name}'", record.instruction[:300]))
        else:
            seen.add(record.id)
            kept.append(record)
    split.records = kept
    split.check()


def _describe(cfg: DataConfig, name: str) -> str:
    text = getattr(cfg.splits, name).describe()
    if name == "pool" and cfg.mix is not None:
        text += f" mixed with {cfg.mix.distractors.describe()} at on-task share {cfg.mix.on_task_share}"
    return text
