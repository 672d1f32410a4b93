"""A within-task pool (issue 15.2): a share of the target task's examples degraded, so that a
selector is tested on picking good examples of the task, not on telling tasks apart.

Kinds of damage, each applied to the solution text only (the problem stays):
- `wrong_answer`: the final number changed (after '####', else the last number) to a near miss
  with no form of its own: of the right answer's sign and number of digits (`near_miss`), and
  as many wrong answers 0 as right ones among the records it damages (`degrade_share`), so a
  longer answer, a '-' or the absence of 0 does not mark the damaged examples;
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


MATCH_TRIES = 8  # near_miss's draws for a wrong number of the right one's length


def _digits(value: Decimal) -> int:
    return len(str(int(abs(value))))


def near_miss(value: Decimal, rng: np.random.Generator, matched: bool = True) -> Decimal:
    """A plausible wrong number (`_wrong_number`: off by a few units of its last digit place, or
    by 10-50%). `matched`: of the same sign (a draw that would reach or cross zero goes the same
    step the other way) and, within `MATCH_TRIES` draws, of as many digits: otherwise a '-' or
    an extra digit would mark the wrong answer."""
    def crossed(w: Decimal) -> bool:  # reached 0 or crossed it (0 is no negative number's near miss either)
        return value != 0 and (w == 0 or (w > 0) != (value > 0))

    wrong = _wrong_number(value, rng)
    for _ in range(MATCH_TRIES if matched else 0):
        if crossed(wrong):
            wrong = 2 * value - wrong
        if value == 0 or _digits(wrong) == _digits(value):
            break
        wrong = _wrong_number(value, rng)
    if matched and crossed(wrong):
        wrong = 2 * value - wrong
    if matched and value == 0:
        wrong = abs(wrong)  # 0 is no negative number: its near miss is not either
    return wrong


def _format_like(value: Decimal, original: str) -> str:
    """`value` written as `original` is: its currency sign and thousands commas kept."""
    whole = value == value.to_integral_value()
    digits = f"{int(abs(value)):,}" if "," in original and whole else format(abs(value), "f")
    symbol = next((c for c in "$€£" if c in original), "")
    return f"{'-' if value < 0 else ''}{symbol}{digits}"


def _replace_final_number(output: str, rng: np.random.Generator, wrong: Decimal | None = None) -> str:
    """`output` with the number `extract_answer` reads replaced by `wrong` (default: a near miss)."""
    start, end = final_answer_span(output)  # applicable(): there is one
    raw = output[start:end]
    value = near_miss(normalise_number(raw), rng) if wrong is None else wrong
    return output[:start] + _format_like(value, raw) + output[end:]


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
    _match_zeros(records, out, [i for i, k in zip(chosen, turn) if k == "wrong_answer"], rng)
    return out


def _match_zeros(records: Sequence[Record], out: list[Record], wrong: Sequence[int], rng: np.random.Generator) -> None:
    """Among the records `wrong` names (damaged by wrong_answer), make as many wrong answers 0 as
    right answers are 0, picking those whose positive right answer is smallest (ties in random
    order): a near miss is never 0, so otherwise a 0 would mark an intact example. The right
    zeros' near misses are positive, so the shares of negative, zero and positive answers are
    the intact records' exactly."""
    value = {}
    for i in wrong:
        start, end = final_answer_span(records[i].output)
        value[int(i)] = normalise_number(records[i].output[start:end])
    zeros = sum(v == 0 for v in value.values())
    order = sorted((v, float(rng.random()), i) for i, v in value.items() if v > 0)
    for _, _, i in order[:zeros]:
        record = records[i]
        out[i] = make_record(record.instruction, record.input,
                             _replace_final_number(record.output, rng, Decimal(0)), record.task, out[i].source)
