"""Record sources: reasoning-gym generators (offline default), JSONL files, HF datasets.

Each source yields raw items with their location; `read_source` validates them into
Records and Rejects so that read = accepted + rejected holds for every split.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igds.config import SourceConfig
from igds.data.schema import DataError, Invalid, Record, Reject, normalise

log = logging.getLogger(__name__)

_RAW_CHARS = 300  # how much of a bad record the rejects file keeps
_FIX = {
    "not_utf8": "re-encode the file as UTF-8",
    "malformed_json": "each line must be one complete JSON object",
    "missing_field": "add the field or fix its name",
    "empty_field": "fill the field or drop the record",
    "wrong_type": "the field must be a JSON string",
    "unknown_shape": "use question/answer (GSM8K) or instruction/input/output fields",
    "no_final_answer": "end the answer with '#### <number>'",
    "over_long": "shorten it or raise data.max_chars",
    "not_object": "each line must be a JSON object {...}",
    "duplicate_id": "remove the repeated example",
}


@dataclass
class SplitData:
    """One split after validation. Invariant: n_read == len(records) + len(rejects)."""

    name: str
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    n_read: int = 0
    origin: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (location, line)

    def check(self) -> None:
        if self.n_read != len(self.records) + len(self.rejects):
            raise AssertionError(
                f"split {self.name}: read {self.n_read} != accepted {len(self.records)} + rejected {len(self.rejects)}"
            )


@dataclass(frozen=True)
class _Item:
    location: str
    line: int
    payload: Any  # bytes (a JSONL line) or an already-parsed object
    task: str


def _reasoning_gym_items(cfg: SourceConfig) -> Iterator[_Item]:
    import reasoning_gym  # noqa: PLC0415  (slow import, only when used)

    n_tasks = len(cfg.tasks)
    for i, task in enumerate(cfg.tasks):
        n = cfg.n // n_tasks + (1 if i < cfg.n % n_tasks else 0)
        if n == 0:
            continue
        try:
            dataset = reasoning_gym.create_dataset(task, size=n, seed=cfg.seed)
        except (KeyError, ValueError) as e:
            raise DataError(f"reasoning-gym has no dataset '{task}' ({e}); see reasoning_gym.factory.DATASETS") from None
        location = f"reasoning_gym:{task}[seed={cfg.seed}]"
        for j in range(n):
            entry = dataset[j]
            yield _Item(location, j + 1, _from_reasoning_gym(entry), task)


def _from_reasoning_gym(entry: dict) -> dict:
    """GSM-Symbolic carries GSM8K-style step-by-step solutions ending in '#### answer'."""
    answer = str(entry["answer"])
    cot = (entry.get("metadata") or {}).get("answer_cot")
    if cot:
        output = cot if "####" in cot else f"{cot.rstrip()}\n#### {answer}"
    else:
        output = answer
    return {"instruction": entry["question"], "input": "", "output": output}


def _jsonl_items(cfg: SourceConfig) -> Iterator[_Item]:
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check data.splits.*.path in params.yaml")
    task = cfg.task or path.stem
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield _Item(str(path), lineno, line, task)


def _hf_items(cfg: SourceConfig) -> Iterator[_Item]:
    import datasets  # noqa: PLC0415

    local = Path(cfg.path)
    if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
        dataset = datasets.load_from_disk(str(local))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[cfg.split]
    else:  # a hub id (needs the internet) or a local folder of data files
        dataset = datasets.load_dataset(cfg.path, cfg.name, split=cfg.split)
    location = f"hf:{cfg.path}[{cfg.split}]"
    task = cfg.task or cfg.path.rstrip("/").split("/")[-1]
    for i, row in enumerate(dataset):
        yield _Item(location, i + 1, dict(row), task)


_SOURCES = {"reasoning_gym": _reasoning_gym_items, "jsonl": _jsonl_items, "hf": _hf_items}


def _parse(payload: Any) -> Any:
    if not isinstance(payload, bytes):
        return payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid("not_utf8", f"not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Invalid("malformed_json", f"malformed JSON: {e.msg} at column {e.colno}") from None


def _raw_text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace").rstrip("\n")[:_RAW_CHARS]
    return json.dumps(payload, ensure_ascii=False, default=str)[:_RAW_CHARS]


def read_source(
    split: str,
    cfg: SourceConfig,
    *,
    max_chars: int,
    strict: bool,
    size: int | None = None,
) -> SplitData:
    """Read, validate and de-duplicate one split's records.

    `size` (default cfg.n) caps the accepted records. Strict mode raises DataError at
    the first bad record; lenient mode rejects it with its reason and goes on.
    """
    limit = cfg.n if size is None else size
    out = SplitData(split)
    seen: dict[str, str] = {}  # id -> where it was first accepted
    source_name = cfg.describe()
    for item in _SOURCES[cfg.kind](cfg):
        if limit is not None and len(out.records) >= limit:
            break
        out.n_read += 1
        try:
            record = normalise(
                _parse(item.payload), fmt=cfg.format if cfg.kind != "reasoning_gym" else "alpaca",
                task=item.task, source=source_name, max_chars=max_chars,
                strip_calculator=cfg.strip_calculator,
            )
            if record.id in seen:
                raise Invalid("duplicate_id", f"duplicate id {record.id}: same content as {seen[record.id]}")
        except Invalid as bad:
            reject = Reject(split, item.location, item.line, bad.kind, str(bad), _raw_text(item.payload))
            if strict:
                raise DataError(
                    f"{reject.message()} ({_FIX.get(bad.kind, 'fix the record')}; or set data.strict: false "
                    "to quarantine bad records in data/rejects.jsonl)"
                ) from None
            log.warning("rejected %s", reject.message())
            out.rejects.append(reject)
            continue
        seen[record.id] = f"{item.location}:{item.line}"
        out.origin[record.id] = (item.location, item.line)
        out.records.append(record)
    out.check()
    return out
