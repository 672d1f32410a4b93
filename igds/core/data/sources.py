"""Record sources: reasoning-gym generators (offline default), JSONL files, HF datasets.

Each source yields raw items with their location; `read_source` validates them into
Records and Rejects so that read = accepted + rejected holds for every split. A file is
read whole or refused with a one-line DataError saying why (missing, a directory, not
readable, compressed other than by gzip, UTF-16).
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igds.core.config import SourceConfig, options_text
from igds.core.data.schema import ALL_REJECT_KINDS, DataError, Invalid, Record, Reject, normalise

log = logging.getLogger(__name__)

_RAW_CHARS = 300  # how much of a bad record the rejects file keeps
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark: some editors start a file with it
_GZIP = b"\x1f\x8b"
_NOT_READ = {  # how other compressed or non-UTF-8 files start: refused by name
    b"BZh": "bzip2-compressed", b"\xfd7zXZ\x00": "xz-compressed", b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PK\x03\x04": "a zip archive", b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)",
}
# A generated task gives up after this many draws per record asked for (the rest were rejected
# or held by another split): then the source cannot supply the count.
_DRAWS_PER_RECORD = 4


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


@dataclass(frozen=True)
class _Stream:
    items: Iterator[_Item]
    n: int | None  # records to accept from it (None: all)


def _streams(cfg: SourceConfig, n: int | None) -> list[_Stream]:
    """A file or dataset is one stream; a reasoning-gym source is one per task, in equal shares."""
    if cfg.kind == "jsonl":
        return [_Stream(_jsonl_items(cfg), n)]
    if cfg.kind == "hf":
        return [_Stream(_hf_items(cfg), n)]
    assert n is not None, "a reasoning_gym source needs a count"
    n_tasks = len(cfg.tasks)
    shares = [n // n_tasks + (1 if i < n % n_tasks else 0) for i in range(n_tasks)]
    return [_Stream(_generated_items(task, share, cfg.seed, cfg.options, cfg.solution), share)
            for task, share in zip(cfg.tasks, shares) if share]


def _generated_items(task: str, n: int, seed: int, options: Mapping[str, Any] | None = None,
                     solution: str = "answer") -> Iterator[_Item]:
    """Items 1, 2, ... of one reasoning-gym task, at most _DRAWS_PER_RECORD x n of them.

    A dataset of n items first; a bigger one only when the reader asks for more (records
    were rejected or are held by another split). Item i is the same whatever the dataset's
    size, so the first n never change.
    """
    import reasoning_gym  # noqa: PLC0415  (slow import, only when used)

    options = dict(options or {})
    location = f"reasoning_gym:{task}[seed={seed}{options_text(options)}{', solution=steps' if solution == 'steps' else ''}]"
    start, size = 0, n
    while start < size:
        try:
            dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **options)
        except (KeyError, ValueError) as e:
            raise DataError(f"reasoning-gym has no dataset '{task}' ({e}); see reasoning_gym.factory.DATASETS") from None
        except (TypeError, AssertionError) as e:
            raise DataError(f"reasoning-gym's {task} refuses options {options} ({e}); see its config class") from None
        for j in range(start, size):
            yield _Item(location, j + 1, _from_reasoning_gym(dataset[j], task if solution == "steps" else None), task)
        start, size = size, min(2 * size, _DRAWS_PER_RECORD * n)


def _from_reasoning_gym(entry: dict, steps_for: str | None = None) -> dict:
    """GSM-Symbolic carries GSM8K-style step-by-step solutions ending in '#### answer'; with
    `steps_for` (a task: the source's `solution: steps`), the solution is written in steps from
    the entry's metadata (igds.core.data.steps)."""
    answer = str(entry["answer"])
    cot = (entry.get("metadata") or {}).get("answer_cot")
    if steps_for is not None:
        from igds.core.data.steps import worked_solution  # noqa: PLC0415

        output = worked_solution(steps_for, entry)
    elif cot:
        output = cot if "####" in cot else f"{cot.rstrip()}\n#### {answer}"
    else:
        output = answer
    return {"instruction": entry["question"], "input": "", "output": output}


def _jsonl_items(cfg: SourceConfig) -> Iterator[_Item]:
    path = Path(cfg.path).expanduser()
    task = cfg.task or Path(path.name.removesuffix(".gz")).stem
    for lineno, line in enumerate(_file_lines(path), start=1):
        if lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        if line.strip():
            yield _Item(str(path), lineno, line, task)


def _file_lines(path: Path) -> Iterator[bytes]:
    """The lines of a JSONL file, gunzipped if it is gzip; a DataError if it cannot be read whole."""
    fix = "check data.splits.*.path in params.yaml"
    if not path.exists():
        raise DataError(f"data file {path} not found; {fix}")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory, not a JSONL file; {fix}")
    compressed = False
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            compressed = head.startswith(_GZIP)
            what = next((name for magic, name in _NOT_READ.items() if head.startswith(magic)), None)
            if what is not None:
                raise DataError(f"data file {path} is {what}; only UTF-8 JSONL, plain or gzip (.gz), is read: "
                                "convert it")
            if path.suffix == ".gz" and not compressed:
                raise DataError(f"data file {path} is named .gz but is not gzip-compressed; rename it or gzip it")
            if compressed:
                with gzip.open(f) as lines:
                    yield from lines
            else:
                yield from f
    except (OSError, EOFError, zlib.error) as e:  # EOFError, zlib.error: a truncated or corrupt gzip stream
        if compressed and not isinstance(e, PermissionError):
            raise DataError(f"data file {path} is not a readable gzip file ({e}); compress it again, "
                            "or decompress it") from None
        raise DataError(f"data file {path} cannot be read ({getattr(e, 'strerror', None) or e}); "
                        "check its permissions") from None


def _hf_items(cfg: SourceConfig) -> Iterator[_Item]:
    import datasets  # noqa: PLC0415

    local = Path(cfg.path)
    if not local.exists() and not cfg.path.startswith(("/", ".", "~")) and cfg.revision is None:
        raise DataError(f"hf dataset {cfg.path} is a hub id without a pinned revision: set `revision:` of its "
                        f"source in params.yaml to a commit (huggingface.co/datasets/{cfg.path}/commits/main), "
                        "or to `main` to take whatever it is now (not reproducible)")
    try:
        if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[cfg.split]
        elif local.is_dir():  # a local folder of data files (an input@ stage hashes it)
            dataset = datasets.load_dataset(cfg.path, cfg.name, split=cfg.split)
        else:  # a hub id (needs the internet), pinned: its revision is a param the reader depends on
            dataset = datasets.load_dataset(cfg.path, cfg.name, split=cfg.split, revision=cfg.revision)
    except (OSError, ValueError, KeyError) as e:  # missing, offline, no such split or config
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"hf dataset {cfg.path} cannot be loaded ({first}); check data.splits.*.path, name and "
                        "split in params.yaml (a hub id needs the internet)") from None
    location = f"hf:{cfg.path}[{cfg.split}]"
    task = cfg.task or cfg.path.rstrip("/").split("/")[-1]
    for i, row in enumerate(dataset):
        yield _Item(location, i + 1, dict(row), task)


def _parse(payload: Any) -> Any:
    if not isinstance(payload, bytes):
        return payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid("not_utf8", f"not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):  # a BOM inside a file: files joined with `cat` (utf-8-sig would not help)
        raise Invalid("malformed_json", "malformed JSON: a byte-order mark (U+FEFF) starts this line, not the file "
                      "(files concatenated?); remove it")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")
        if what.startswith("Invalid control character") and e.pos < len(text):
            what = (f"a raw control character U+{ord(text[e.pos]):04X} inside a string (write it escaped, "
                    f"\\u{ord(text[e.pos]):04x}, or remove it)")
        raise Invalid("malformed_json", f"malformed JSON: {what} at column {e.colno}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object as a dict; a key given twice is a reject (json.loads would keep the last silently)."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise Invalid("duplicate_key", f"key '{key}' appears twice in one JSON object")
        obj[key] = value
    return obj


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
    n: int | None = None,
    held: Mapping[str, str] | None = None,
    seen: Mapping[str, str] | None = None,
    make: Callable[[Any, str, str], Any] | None = None,
    held_key: Callable[[Any], str] | None = None,
) -> SplitData:
    """Read, validate and de-duplicate one source into a split's records.

    `n` (default cfg.n; None there: every record) counts accepted records: a rejected
    record does not count, and reading goes on until n are accepted or the source ends
    (the caller refuses a shortfall). `held` maps the ids other splits keep to their split:
    such a record is rejected as in_other_split. `seen` maps ids this split already holds
    from another source (the mixed pool's on-task part) to where they are. Strict mode
    raises DataError at the first bad record (one another split holds is not bad); lenient
    mode rejects it with its reason and goes on. `make(obj, task, source)` turns a parsed
    object into a record with an `id` or raises Invalid (default: an SFT Record, `normalise`);
    `held_key(record)` is what `held` is keyed by (default: its id; a preference pair: its prompt).
    """
    key_of = held_key or (lambda record: record.id)
    wanted = cfg.n if n is None else n
    held = held or {}
    first_at = dict(seen or {})  # id -> where this split first has it
    out = SplitData(split)
    source_name = cfg.describe()
    for stream in _streams(cfg, wanted):
        accepted = 0
        for item in stream.items:
            if stream.n is not None and accepted >= stream.n:
                break
            out.n_read += 1
            try:
                if make is None:
                    record = normalise(
                        _parse(item.payload), fmt=cfg.format if cfg.kind != "reasoning_gym" else "alpaca",
                        task=item.task, source=source_name, max_chars=max_chars,
                        strip_calculator=cfg.strip_calculator,
                    )
                else:
                    record = make(_parse(item.payload), item.task, source_name)
                key = key_of(record)
                if key in held:
                    reason = (f"id {record.id} is also in split '{held[key]}', which keeps it" if held_key is None else
                              f"prompt {key} is also in split '{held[key]}', which keeps it")
                    out.rejects.append(_reject(split, item, "in_other_split", reason))
                    log.debug("skipped %s:%d: %s", item.location, item.line, reason)
                    continue
                if record.id in first_at:
                    raise Invalid("duplicate_id", f"duplicate id {record.id} within split '{split}': same content "
                                  f"as {first_at[record.id]}")
            except Invalid as bad:
                reject = _reject(split, item, bad.kind, str(bad))
                if strict:
                    raise DataError(f"{reject.message()} ({ALL_REJECT_KINDS[bad.kind]}; or set data.strict: false (an audit set: its strict: false) "
                                    "to quarantine bad records in data/rejects.jsonl)") from None
                log.warning("rejected %s", reject.message())
                out.rejects.append(reject)
                continue
            first_at[record.id] = f"{item.location}:{item.line}"
            out.origin[record.id] = (item.location, item.line)
            out.records.append(record)
            accepted += 1
    out.check()
    return out


def _reject(split: str, item: _Item, kind: str, reason: str) -> Reject:
    return Reject(split, item.location, item.line, kind, reason, _raw_text(item.payload))
