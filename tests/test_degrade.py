"""The within-task pool's degradations: each kind does what it says, the kind is recoverable
from the record, a share is met exactly, and a kind that cannot apply is refused."""

from __future__ import annotations

import numpy as np
import pytest

from igds.core.answers import extract_answer, is_correct
from igds.core.data.degrade import DEGRADE_KINDS, applicable, degradation, degrade, degrade_share
from igds.core.data.schema import make_record

COT = "Tom has 3 apples.\nHe buys 4 more: 3 + 4 = 7.\nHe gives away 2: 7 - 2 = 5.\n#### 5"


def cot(i: int = 0):
    return make_record(f"Problem {i}", "", COT.replace("Tom", f"Tom{i}"), "gsm_symbolic", "gen:gsm[seed=1]")


def answer_only(i: int = 0, answer: str = "1,234"):
    return make_record(f"Sum {i}", "", answer, "chain_sum", "gen:chain_sum[seed=1]")


@pytest.mark.parametrize("seed", range(20))
def test_a_wrong_answer_changes_only_the_final_number_and_is_wrong(seed):
    rng = np.random.default_rng(seed)
    for record in (cot(), answer_only(), answer_only(answer="-7"), answer_only(answer="3.25"), answer_only(answer="0")):
        bad = degrade(record, "wrong_answer", rng)
        assert not is_correct(bad.output, record.output) and extract_answer(bad.output) is not None
        assert bad.output.splitlines()[:-1] == record.output.splitlines()[:-1]  # the reasoning is untouched
        assert bad.instruction == record.instruction and bad.id != record.id
        assert degradation(bad) == "wrong_answer" and degradation(record) is None


def test_step_kinds_drop_shuffle_or_truncate_the_reasoning_and_keep_or_lose_the_answer():
    rng = np.random.default_rng(0)
    steps = cot().output.splitlines()[:-1]
    dropped = degrade(cot(), "dropped_step", rng).output.splitlines()
    assert len(dropped) == 3 and dropped[-1] == "#### 5" and set(dropped[:-1]) < set(steps)
    shuffled = degrade(cot(), "shuffled_steps", rng).output.splitlines()
    assert shuffled[-1] == "#### 5" and sorted(shuffled[:-1]) == sorted(steps) and shuffled[:-1] != steps
    truncated = degrade(cot(), "truncated", rng).output
    assert truncated == "\n".join(steps[:2]) and "####" not in truncated


def test_step_kinds_do_not_apply_to_answer_only_solutions():
    assert applicable(answer_only(), "wrong_answer")
    for kind in ("dropped_step", "shuffled_steps", "truncated"):
        assert not applicable(answer_only(), kind)
        with pytest.raises(ValueError, match="does not apply"):
            degrade(answer_only(), kind, np.random.default_rng(0))


def test_a_share_is_met_exactly_with_every_kind_in_turn_and_is_seeded():
    records = [cot(i) for i in range(40)]
    out = degrade_share(records, 0.5, DEGRADE_KINDS, np.random.default_rng(3))
    kinds = [degradation(r) for r in out]
    assert sum(k is not None for k in kinds) == 20
    assert {k: kinds.count(k) for k in DEGRADE_KINDS} == dict.fromkeys(DEGRADE_KINDS, 5)
    intact = [r for r, k in zip(out, kinds) if k is None]
    assert all(r in records for r in intact)  # the rest are the original records, in their places
    assert [r.id for r in degrade_share(records, 0.5, DEGRADE_KINDS, np.random.default_rng(3))] == [r.id for r in out]


def test_a_kind_that_cannot_apply_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"not written in steps: use \[wrong_answer\]"):
        degrade_share([answer_only(i) for i in range(10)], 0.5, ["wrong_answer", "truncated"],
                      np.random.default_rng(0))
    with pytest.raises(ValueError, match="expected a non-empty list"):
        degrade_share([cot()], 0.5, ["typo"], np.random.default_rng(0))


def _form(answers) -> dict:
    """The form statistics of final answers: mean length, share negative, share 0, mean digits."""
    values = [float(a.replace(",", "")) for a in answers]
    return {"length": np.mean([len(a) for a in answers]), "negative": np.mean([v < 0 for v in values]),
            "zero": np.mean([v == 0 for v in values]), "digits": np.mean([len(str(int(abs(v)))) for v in values])}


def test_wrong_answers_have_no_form_of_their_own():
    """Issue 34: the old draw made wrong answers longer than right ones and never 0, and a max
    over digit tokens favoured them. Damaged and intact examples now match in length, sign,
    digits and share of 0 (within sampling tolerance); the old draw (matched=False) fails."""
    rng = np.random.default_rng(0)
    answers = [str(int(v)) for v in np.round(rng.lognormal(2.5, 1.5, 600) * rng.choice([-1, 1], 600, p=[0.2, 0.8]))]
    answers[::12] = ["0"] * len(answers[::12])  # ~8% zeros, as number_sequence has
    records = [answer_only(i, a) for i, a in enumerate(answers)]
    out = degrade_share(records, 0.3, ["wrong_answer"], np.random.default_rng(1))
    damaged = [r.output for r in out if degradation(r)]
    intact = [r.output for r in out if not degradation(r)]
    assert len(damaged) == 180 and all(not is_correct(r.output, o.output) for r, o in zip(out, records) if degradation(r))
    mine, theirs = _form(damaged), _form(intact)
    assert abs(mine["length"] - theirs["length"]) < 0.25 and abs(mine["digits"] - theirs["digits"]) < 0.25
    assert abs(mine["negative"] - theirs["negative"]) < 0.07 and abs(mine["zero"] - theirs["zero"]) < 0.04
    originals = _form([o.output for r, o in zip(out, records) if degradation(r)])  # the same records, right
    assert mine["zero"] == originals["zero"] and mine["negative"] == originals["negative"]
    assert abs(mine["digits"] - originals["digits"]) < 0.03

    import igds.core.data.degrade as module  # the old draw: any near miss, of any sign and length

    old = _form([module._format_like(module._wrong_number(module.normalise_number(o.output), rng), o.output)
                 for r, o in zip(out, records) if degradation(r)])
    assert old["zero"] < originals["zero"] - 0.04 and old["negative"] > originals["negative"] + 0.02, old
