"""Evaluation: GSM8K-style answer extraction, the generated lm-eval tasks run end to end on a
tiny model (per-example scores equal a direct computation), and feature activation."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import torch

from igds.core.data import make_record

from igds.core.tokens import tokenize_records
from igds.core.evaluate import (
    METRICS,
    TASK_EXACT_MATCH,
    generation_stats,
    stop_sequences,
    extract_answer,
    is_correct,
    normalise_number,
    process_exact_match,
    run_lm_eval,
    write_tasks,
)
from igds.core.models.residual import add_to_residual
from igds.method.resonance import feature_activation
from tests.conftest import LAYER, build_char_tokenizer, build_tiny_model, copy_record, general, recall_sae, task


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
    names = write_tasks(tmp_path / "tasks", eval_records, probe_records, tok, max_gen_toks=12, n_generate=2)
    assert sorted(names) == sorted(METRICS)
    assert all((tmp_path / "tasks" / f"{n}.yaml").is_file() for n in names)

    aggregate, per_example, raw = run_lm_eval(model, tok, tmp_path / "tasks", names, batch_size=4, max_len=256)
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


# --- generation: stops, budget, BOS --------------------------------------------------------

def _planted_generate(monkeypatch, tokenizer, continuations: dict[str, str]):
    """Make lm-eval's HF backend 'generate', for a context containing a key of `continuations`,
    exactly that text's tokens (special tokens written in the text stay tokens), after the
    real context, so everything lm-eval does around generation (stops, decoding, filters,
    scoring) runs for real on a known output."""
    from lm_eval.models.huggingface import HFLM

    def fake(self, context, max_length, stop, **kwargs):
        rows = []
        for row in context.tolist():
            text = tokenizer.decode(row)
            planted = next(v for k, v in continuations.items() if k in text)
            new = tokenizer(planted, add_special_tokens=False).input_ids[:max_length - len(row)]
            rows.append(row + new)
        width = max(map(len, rows))
        return torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])

    monkeypatch.setattr(HFLM, "_model_generate", fake)


def test_stop_sequences_are_the_templates_end_of_turn_and_eos():
    tok = build_char_tokenizer()
    assert stop_sequences(tok) == ["<|im_end|>"]  # ChatML: the end of turn is EOS
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
                         "<end_of_turn>\n{% endfor %}")  # Gemma's shape; EOS is another token
    tok.eos_token = "<pad>"
    assert stop_sequences(tok) == ["<end_of_turn>", "<pad>"]


def test_generation_runs_past_a_blank_line_to_the_end_of_turn_and_counts_the_token_limit(tmp_path, monkeypatch):
    """An answer with a blank line before `####` is read whole (lm-eval's default stop, the
    few-shot delimiter '\n\n', cut it to 'Think.'); one that never stops is counted as
    having hit max_gen_toks."""
    tok, model = build_char_tokenizer(), build_tiny_model()
    stopped = make_record("Add 40 and 2.", "", "40 + 2 = 42\n#### 42", "task", "test")
    endless = make_record("Add 1 and 1.", "", "#### 2", "task", "test")
    max_gen_toks = 40
    _planted_generate(monkeypatch, tok, {"Add 40 and 2.": "Think.\n\n40 + 2 = 42\n#### 42<|im_end|>",
                                         "Add 1 and 1.": "one plus one, " * 10})
    names = write_tasks(tmp_path / "tasks", [stopped, endless], [], tok, max_gen_toks=max_gen_toks)
    config = (tmp_path / "tasks" / f"{TASK_EXACT_MATCH}.yaml").read_text()
    assert "generation_kwargs" in config and "max_gen_toks: 40" in config
    _, per_example, raw = run_lm_eval(model, tok, tmp_path / "tasks", names, batch_size=2, max_len=256)

    responses = {row["id"]: row["resps"][0][0] for row in raw if row["task"] == TASK_EXACT_MATCH}
    assert responses[stopped.id] == "Think.\n\n40 + 2 = 42\n#### 42"  # the stop is stripped, nothing else
    assert per_example["exact_match"] == {stopped.id: 1.0, endless.id: 0.0}
    assert len(responses[endless.id]) == max_gen_toks  # a character per token: the budget, spent
    stats = generation_stats(raw, tok, max_gen_toks)
    assert stats["gen_hit_limit_share"] == 0.5 and stats["n_generated"] == 2
    assert stats["gen_tokens_max"] == max_gen_toks
    assert stats["gen_tokens_mean"] == (len("Think.\n\n40 + 2 = 42\n#### 42") + max_gen_toks) / 2


def _bos_char_tokenizer(template_writes_bos: bool, add_bos_token: bool = True):
    """The character tokenizer with a BOS token that its post-processor adds, `add_bos_token`
    saying so (or not: the flag and the post-processor disagree in some hub tokenizers), and a
    chat template that does or does not write BOS too (Gemma's does)."""
    from tokenizers import processors

    tok = build_char_tokenizer()
    tok.bos_token = "<unk>"  # an id the text never uses, so the tiny model's 100-token vocabulary holds
    bos = tok.convert_tokens_to_ids("<unk>")
    tok.add_bos_token = add_bos_token  # set first: transformers rebuilds the post-processor from it
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<unk> $A", special_tokens=[("<unk>", bos)])
    if template_writes_bos:
        tok.chat_template = "{{ bos_token }}" + tok.chat_template
    return tok, bos


@pytest.mark.parametrize("template_writes_bos, add_bos_token", [(True, True), (False, True), (False, False)])
def test_lm_eval_scores_and_generates_from_the_token_ids_training_sees(tmp_path, monkeypatch, template_writes_bos,
                                                                        add_bos_token):
    """At most one BOS, whoever writes it, and the same rule on both sides: the ids lm-eval
    feeds the model (log-likelihood and generation) begin as igds.core.tokens.tokenize_records's
    do. The last case failed while lm-eval was left to the tokenizer's own default."""
    from lm_eval.models.huggingface import HFLM

    from igds.core.lm import ContinuationLM

    tok, bos = _bos_char_tokenizer(template_writes_bos, add_bos_token)
    model = build_tiny_model()
    record = make_record("Add 40 and 2.", "", "#### 42", "task", "test")
    trained = tokenize_records(tok, [record], 256)
    start = [bos] if template_writes_bos or add_bos_token else []
    assert trained.input_ids[0][:len(start) + 1] == start + [tok.convert_tokens_to_ids("<|im_start|>")]

    seen = []
    real_hidden, real_generate = ContinuationLM._hidden, HFLM._model_generate

    def hidden(self, input_ids, attention_mask, prefix_len=0):
        seen.extend(("loglik", [t for t, m in zip(row, m_row) if m]) for row, m_row in
                    zip(input_ids.tolist(), attention_mask.tolist()))
        return real_hidden(self, input_ids, attention_mask, prefix_len)

    def generate(self, context, max_length, stop, **kwargs):
        mask = kwargs.get("attention_mask")
        seen.extend(("generate", [t for t, m in zip(row, m_row) if m]) for row, m_row in
                    zip(context.tolist(), mask.tolist()))
        return real_generate(self, context, max_length, stop, **kwargs)

    monkeypatch.setattr(ContinuationLM, "_hidden", hidden)
    monkeypatch.setattr(HFLM, "_model_generate", generate)
    names = write_tasks(tmp_path / "tasks", [record], [], tok, max_gen_toks=4)
    run_lm_eval(model, tok, tmp_path / "tasks", names, batch_size=1, max_len=256)
    assert {kind for kind, _ in seen} == {"loglik", "generate"}
    prompt = trained.input_ids[0][:trained.response_start[0]]
    for kind, ids in seen:
        assert ids[:len(prompt)] == prompt, kind  # the same prompt tokens, one BOS


def test_continuation_loglik_equals_lm_evals_own(monkeypatch):
    """ContinuationLM (the LM head at continuation positions only) gives lm-eval HFLM's
    (log-probability, is greedy) for every request: ragged lengths, one-token continuations, a
    request cut from the left at max_length, and the caller's order."""
    from lm_eval.models.huggingface import HFLM

    from igds.core.lm import ContinuationLM

    tok, model = build_char_tokenizer(), build_tiny_model()
    enc = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    pairs = [("abc", "d"), ("hello wor", "ld"), ("x", "yz yz"), ("a long context " * 4, "end"), ("q", "r"),
             ("hello world", "!"), ("hello there", "?")]  # batched together: a shared prefix
    requests = [((c, t), enc(c), enc(t)) for c, t in pairs]
    assert len(requests[3][1]) + len(requests[3][2]) > 40  # cut from the left below
    for max_len in (256, 40):
        ours = ContinuationLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=max_len)
        theirs = HFLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=max_len)
        got = ours._loglikelihood_tokens(requests, disable_tqdm=True)
        want = theirs._loglikelihood_tokens(requests, disable_tqdm=True)
        assert [g for _, g in got] == [g for _, g in want]
        assert [v for v, _ in got] == pytest.approx([v for v, _ in want], abs=1e-4)
