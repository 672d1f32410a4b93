"""Final-answer extraction against lm-eval's own GSM8K filters (the reference reading)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from igds.answers import extract_answer, is_correct

# lm-eval's gsm8k.yaml: strict-match "#### (\-?[0-9\.\,]+)", flexible-extract
# "(-?[$0-9.,]{2,})|(-?[0-9]+)" (last match); exact_match then ignores ',', '$' and a final '.'
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def lm_eval_reading(text: str) -> Decimal | None:
    strict = _STRICT.findall(text)
    if strict:
        raw = strict[0]
    else:
        found = _FLEXIBLE.findall(text)
        if not found:
            return None
        raw = next(g for g in found[-1] if g)
    raw = re.sub(r"\.$", "", raw.replace(",", "").replace("$", ""))
    return Decimal(raw) if re.fullmatch(r"-?\d+(\.\d+)?", raw) else None


@pytest.mark.parametrize("text, expected", [
    ("#### 42,", 42), ("#### 42.", 42), ("so the answer is 42, which is the answer.", 42),
    ("She has 20-8 = 12 apples left.\n\n#### 12", 12), ("#### 1,000", 1000), ("#### -3", -3),
    ("#### $5", 5), ("The total is 3.50.", Decimal("3.5")), ("x = -3.5.", Decimal("-3.5")),
])
def test_extraction_agrees_with_lm_eval_gsm8k_filters(text, expected):
    assert extract_answer(text) == Decimal(expected)
    assert lm_eval_reading(text) == Decimal(expected)


@pytest.mark.parametrize("text, ours, theirs", [
    # lm-eval's flexible regex reads a subtraction's minus as a sign; a sign after a digit is not one
    ("so 20-8", Decimal(8), Decimal(-8)),
])
def test_documented_differences_from_lm_eval(text, ours, theirs):
    assert extract_answer(text) == ours and lm_eval_reading(text) == theirs


def test_a_blank_line_before_the_final_answer_does_not_hide_it():
    assert is_correct("Step one.\n\nStep two: 5 + 7 = 12.\n\n#### 12", "... #### 12")
