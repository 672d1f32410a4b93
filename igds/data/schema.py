"""The normalised record, its stable id, and the validation that every source goes through.

A record is {id, instruction, input, output, task, source}. The id is a content hash of
(instruction, input, output), so the same example has the same id in every run, every
split and every source: that is what makes the splits checkably disjoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

FIELDS = ("id", "instruction", "input", "output", "task", "source")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


class DataError(ValueError):
    """Bad input data (strict mode): names the file and line, what is wrong, how to fix it."""


@dataclass(frozen=True)
class Record:
    id: str
    instruction: str
    input: str
    output: str
    task: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def prompt(self) -> str:
        """The user turn: the instruction, then the input if there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclass(frozen=True)
class Reject:
    split: str
    location: str  # file path or generator name
    line: int  # 1-based line (or item index + 1 for generated data)
    kind: str  # category, e.g. malformed_json, missing_field, over_long, duplicate_id
    reason: str
    raw: str = ""  # the offending text, truncated

    def to_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return f"{self.location}:{self.line}: {self.reason}"


def record_id(instruction: str, input: str, output: str) -> str:
    """Stable content hash: 16 hex digits of sha256 over the three text fields."""
    blob = json.dumps([instruction, input, output], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_record(instruction: str, input: str, output: str, task: str, source: str) -> Record:
    return Record(record_id(instruction, input, output), instruction, input, output, task, source)


class Invalid(Exception):
    """One record is bad: `kind` is a short category for counting, the message the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _text(obj: dict, key: str, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise Invalid("missing_field", f"missing field '{key}'")
        return ""
    value = obj[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"field '{key}' must be a string, found {type(value).__name__}")
    if required and not value.strip():
        raise Invalid("empty_field", f"field '{key}' is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a JSON escape of half a surrogate pair, e.g. "\ud800"
        raise Invalid("non_utf8", f"field '{key}' holds {value[e.start:e.end]!r} at character {e.start}, "
                      "half a UTF-16 surrogate pair: not encodable as UTF-8") from None
    return value


def detect_format(obj: dict, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if "question" in obj or "answer" in obj:
        return "gsm8k"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    raise Invalid(
        "unknown_shape",
        f"unknown record shape with keys {sorted(obj)}: expected question/answer (GSM8K) "
        "or instruction/input/output"
    )


def normalise(
    obj: Any,
    *,
    fmt: str,
    task: str,
    source: str,
    max_chars: int,
    strip_calculator: bool = True,
) -> Record:
    """Turn one parsed object into a Record, or raise Invalid with the reason."""
    if not isinstance(obj, dict):
        raise Invalid("not_object", f"expected a JSON object, found {type(obj).__name__}")
    shape = detect_format(obj, fmt)
    if shape == "gsm8k":
        instruction, input_, output = _text(obj, "question"), "", _text(obj, "answer")
        if strip_calculator:
            output = _CALCULATOR.sub("", output)
        if "####" not in output:
            raise Invalid("no_final_answer", "field 'answer' has no '#### <final answer>' line (GSM8K format)")
    else:
        instruction, input_, output = _text(obj, "instruction"), _text(obj, "input", required=False), _text(obj, "output")
    n_chars = len(instruction) + len(input_) + len(output)
    if n_chars > max_chars:
        raise Invalid("over_long", f"example is over-long: {n_chars} characters > data.max_chars = {max_chars}")
    return make_record(instruction, input_, output, task, source)
