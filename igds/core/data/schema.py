"""The normalised record, its stable id, and the validation that every source goes through.

A record is {id, instruction, input, output, task, source}. The id is a content hash of
(instruction, input, output), so the same example has the same id in every run, every
split and every source: that is what makes the splits checkably disjoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from igds.core.answers import normalise_number

FIELDS = ("id", "instruction", "input", "output", "task", "source")
_CALCULATOR = re.compile(r"<<[^<>]*>>")

# Every reason a record is rejected, one kind per defect, with how to fix it (strict mode's
# error names the fix; data/report.json counts rejects by kind).
REJECT_KINDS = {
    "not_utf8": "re-encode the file as UTF-8",
    "malformed_json": "each line must be one complete JSON object",
    "duplicate_key": "keep one value per key in each JSON object",
    "not_object": "each line must be a JSON object {...}",
    "unknown_shape": "use question/answer (GSM8K) or instruction/input/output fields",
    "missing_field": "add the field or fix its name",
    "empty_field": "fill the field or drop the record",
    "wrong_type": "the field must be a JSON string",
    "no_final_answer": "end the answer with '#### <number>'",
    "no_final_number": "put the final number after '####', e.g. '#### 42'",
    "ambiguous_final_answer": "keep one '#### <number>' line: the evaluator reads the first",
    "over_long": "shorten it or raise data.max_chars",
    "duplicate_id": "remove the repeated example",
    "in_other_split": "nothing to fix: the split of higher priority keeps the example",
}
# the kinds only preference pairs are rejected with (igds.audit.pairs); a pair can also be
# rejected with most of the kinds above (malformed_json, missing_field, over_long, ...)
PAIR_REJECT_KINDS = {
    "unknown_pair_shape": "use prompt/chosen/rejected strings, HH-RLHF's chosen/rejected transcripts or "
                          "UltraFeedback's chosen/rejected message lists",
    "unmatched_prompt": "chosen and rejected must continue the same prompt (conversation)",
    "identical_pair": "chosen and rejected must differ",
    "not_corruptible": "nothing to fix: the generator found no wrong answer the task's scorer refuses",
}
ALL_REJECT_KINDS = {**REJECT_KINDS, **PAIR_REJECT_KINDS}


class DataError(ValueError):
    """Bad input data: names the file (and line), what is wrong, how to fix it."""


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


def _check_kind(kind: str) -> None:
    if kind not in ALL_REJECT_KINDS:
        raise ValueError(f"reject kind {kind!r} is not one of REJECT_KINDS: {', '.join(ALL_REJECT_KINDS)}")


@dataclass(frozen=True)
class Reject:
    split: str
    location: str  # file path or generator name
    line: int  # 1-based line (or item index + 1 for generated data)
    kind: str  # one of REJECT_KINDS
    reason: str
    raw: str = ""  # the offending text, truncated

    def __post_init__(self) -> None:
        _check_kind(self.kind)

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
    """One record is bad: `kind` (one of REJECT_KINDS) for counting, the message the reason."""

    def __init__(self, kind: str, reason: str):
        _check_kind(kind)
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
    value = unicodedata.normalize("NFC", value)
    if required and not visible(value):
        hidden = sorted({f"U+{ord(c):04X}" for c in value if not c.isspace()})
        raise Invalid("empty_field", f"field '{key}' is empty" + (
            f" once control and invisible characters are removed ({', '.join(hidden[:4])})" if hidden else ""))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a JSON escape of half a surrogate pair, e.g. "\ud800"
        raise Invalid("not_utf8", f"field '{key}' holds {value[e.start:e.end]!r} at character {e.start}, "
                      "half a UTF-16 surrogate pair: not encodable as UTF-8") from None
    return value


INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn")  # control, format (zero-width, BOM, soft hyphen), surrogate, private, unassigned


def visible(text: str) -> bool:
    """Whether `text` shows anything: a character that is neither white space nor a control or
    invisible one (JSON brings `\u0000` and zero-width spaces through escapes)."""
    return any(not c.isspace() and unicodedata.category(c) not in INVISIBLE for c in text)


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


def _check_final_number(answer: str) -> None:
    """A GSM8K answer ends in '#### <number>', and the evaluator must read that number: an
    answer it cannot read would be a reference no generation can match."""
    if "####" not in answer:
        raise Invalid("no_final_answer", "field 'answer' has no '#### <final answer>' line (GSM8K format)")
    if answer.count("####") > 1:
        raise Invalid("ambiguous_final_answer", f"field 'answer' has {answer.count('####')} '####' final-answer "
                      "markers; which one is the reference is ambiguous")
    final = answer.split("####", 1)[1].split("\n", 1)[0]  # the rest of the line, as the evaluator reads it
    if normalise_number(final) is None:
        raise Invalid("no_final_number", f"field 'answer': its final-answer line '####{final}' holds no "
                      "number the evaluator can read")


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
        _check_final_number(output)
    else:
        instruction, input_, output = _text(obj, "instruction"), _text(obj, "input", required=False), _text(obj, "output")
    n_chars = len(instruction) + len(input_) + len(output)
    if n_chars > max_chars:
        raise Invalid("over_long", f"example is over-long: {n_chars} characters > data.max_chars = {max_chars}")
    return make_record(instruction, input_, output, task, source)
