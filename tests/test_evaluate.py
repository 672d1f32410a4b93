"""Evaluation: GSM8K-style answer extraction, the generated lm-eval tasks run end to end on a
tiny model (per-example scores equal a direct computation), and feature activation."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import torch

from igds.tokens import tokenize_records
from igds.evaluate import (
    METRICS,
    extract_answer,
    is_correct,
    normalise_number,
    process_exact_match,
    run_lm_eval,
    write_tasks,
)
from igds.models.residual import add_to_residual
from igds.resonance import feature_activation
from tests.conftest import LAYER, copy_record, general, recall_sae, task


@pytest.mark.parametrize("text, value", [
    ("#### 1,000", "1000"), ("#### $5", "5"), ("#### -3", "-3"), ("#### 3.50", "3.5"), ("#### €80", "80"),
    ("#### 7.", "7"), ("so it costs $1,234.50 in total", "1234.5"), ("x = -0.5", "-0.5"),
    ("12 apples, then 1,250 pears", "1250"),  # no '####': the last number
    ("#### 42\nand later 17", "42"),  # '####' wins over a later number
    ("no number at all", None), ("####", None),
])
def test_extract_answer_reads_gsm8k_style_answers(text, value):
    got = extract_answer(text)
    assert (got is None and value is None) or got == Decimal(value)


def test_exact_match_compares_numbers_not_strings():
    assert is_correct("The total is 1000.", "... #### 1,000")
    assert is_correct("#### 3.5", "#### 3.50") and is_correct("#### $5", "#### 5")
    assert not is_correct("#### 3", "#### -3") and not is_correct("#### 1,000", "#### 100")
    assert not is_correct("I do not know", "#### 5")
    assert normalise_number("1,2") is None  # not a thousands separator: not read as 12
    assert process_exact_match({"target": "#### 12"}, ["so 12"]) == {"exact_match": 1.0}


def test_generated_tasks_run_in_lm_eval_and_score_each_example(tmp_path, trained_tiny):
    model, tok = trained_tiny
    eval_records = [copy_record(w) for w in ("abcdef", "qwerty", "zxcvbn")] + [task(1)]
    probe_records = [general(i) for i in range(3)]
    names = write_tasks(tmp_path / "tasks", eval_records, probe_records, tok, n_generate=2)
    assert sorted(names) == sorted(METRICS)
    assert all((tmp_path / "tasks" / f"{n}.yaml").is_file() for n in names)

    aggregate, per_example, raw = run_lm_eval(model, tok, tmp_path / "tasks", names, batch_size=4,
                                              max_gen_toks=12, max_len=256)
    assert set(per_example["answer_loglik"]) == {r.id for r in eval_records}
    assert set(per_example["exact_match"]) == {r.id for r in eval_records[:2]}  # n_generate
    assert set(per_example["probe_loglik"]) == {r.id for r in probe_records}
    assert set(per_example["exact_match"].values()) <= {0.0, 1.0}
    assert len(raw) == 4 + 2 + 3 and all("resps" in row for row in raw)
    assert aggregate["answer_loglik"] == pytest.approx(
        sum(per_example["answer_loglik"].values()) / len(eval_records))

    # the per-example log-likelihood is the log-probability of the reference's tokens given the
    # chat prompt, per reference token, computed here directly. lm-eval moves the prompt's
    # trailing newline (after 'assistant') into the continuation, so that token counts too.
    tokenized = tokenize_records(tok, eval_records, 256)
    for record, ids, start in zip(eval_records, tokenized.input_ids, tokenized.response_start):
        n_answer = len(tok(record.output, add_special_tokens=False).input_ids)
        ids_t = torch.tensor([ids[:start + n_answer]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids_t).logits[0, :-1].float(), -1)
        scored = torch.arange(start - 2, start + n_answer - 1)  # positions predicting '\n' + the answer
        direct = logprobs[scored, ids_t[0, start - 1:]].sum().item() / n_answer
        assert per_example["answer_loglik"][record.id] == pytest.approx(direct, abs=1e-3), record.output

    # the copy model copies: its answers are likelier than the fixture's math answer
    copies = [per_example["answer_loglik"][r.id] for r in eval_records[:3]]
    assert min(copies) > per_example["answer_loglik"][eval_records[3].id]
    json.dumps(raw)  # the raw samples are JSON-serialisable (samples.jsonl)


def test_feature_activation_grows_when_the_model_writes_the_feature(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    on_task = [task(i) for i in range(4)]
    off_task = [general(i) for i in range(4)]
    kwargs = dict(layer=LAYER, features=[0], batch_size=4, max_len=128)
    assert feature_activation(model, tok, sae, on_task, **kwargs) > feature_activation(model, tok, sae, off_task, **kwargs)
    base = feature_activation(model, tok, sae, off_task, **kwargs)
    with add_to_residual(model, LAYER, 6.0 * u):  # a "fine-tuned" model that writes the task direction
        amplified = feature_activation(model, tok, sae, off_task, **kwargs)
    assert amplified > base + 1.0
    mean_pooled = feature_activation(model, tok, sae, on_task, pooling="mean", **kwargs)
    assert 0 < mean_pooled < feature_activation(model, tok, sae, on_task, **kwargs)
