"""bench.tasks: the rule that picks the default target task, on planted measurements."""

from __future__ import annotations

from bench.tasks import choose, majority_correct, markdown, parse_spec, passes
from igds.core.data.schema import make_record


def row(task: str, base: float, gain: float, lo: float) -> dict:
    return {"task": task, "base_em": {"mean": base, "lo": base - 0.05, "hi": base + 0.05},
            "tuned_em": {"mean": base + gain, "lo": base + lo, "hi": base + gain + 0.1},
            "gain": {"mean": gain, "lo": lo, "hi": gain + 0.1, "p": 0.001, "exact": False},
            "base_generation": {"gen_hit_limit_share": 0.25}, "base_eval_s": 60.0, "train_s": 90.0,
            "tuned_eval_s": 30.0}


def test_the_rule_needs_a_low_base_a_big_gain_and_a_ci_above_zero():
    assert passes(row("a", 0.10, 0.30, 0.15))
    prior_only = {**row("prior", 0.06, 0.40, 0.29), "vs_majority": {"mean": 0.0, "lo": -0.05, "hi": 0.05, "p": 1.0}}
    assert not passes(prior_only)  # the fine-tuned model only answers the commonest answer
    assert passes({**prior_only, "vs_majority": {"mean": 0.2, "lo": 0.1, "hi": 0.3, "p": 0.001}})
    assert not passes(row("too_easy", 0.35, 0.30, 0.15))  # the untouched model already solves it
    assert not passes(row("small_gain", 0.10, 0.19, 0.05))
    assert not passes(row("noisy", 0.10, 0.25, -0.01))  # the CI reaches 0


def test_the_passing_task_with_the_highest_lower_bound_is_chosen():
    rows = {r["task"]: r for r in (row("a", 0.1, 0.40, 0.10), row("b", 0.2, 0.30, 0.18), row("c", 0.5, 0.5, 0.4))}
    assert choose(rows) == "b"  # c has the biggest gain but fails the base rule
    assert choose({"c": rows["c"]}) is None


def test_the_table_shows_every_candidate_and_the_choice():
    rows = {"a": row("a", 0.1, 0.40, 0.10), "c": row("c", 0.5, 0.5, 0.4)}
    text = markdown({"created": "now", "chosen": choose(rows), "tasks": rows,
                     "settings": {"model": "m", "n_train": 120, "n_eval": 100, "epochs": 1, "max_gen_toks": 64}})
    assert "| a | 0.10 [0.05, 0.15] | 0.50 [0.20, 0.60] | +0.40 [+0.10, +0.50] | 0.001 | – | – | yes | 25% | 60 / 90 / 30 |" in text
    assert "| c |" in text and "| no |" in text and "Chosen: **a**" in text


def test_the_majority_baseline_answers_the_commonest_training_answer_and_specs_parse():
    rec = lambda i, a: make_record(f"q{i}", "", a, "t", "s")  # noqa: E731
    train = [rec(i, a) for i, a in enumerate(["1", "1", "2", "3", "1.0"])]  # 1 four times (1.0 = 1)
    assert majority_correct(train, [rec(10 + i, a) for i, a in enumerate(["1", "2", "1", "5"])]).mean() == 0.5
    assert parse_spec("chain_sum:max_digits=2, max_terms=3") == ("chain_sum", {"max_digits": 2, "max_terms": 3})
    assert parse_spec("gcd") == ("gcd", {})
