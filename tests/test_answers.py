"""Final-answer extraction against lm-eval's own GSM8K filters (the reference reading)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from igds.core.answers import extract_answer, is_correct

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


# --- real generations --------------------------------------------------------------------------

GENERATIONS = Path(__file__).parent / "data" / "generations"


def _generations() -> list[dict]:
    rows = []
    for path in sorted(GENERATIONS.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            rows.append({**json.loads(line), "where": f"{path.name}:{n}"})
    return rows


@pytest.mark.parametrize("row", _generations(), ids=lambda row: row["id"])
def test_real_generations_read_as_a_person_reads_them(row):
    """Greedy generations of the default model, kept from results/eval/<run>/samples.jsonl.
    `person` is the final number a person reads in the response (null: none is stated),
    `answer` ours and `lm_eval` what lm-eval's GSM8K filters read; where ours and the
    person's differ, `note` says why (a known miss stays visible and is measured)."""
    got = extract_answer(row["response"])
    assert got == (None if row["answer"] is None else Decimal(row["answer"])), row["where"]
    assert is_correct(row["response"], row["target"]) == row["correct"], row["where"]
    theirs = lm_eval_reading(row["response"])
    assert theirs == (None if row["lm_eval"] is None else Decimal(row["lm_eval"])), row["where"]
    person = None if row["person"] is None else Decimal(row["person"])
    assert got == person or row.get("note"), f"{row['where']}: read {got}, a person reads {person}; fix or note it"


def test_the_generation_fixtures_cover_blank_lines_before_the_answer():
    """Enough real generations, some with a blank line before the final answer, and some
    whose reading changes if the text is cut at that blank line (lm-eval's default stop
    before issue 14.1)."""
    rows = _generations()
    assert len(rows) >= 8
    blank = [r for r in rows if "\n\n" in r["response"]]
    assert len(blank) >= 3
    cut = [r for r in blank if extract_answer(r["response"].split("\n\n")[0]) != extract_answer(r["response"])]
    assert cut, "no fixture shows what the blank-line stop lost"
