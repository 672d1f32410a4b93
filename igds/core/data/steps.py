"""Worked solutions written from a reasoning-gym entry's metadata (a source's `solution: steps`),
so a task whose reference answer is a bare number gets reasoning in its responses for a
model's features to resonate with (issue 34): GSM8K-style lines, one computation each, then
'#### <answer>'. Each writer recomputes the answer from the metadata and refuses an entry whose
result differs from the dataset's answer, so a step can never state something the answer
contradicts.

- chain_sum: the expression's running totals, left to right ('12 + 7 = 19', '19 - 4 = 15', ...);
- leg_counting: each animal's legs ('3 spiders: 3 x 8 = 24'), then their sum;
- products: the running products ('3 * 7 = 21', '21 * 4 = 84');
- decimal_chain_sum: the running totals in exact decimals ('4.4439 + 1.2537 = 5.6976', ...).

chain_sum, products and decimal_chain_sum take the same options (min_terms, max_terms, min_digits,
max_digits), so one source of them gives distractors in the target's own form: as many lines,
the same kind of line, the same '####' answer marker (a selector cannot find chain_sum by form).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from igds.core.data.schema import DataError

_TERM = re.compile(r"^-?\d+$")


def _chain_sum(entry: dict) -> list[str]:
    parts = str(entry["metadata"]["expression"]).split()
    if len(parts) < 3 or len(parts) % 2 == 0 or not all(_TERM.match(p) for p in parts[::2]) \
            or not all(op in "+-" for op in parts[1::2]):
        raise DataError(f"chain_sum expression {entry['metadata']['expression']!r} is not 'a + b - c ...'")
    total = int(parts[0])
    lines = []
    for op, term in zip(parts[1::2], parts[2::2]):
        new = total + int(term) if op == "+" else total - int(term)
        lines.append(f"{total} {op} {term} = {new}")
        total = new
    return [*lines, str(total)]


def _leg_counting(entry: dict) -> list[str]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS  # noqa: PLC0415 (the dataset's own table)

    counts = entry["metadata"]["animals"]
    legs = [count * ANIMALS[name] for name, count in counts.items()]
    lines = [f"{count} {name}{'' if count == 1 else 's'}: {count} x {ANIMALS[name]} = {n}"
             for (name, count), n in zip(counts.items(), legs)]
    total = sum(legs)
    return [*lines, f"{' + '.join(map(str, legs))} = {total}", str(total)]


def _running(entry: dict, ops: str, number: re.Pattern, parse, show) -> list[str]:
    """The expression 'a op b op c ...' (ops from `ops`) evaluated left to right, one line a step."""
    expression = str(entry["metadata"]["expression"])
    parts = expression.split()
    if len(parts) < 3 or len(parts) % 2 == 0 or not all(number.match(p) for p in parts[::2]) \
            or not all(op in ops for op in parts[1::2]):
        raise DataError(f"expression {expression!r} is not 'a {ops[0]} b ...' over {ops}")
    total, lines = parse(parts[0]), []
    for op, term in zip(parts[1::2], parts[2::2]):
        new = {"+": total + parse(term), "-": total - parse(term), "*": total * parse(term)}[op]
        lines.append(f"{show(total)} {op} {term} = {show(new)}")
        total = new
    return [*lines, show(total)]


def _products(entry: dict) -> list[str]:
    return _running(entry, "*", _TERM, int, str)


_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _decimal_chain_sum(entry: dict) -> list[str]:
    """Running totals in exact decimal arithmetic (a sum keeps its terms' most decimal places, as
    the dataset writes its answer)."""
    from decimal import Decimal  # noqa: PLC0415

    return _running(entry, "+-", _DECIMAL, Decimal, lambda value: format(value, "f"))


WRITERS: dict[str, Callable[[dict], list[str]]] = {"chain_sum": _chain_sum, "leg_counting": _leg_counting,
                                                    "products": _products, "decimal_chain_sum": _decimal_chain_sum}


def worked_solution(task: str, entry: dict) -> str:
    """`entry`'s solution in steps, ending '#### <answer>'; a DataError for a task without a
    writer, or an entry whose recomputed answer is not the dataset's."""
    if task not in WRITERS:
        raise DataError(f"solution: steps has no writer for reasoning-gym task '{task}'; tasks with one: "
                        f"{', '.join(sorted(WRITERS))} (igds/core/data/steps.py)")
    *lines, answer = WRITERS[task](entry)
    if str(answer) != str(entry["answer"]).strip():
        raise DataError(f"{task} item {entry['metadata'].get('source_index')}: the steps give {answer}, the dataset "
                        f"says {entry['answer']}")
    return "\n".join([*lines, f"#### {answer}"])
