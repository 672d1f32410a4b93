"""Worked solutions from reasoning-gym metadata (a source's `solution: steps`, issue 34): the
steps recompute the dataset's answer, end '#### <answer>', and an entry they contradict or a
task without a writer is refused by name."""

from __future__ import annotations

import pytest

from igds.core.answers import extract_answer
from igds.core.config import ConfigError, SourceConfig
from igds.core.data import DataError
from igds.core.data.degrade import applicable
from igds.core.data.steps import worked_solution


def test_chain_sum_running_totals():
    entry = {"answer": "-4", "metadata": {"expression": "4 - 1 - 7", "source_index": 0}}
    assert worked_solution("chain_sum", entry) == "4 - 1 = 3\n3 - 7 = -4\n#### -4"


def test_leg_counting_per_animal_then_the_sum():
    entry = {"answer": "26", "metadata": {"animals": {"spider": 3, "human": 1, "snake": 2}, "source_index": 0}}
    assert worked_solution("leg_counting", entry) == (
        "3 spiders: 3 x 8 = 24\n1 human: 1 x 2 = 2\n2 snakes: 2 x 0 = 0\n24 + 2 + 0 = 26\n#### 26")


def test_steps_that_contradict_the_answer_or_a_task_without_a_writer_are_refused():
    with pytest.raises(DataError, match="the steps give 3, the dataset says 4"):
        worked_solution("chain_sum", {"answer": "4", "metadata": {"expression": "1 + 2", "source_index": 7}})
    with pytest.raises(DataError, match="no writer for reasoning-gym task 'number_sequence'"):
        worked_solution("number_sequence", {"answer": "1", "metadata": {}})
    with pytest.raises(ConfigError, match="solution"):
        SourceConfig(kind="reasoning_gym", tasks=("number_sequence",), n=4, solution="steps")
    with pytest.raises(ConfigError, match="solution"):
        SourceConfig(kind="jsonl", path="x.jsonl", solution="steps")


@pytest.mark.parametrize("task", ["chain_sum", "leg_counting"])
def test_generated_records_carry_steps_that_give_the_answer(task):
    from igds.core.data.sources import read_source

    options = {"min_terms": 4, "max_terms": 5} if task == "chain_sum" else {}
    cfg = SourceConfig(kind="reasoning_gym", tasks=(task,), n=20, seed=3, options=options, solution="steps")
    plain = SourceConfig(kind="reasoning_gym", tasks=(task,), n=20, seed=3, options=options)
    records = read_source("pool", cfg, max_chars=4000, strict=True).records
    answers = read_source("pool", plain, max_chars=4000, strict=True).records
    assert len(records) == 20 and [r.instruction for r in records] == [r.instruction for r in answers]
    for stepped, bare in zip(records, answers):
        assert extract_answer(stepped.output) == extract_answer(bare.output)  # the same answer, now with steps
        assert stepped.output.count("\n") >= 2 and applicable(stepped, "dropped_step")
        assert "solution=steps" in stepped.source
    assert sum(len(r.output) for r in records) / len(records) >= 40  # reasoning, not a bare number


def test_products_and_decimal_sums_write_their_running_results():
    assert worked_solution("products", {"answer": "336", "metadata": {"expression": "6 * 8 * 7", "source_index": 0}}) \
        == "6 * 8 = 48\n48 * 7 = 336\n#### 336"
    entry = {"answer": "9.9460", "metadata": {"expression": "1.4 + 8.546 - 0.0000", "source_index": 0}}
    assert worked_solution("decimal_chain_sum", entry) == "1.4 + 8.546 = 9.946\n9.946 - 0.0000 = 9.9460\n#### 9.9460"


def test_the_mixed_pools_distractors_have_the_targets_form():
    """configs/steps-mixed.yaml: the distractors' responses are as long (mean within 10%), have as
    many lines and the same answer marker as the on-task ones, so only content tells them apart."""
    import numpy as np

    from igds.core.data import read_source
    from igds.params import load_params
    from tests.conftest import ROOT

    data = load_params(ROOT / "configs" / "steps-mixed.yaml").data
    on = read_source("pool", data.splits.pool, max_chars=data.max_chars, strict=False, n=200, held={}).records
    off = read_source("pool", data.mix.distractors, max_chars=data.max_chars, strict=False, n=200, held={}).records
    assert {r.task for r in off} == {"products"} and {r.task for r in on} == {"chain_sum"}
    length = [np.mean([len(r.output) for r in rs]) for rs in (on, off)]
    assert abs(length[0] - length[1]) / length[0] < 0.10, length
    lines = [sorted({r.output.count("\n") for r in rs}) for rs in (on, off)]
    assert lines[0] == lines[1]
    assert all("\n#### " in r.output for r in on + off)


def test_form_auroc_finds_a_planted_form_and_not_a_matched_one():
    from igds.core.data import make_record
    from igds.core.data.splits import form_auroc

    on = [make_record(f"q{i}", "", f"{i} + 1 = {i + 1}\n#### {i + 1}", "t", "s") for i in range(20)]
    long = [make_record(f"p{i}", "", f"{i} * 2 = {2 * i}\nso it is\n#### {2 * i} indeed", "o", "s") for i in range(20)]
    matched = [make_record(f"p{i}", "", f"{i} * 1 = {i}\n#### {i}", "o", "s") for i in range(20)]
    assert form_auroc(on + long, "t") == {"response_chars": 1.0, "response_lines": 1.0}
    assert form_auroc(on + matched, "t")["response_lines"] == 0.5
    assert form_auroc(on, "t") == {}
