"""Final answers of GSM8K-style solutions: the number after '####', else the last number,
and exact match of two of them. Pure Python (no project imports): the data layer checks a
reference's final number with it and the evaluation scores generations with it."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_FINAL = re.compile(r"####\s*([^\n]*)")
# a minus sign only where it cannot be a subtraction ('20-8' is 8, not -8); a trailing comma
# or full stop after a number is punctuation ('#### 42,', '42. ')
_MINUS = r"(?:(?<![\w.)])-)?"
_NUMBER = re.compile(_MINUS + r"(?:[$€£]\s?-?)?\d[\d,]*(?:\.\d+)?|" + _MINUS + r"[$€£]?\.\d+")


def normalise_number(text: str) -> Decimal | None:
    """'1,000' -> 1000, '$5' -> 5, '-3' -> -3, '3.50' -> 3.5, '7.' -> 7; None if no number."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    raw = match.group(0).rstrip(",")
    negative = "-" in raw
    digits = re.sub(r"[^\d.]", "", raw).rstrip(".")
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", re.sub(r"[^\d.,]", "", raw)) is None and "," in raw:
        # commas that are not thousands separators ('1,2'): not a number we can read
        return None
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    return -value if negative else value


def final_answer_span(text: str) -> tuple[int, int] | None:
    """[start, end) of the characters of the number `extract_answer` reads (None: none)."""
    final = _FINAL.search(text)
    if final is not None:
        match = _NUMBER.search(final.group(1))
        if match is not None and normalise_number(match.group(0)) is not None:
            return final.start(1) + match.start(), final.start(1) + match.end()
    numbers = list(_NUMBER.finditer(text))
    return numbers[-1].span() if numbers else None


def extract_answer(text: str) -> Decimal | None:
    """The final answer of a GSM8K-style solution: the number after '####' if present,
    else the last number in the text (how lm-eval's gsm8k 'flexible-extract' reads it)."""
    span = final_answer_span(text)
    return None if span is None else normalise_number(text[span[0]:span[1]])


def is_correct(generated: str, reference: str) -> bool:
    """Exact match of the extracted final numbers (numeric: '3.50' equals '3.5')."""
    predicted, target = extract_answer(generated), extract_answer(reference)
    return predicted is not None and target is not None and predicted == target
