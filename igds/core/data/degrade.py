"""A within-task pool (issue 15.2): a share of the target task's examples degraded, so that a
selector is tested on picking good examples of the task, not on telling tasks apart.

Kinds of damage, each applied to the solution text only (the problem stays):
- `wrong_answer`: the final number changed (after '####', else the last number);
- `dropped_step`: one reasoning line removed (a solution of >= 2 reasoning lines);
- `shuffled_steps`: the reasoning lines in another order (>= 2 lines);
- `truncated`: the solution cut after its first half of reasoning lines, no final answer.
The kind is provenance, kept for analysis only like the on-task label: it is appended to the
record's `source` (" degraded:<kind>"); the id is the new content's hash, as for any record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from igds.core.answers import extract_answer, final_answer_span, normalise_number
from igds.core.config import DEGRADE_KINDS
from igds.core.data.schema import Record, make_record

STEP_KINDS = ("dropped_step", "shuffled_steps", "truncated")  # need a solution written in steps
_MARK = " degraded:"
_FINAL_LINE = re.compile(r"^\s*####")


def degradation(record: Record) -> str | None:
    """The kind of damage done to `record` (None: an intact example)."""
    if _MARK not in record.source:
        return None
    return record.source.rsplit(_MARK, 1)[1]


def _steps(output: str) -> tuple[list[str], list[str]]:
    """(reasoning lines, the final-answer lines: '####' onwards), blank lines dropped."""
    lines = [line for line in output.splitlines() if line.strip()]
    end = next((i for i, line in enumerate(lines) if _FINAL_LINE.match(line)), len(lines))
    return lines[:end], lines[end:]


def applicable(record: Record, kind: str) -> bool:
    """Whether `kind` can damage this record: a step kind needs >= 2 reasoning lines (and
    truncation a final answer after them); a wrong answer needs a number to change."""
    steps, final = _steps(record.output)
    if kind == "wrong_answer":
        return extract_answer(record.output) is not None
    if kind == "truncated":
        return len(steps) >= 2 and bool(final)
    if kind == "shuffled_steps":
        return len(set(steps)) >= 2  # some order other than the original exists
    return len(steps) >= 2


def _wrong_number(value: Decimal, rng: np.random.Generator) -> Decimal:
    """A plausible wrong answer: off by 1-10 units of the answer's own last digit place (or
    by ~10-50% when that is larger), never the answer itself."""
    exponent = value.as_tuple().exponent
    unit = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    step = max(int(rng.integers(1, 11)) * unit, (abs(value) * Decimal(int(rng.integers(10, 51))) / 100).quantize(unit))
    return value + step if rng.random() < 0.5 or value - step == value else value - step


def _format_like(value: Decimal, original: str) -> str:
    """`value` written as `original` is: its currency sign and thousands commas kept."""
    whole = value == value.to_integral_value()
    digits = f"{int(abs(value)):,}" if "," in original and whole else format(abs(value), "f")
    symbol = next((c for c in "$€£" if c in original), "")
    return f"{'-' if value < 0 else ''}{symbol}{digits}"


def _replace_final_number(output: str, rng: np.random.Generator) -> str:
    """`output` with the number `extract_answer` reads replaced by a wrong one."""
    start, end = final_answer_span(output)  # applicable(): there is one
    raw = output[start:end]
    return output[:start] + _format_like(_wrong_number(normalise_number(raw), rng), raw) + output[end:]


def degrade(record: Record, kind: str, rng: np.random.Generator) -> Record:
    """`record` with its solution damaged by `kind` (see the module doc); ValueError if the
    kind does not apply (`applicable`)."""
    if kind not in DEGRADE_KINDS:
        raise ValueError(f"degradation kind {kind!r} is not one of {', '.join(DEGRADE_KINDS)}")
    if not applicable(record, kind):
        raise ValueError(f"record {record.id}: {kind} does not apply to its solution")
    steps, final = _steps(record.output)
    if kind == "wrong_answer":
        output = _replace_final_number(record.output, rng)
    elif kind == "dropped_step":
        drop = int(rng.integers(len(steps)))
        output = "\n".join(steps[:drop] + steps[drop + 1:] + final)
    elif kind == "shuffled_steps":
        shuffled = steps
        while shuffled == steps:
            shuffled = [steps[i] for i in rng.permutation(len(steps))]
        output = "\n".join(shuffled + final)
    else:  # truncated
        output = "\n".join(steps[: (len(steps) + 1) // 2])
    return make_record(record.instruction, record.input, output, record.task, f"{record.source}{_MARK}{kind}")


def degrade_share(records: Sequence[Record], share: float, kinds: Sequence[str],
                  rng: np.random.Generator) -> list[Record]:
    """`records` with round(share x n) of them degraded, the kinds in turn (as equal as the
    count allows), the records and the order of kinds drawn from `rng`; the rest intact, in
    their places. Refused (ValueError naming the kind and an example) when a kind cannot
    damage a record it is drawn for: a composition is met or refused, never shortened."""
    unknown = [k for k in kinds if k not in DEGRADE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"degradation kinds {list(kinds)}: expected a non-empty list of {', '.join(DEGRADE_KINDS)}")
    n = round(share * len(records))
    chosen = rng.permutation(len(records))[:n]
    turn = [kinds[i % len(kinds)] for i in rng.permutation(n)] if n else []
    out = list(records)
    for index, kind in zip(chosen, turn):
        if not applicable(records[index], kind):
            raise ValueError(f"degradation kind {kind!r} does not apply to record {records[index].id} "
                             f"({records[index].task}: {records[index].output[:60]!r}); "
                             + ("its solutions are not written in steps: use [wrong_answer]"
                                if kind in STEP_KINDS else "its solution has no number"))
        out[index] = degrade(records[index], kind, rng)
    return out
