"""The splits (prior, pool, eval, general, and the optional probe, val and sae), the mixed pool, and their
disjointness.

No example is in two splits: ids are content hashes, and the splits are read in priority
order (eval first, so nothing evaluated is ever trained on or used to pick features); a
record a split read earlier keeps is rejected from the later ones with the reason and not
counted. Counts are applied after that de-duplication: each split reads on until it has
its count, and a source that cannot supply it is refused (a one-line DataError), so the
composition params.yaml asks for is the one prepared, or none is.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from igds.core.config import ConfigError, DataConfig, SourceConfig
from igds.core.data.degrade import degradation, degrade_share
from igds.core.data.schema import Record, Reject
from igds.core.data.sources import DataError, SplitData, read_source

log = logging.getLogger(__name__)

SPLITS = ("prior", "pool", "eval", "general")  # always present
# probe: held-out non-target tasks for evaluation; val: the target task for recipe search's
# objective (igds.recipes.search), never eval; each when configured
# sae: the SAE's own text (plain, no chat template), when configured
OPTIONAL_SPLITS = ("probe", "val", "sae")
PRIORITY = ("eval", "val", "probe", "prior", "pool", "general", "sae")  # an id in several splits stays in the first


def split_names(cfg: DataConfig) -> tuple[str, ...]:
    """The files this config prepares (data/<name>.jsonl), in file order: the pool split is
    one file per pool of data.pools, pools/<pool>."""
    names = SPLITS + tuple(n for n in OPTIONAL_SPLITS if getattr(cfg.splits, n) is not None)
    return tuple(x for n in names for x in ([pool_file(p) for p in cfg.pools] if n == "pool" else [n]))


def pool_file(pool: str) -> str:
    """A pool's prepared file, data/<pool_file>.jsonl."""
    return f"pools/{pool}"


@dataclass
class Prepared:
    splits: dict[str, list[Record]]  # by file name (split_names)
    rejects: list[Reject]
    report: dict


def mix_pool(on_task: list[Record], distractors: list[Record], rng: np.random.Generator) -> list[Record]:
    """A mixed pool: both lists shuffled together (labels stay in Record.task)."""
    pool = on_task + distractors
    order = rng.permutation(len(pool))
    return [pool[i] for i in order]


def on_task_share(records: list[Record], target_task: str) -> float:
    return sum(r.task == target_task for r in records) / len(records) if records else 0.0


def build_splits(cfg: DataConfig, seed: int) -> Prepared:
    """Read every split's source in priority order, build each pool of data.pools, check the
    composition, report. The pools are alternatives (a run trains on one of them), so they may
    share examples with each other, never with another split."""
    data: dict[str, SplitData] = {}
    held: dict[str, str] = {}  # id -> the split that keeps it
    for name in sorted(SPLITS + OPTIONAL_SPLITS, key=PRIORITY.index):
        source = getattr(cfg.splits, name)
        if source is None:
            continue
        outside = dict(held)  # what the splits read before this one keep
        for file in ([pool_file(p) for p in cfg.pools] if name == "pool" else [name]):
            if file == pool_file("mixed") and cfg.mix is not None:
                data[file] = _mixed_pool(cfg, source, seed, outside)
            elif file == pool_file("within"):
                data[file] = _read(cfg, "pool", source, outside, f"the within-task pool (data.splits.pool.n = "
                                   f"{source.n}, all {cfg.target_task})")
                _check_only_target(cfg, data[file])
                if cfg.degrade is not None:
                    _degrade_pool(cfg, data[file], outside, seed)
            else:
                data[file] = _read(cfg, name, source, outside, f"split '{name}' (data.splits.{name}.n = {source.n})")
            held.update(dict.fromkeys((r.id for r in data[file].records), name))
            log.info("%s: %d accepted, %d rejected from %s", file, len(data[file].records),
                     len(data[file].rejects), source.describe())
    names = split_names(cfg)
    for name in names:
        _check_not_empty(cfg, name, data[name])
    for pool in cfg.pools:
        _check_target_label(cfg, data[pool_file(pool)])
    for name in names:
        _check_role_label(cfg, name, data[name])
    rejects = [r for name in names for r in data[name].rejects]
    return Prepared({name: data[name].records for name in names}, rejects, _report(cfg, names, data))


def _check_only_target(cfg: DataConfig, pool: SplitData) -> None:
    """Every example of the within-task pool is of the target task."""
    other = sorted({r.task for r in pool.records} - {cfg.target_task})
    if other:
        raise ConfigError(f"params.yaml: data.pools has 'within', but data.splits.pool ({cfg.splits.pool.describe()}) "
                          f"holds tasks {other} besides data.target_task = {cfg.target_task!r}; the within-task pool "
                          "is the target task only: give data.splits.pool the target task alone")


def _read(cfg: DataConfig, split: str, source: SourceConfig, held: dict[str, str], asked: str,
          n: int | None = None, seen: dict[str, str] | None = None) -> SplitData:
    """read_source, and a DataError when the source supplies fewer records than asked for."""
    data = read_source(split, source, max_chars=cfg.max_chars, strict=cfg.strict, n=n, held=held, seen=seen)
    wanted = source.n if n is None else n
    if wanted is not None and len(data.records) < wanted:
        kinds = ", ".join(f"{k} {c}" for k, c in sorted(Counter(r.kind for r in data.rejects).items()))
        shared = ("; records another split keeps do not count, so splits read from one file must fit in it together"
                  if any(r.kind == "in_other_split" for r in data.rejects) else "")
        raise DataError(f"{asked}: {wanted} records asked for, but {source.describe()} supplies {len(data.records)} "
                        f"({data.n_read} read, {len(data.rejects)} rejected: {kinds or 'none'}); ask for fewer or "
                        f"give it a source with more records{shared}")
    return data


def _mixed_pool(cfg: DataConfig, source: SourceConfig, seed: int, held: dict[str, str]) -> SplitData:
    """The pool's on-task share from its own source, the rest distractors, shuffled together."""
    total, share = source.n, cfg.mix.on_task_share
    if total is None:
        raise ConfigError("params.yaml: data.splits.pool.n = None is not allowed; expected a positive "
                          "integer when data.mix makes a mixed pool")
    n_on = round(share * total)
    if n_on == 0:
        raise ConfigError(f"params.yaml: data.mix.on_task_share = {share} is not allowed with data.splits.pool.n = "
                          f"{total}; expected a share that leaves the mixed pool an on-task part "
                          f"(round(share x n) >= 1)")
    on = _read(cfg, "pool", source, held, f"the mixed pool's on-task part (data.splits.pool.n x "
               f"data.mix.on_task_share = {total} x {share})", n=n_on)
    # a distractor with an on-task record's content is a duplicate within the pool: the on-task copy stays
    seen = {id_: f"the on-task record at {location}:{line}" for id_, (location, line) in on.origin.items()}
    off = (_read(cfg, "pool", cfg.mix.distractors, held, f"the mixed pool's distractors (data.splits.pool.n - "
                 f"the on-task part = {total} - {n_on})", n=total - n_on, seen=seen)
           if total > n_on else SplitData("pool"))
    merged = SplitData("pool", n_read=on.n_read + off.n_read, rejects=on.rejects + off.rejects,
                       origin={**off.origin, **on.origin})
    merged.records = mix_pool(on.records, off.records, np.random.default_rng([seed, source.seed]))
    merged.check()
    return merged


def _degrade_pool(cfg: DataConfig, pool: SplitData, held: dict[str, str], seed: int) -> None:
    """Damage data.degrade.share of the within-task pool's examples in place (igds.core.data.degrade);
    a kind that cannot damage the task's solutions is a ConfigError, not a smaller share."""
    where = [i for i, r in enumerate(pool.records) if r.task == cfg.target_task]
    try:
        damaged = degrade_share([pool.records[i] for i in where], cfg.degrade.share, cfg.degrade.kinds,
                                np.random.default_rng([seed, cfg.degrade.seed]))
    except ValueError as e:
        raise ConfigError(f"params.yaml: data.degrade.kinds = {list(cfg.degrade.kinds)}: {e}") from None
    taken = [r.id for r in damaged if degradation(r) is not None and (r.id in held or r.id in pool.origin)]
    if taken:
        raise DataError(f"data.degrade made {len(taken)} example(s) that another record already is "
                        f"(first: {taken[0]}); change data.degrade.seed")
    for i, record in zip(where, damaged):
        pool.records[i] = record


def _check_target_label(cfg: DataConfig, pool: SplitData) -> None:
    """The pool's on-task records are the ones labelled data.target_task: some must be."""
    if any(r.task == cfg.target_task for r in pool.records):
        return
    labels = ", ".join(f"{task} ({n})" for task, n in sorted(Counter(r.task for r in pool.records).items()))
    raise DataError(f"no record of the pool ({_describe(cfg, 'pool')}) carries the target task label "
                    f"data.target_task = {cfg.target_task!r} (its labels: {labels}); set data.target_task to "
                    f"the on-task label, or give the pool's source `task: {cfg.target_task}`")


ON_TARGET = ("prior", "eval", "val")  # the splits that are the target task: its features, its test, its search objective
OFF_TARGET = ("probe",)  # held-out other tasks: the forgetting check


def _check_role_label(cfg: DataConfig, name: str, split: SplitData) -> None:
    """Every record of prior, eval and val carries the target task's label, and none of probe
    does: a split of another task (a file's stem as its label, a profile that changed the target
    task) would otherwise pass with an on-task share of 0 and no word."""
    if name not in ON_TARGET + OFF_TARGET:
        return
    labels = Counter(r.task for r in split.records)
    wrong = {t: n for t, n in labels.items() if (t != cfg.target_task) == (name in ON_TARGET)}
    if not wrong:
        return
    shown = ", ".join(f"{t} ({n})" for t, n in sorted(wrong.items()))
    if name in ON_TARGET:
        raise DataError(f"split '{name}' ({_describe(cfg, name)}) holds {sum(wrong.values())} of {len(split.records)} "
                        f"records of other tasks than data.target_task = {cfg.target_task!r}: {shown}; {name} is the "
                        f"target task's: give data.splits.{name} the target task (a file's records take its `task:`, "
                        "else the file's stem), or set data.target_task")
    raise DataError(f"split '{name}' ({_describe(cfg, name)}) holds {sum(wrong.values())} records of data.target_task "
                    f"= {cfg.target_task!r}; probe holds other tasks (the forgetting check): drop the target task "
                    f"from data.splits.{name}")


def _check_not_empty(cfg: DataConfig, name: str, split: SplitData) -> None:
    if split.records:
        return
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.kind for r in split.rejects).items()))
    first = f"; first: {split.rejects[0].message()}" if split.rejects else ""
    raise DataError(f"split '{name}' ({_describe(cfg, name)}) is empty after validation: {split.n_read} read, "
                    f"{len(split.rejects)} rejected ({kinds or 'none'}){first}; fix the records or point "
                    f"data.splits.{'pool' if name.startswith('pools/') else name} at another source")


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
                **({"degraded": dict(sorted(Counter(k for r in data[name].records
                                                    if (k := degradation(r)) is not None).items()))}
                   if name == pool_file("within") and cfg.degrade is not None else {}),
            }
            for name in names
        },
    }
    for name in names:
        form = form_auroc(data[name].records, cfg.target_task)
        if form:
            report["splits"][name]["form_auroc"] = form
    for key in ("read", "accepted", "rejected"):
        report[key] = sum(s[key] for s in report["splits"].values())
    assert report["read"] == report["accepted"] + report["rejected"]
    return report


def form_auroc(records: list[Record], target_task: str) -> dict[str, float]:
    """How well the response's form alone finds the on-task examples: the on-task AUROC of the
    best rule on the response's length in characters, and on its line count (max(A, 1 - A): either
    direction); 0.5 is no information. {} unless both on- and off-task examples are present."""
    from igds.core.selection_metrics import auroc  # noqa: PLC0415 (it imports igds.core.data)

    labels = np.array([r.task == target_task for r in records])
    if labels.all() or not labels.any():
        return {}
    out = {}
    for key, values in (("response_chars", [len(r.output) for r in records]),
                        ("response_lines", [r.output.count("\n") + 1 for r in records])):
        a = auroc(np.array(values, dtype=float), labels)
        out[key] = round(max(a, 1.0 - a), 6)
    return out


def _describe(cfg: DataConfig, name: str) -> str:
    text = getattr(cfg.splits, "pool" if name.startswith("pools/") else name).describe()
    if name == pool_file("mixed") and cfg.mix is not None:
        text += f" mixed with {cfg.mix.distractors.describe()} at on-task share {cfg.mix.on_task_share}"
    if name == pool_file("within") and cfg.degrade is not None:
        text += f", {cfg.degrade.share:.0%} of its {cfg.target_task} examples degraded ({', '.join(cfg.degrade.kinds)})"
    return text
