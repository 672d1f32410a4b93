"""Evaluation through lm-eval: task YAMLs generated from the eval (and probe) split, run with
`simple_evaluate` on a model already in memory, and the per-example scores the report's
statistics need.

Three tasks (lm-eval's own harness, no hub access: the data are local JSONL files):
- `igds_exact_match`: greedy generation, GSM8K-style final-number extraction, exact match.
  Generation stops at the chat template's end-of-turn marker or EOS (`stop_sequences`), or
  after `max_gen_toks` tokens: never at a blank line (lm-eval's default stop, the few-shot
  delimiter, would cut every answer that puts one before `####`);
- `igds_answer_loglik`: log-likelihood of the reference solution per solution token (at
  small scale exact match sits near the floor; this still separates methods);
- `igds_probe_loglik`: the same on held-out non-target tasks, the forgetting check.
Users with the internet add lm-eval's own tasks (MMLU, TruthfulQA) the usual way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from igds.core.data import Record

log = logging.getLogger(__name__)

TASK_EXACT_MATCH, TASK_ANSWER, TASK_PROBE = "igds_exact_match", "igds_answer_loglik", "igds_probe_loglik"
METRICS = {TASK_EXACT_MATCH: "exact_match", TASK_ANSWER: "answer_loglik", TASK_PROBE: "probe_loglik"}

from igds.core.answers import extract_answer, is_correct, normalise_number  # noqa: F401  (re-exported)


# lm-eval calls these through the generated tasks' utils.py ---------------------------------

def process_exact_match(doc: dict, results: list) -> dict:
    return {"exact_match": float(is_correct(results[0], doc["target"]))}


def process_loglik(doc: dict, results: list) -> dict:
    """Log-likelihood of the reference per reference token. lm-eval moves the context's
    trailing whitespace (the chat template's newline after 'assistant') into the
    continuation, so that one near-certain token is scored too, alike for every model."""
    loglik, _is_greedy = results[0]
    return {METRICS[doc["task_name"]]: loglik / doc["n_tokens"]}


# --- tasks ------------------------------------------------------------------------------------

class _Function(str):
    """A value lm-eval reads as a Python callable: YAML `!function module.name`."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(_Function, lambda dumper, v: dumper.represent_scalar("!function", str(v)))


def stop_sequences(tokenizer) -> list[str]:
    """The strings that end a chat answer: the chat template's end-of-turn marker (what it
    writes right after an assistant message: `<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`)
    and EOS, in that order, each once."""
    sentinel = "IGDS_ANSWER_SENTINEL"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": sentinel}],
                                         tokenize=False)
    after = text.split(sentinel, 1)[1].split() if sentinel in text else []
    stops = [after[0]] if after else []
    if tokenizer.eos_token:
        stops.append(tokenizer.eos_token)
    if not stops:
        raise ValueError("the tokenizer has neither an end-of-turn marker in its chat template nor an EOS token: "
                         "generation would only stop at max_gen_toks")
    return list(dict.fromkeys(stops))


def generation_kwargs(tokenizer, max_gen_toks: int) -> dict:
    """The exact-match task's `generation_kwargs`: greedy, stop at `stop_sequences`, at most
    `max_gen_toks` new tokens. Stops that are one token also go to `generate` as its
    `eos_token_id`, so a finished row is padded rather than continued (lm-eval decodes with
    special tokens skipped, so a special stop token can no longer be found in the text)."""
    stops = stop_sequences(tokenizer)
    vocab = tokenizer.get_vocab()
    eos_ids = [vocab[s] for s in stops if s in vocab]
    kwargs = {"until": stops, "do_sample": False, "max_gen_toks": int(max_gen_toks)}
    if eos_ids:
        kwargs["eos_token_id"] = eos_ids
    return kwargs


def generation_stats(raw: Sequence[dict], tokenizer, max_gen_toks: int) -> dict:
    """Token counts of the exact-match generations (re-encoded: a model's own greedy text
    re-encodes to its own tokens) and the share that used the whole `max_gen_toks` budget,
    so stopped by the limit rather than by a stop sequence (lm-eval strips the stop)."""
    counts = [len(tokenizer(row["resps"][0][0], add_special_tokens=False).input_ids)
              for row in raw if row["task"] == TASK_EXACT_MATCH]
    if not counts:
        return {"n_generated": 0, "gen_tokens_mean": None, "gen_tokens_max": None, "gen_hit_limit_share": None}
    return {"n_generated": len(counts), "gen_tokens_mean": sum(counts) / len(counts), "gen_tokens_max": max(counts),
            "gen_hit_limit_share": sum(c >= max_gen_toks for c in counts) / len(counts)}


def task_config(task: str, data: Path, output_type: str, metric: str, process_results: str,
                generation: dict | None = None) -> dict:
    """One lm-eval task (its YAML schema): local JSONL data, the prompt as text, the reference
    as target, our own per-document scoring function, and for a generation task its
    `generation_kwargs` (without them lm-eval stops at the few-shot delimiter, a blank line)."""
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": output_type,
        "doc_to_text": "prompt",
        "target_delimiter": "",
        "doc_to_target": "target",
        "process_results": _Function(f"utils.{process_results}"),
        "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
        **({"generation_kwargs": generation} if generation is not None else {}),
        "metadata": {"version": 1.0},
    }


def write_tasks(out: Path, eval_records: Sequence[Record], probe_records: Sequence[Record], tokenizer,
                max_gen_toks: int, n_generate: int | None = None) -> list[str]:
    """Write the task YAMLs, their JSONL data and utils.py into `out`; returns the task names.

    Each doc carries the record id (so per-example scores line up across models), the
    prompt, the reference solution, and its token count (the log-likelihood divisor)."""
    out.mkdir(parents=True, exist_ok=True)

    def docs(records, task_name):
        for r in records:
            yield {"id": r.id, "task": r.task, "task_name": task_name, "prompt": r.prompt, "target": r.output,
                   "n_tokens": max(1, len(tokenizer(r.output, add_special_tokens=False).input_ids))}

    def dump(name, rows):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return path

    generate = list(eval_records)[:n_generate] if n_generate is not None else list(eval_records)
    tasks = {TASK_EXACT_MATCH: (generate, "generate_until", "process_exact_match"),
             TASK_ANSWER: (list(eval_records), "loglikelihood", "process_loglik")}
    if probe_records:
        tasks[TASK_PROBE] = (list(probe_records), "loglikelihood", "process_loglik")
    for name, (records, output_type, process) in tasks.items():
        generation = generation_kwargs(tokenizer, max_gen_toks) if output_type == "generate_until" else None
        config = task_config(name, dump(name, docs(records, name)), output_type, METRICS[name], process, generation)
        (out / f"{name}.yaml").write_text(yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True),
                                          encoding="utf-8")
    (out / "utils.py").write_text(
        '"""Generated by igds.core.evaluate.write_tasks: lm-eval resolves `!function utils.*` here."""\n'
        "from igds.core.evaluate import process_exact_match, process_loglik  # noqa: F401\n", encoding="utf-8")
    return list(tasks)


def run_lm_eval(model, tokenizer, task_dir: Path, tasks: Sequence[str], batch_size: int, max_len: int,
                seed: int = 0) -> tuple[dict, dict, list[dict]]:
    """Evaluate `model` on the generated tasks with lm-eval, with the chat template; decoding
    as each task's YAML says (greedy, its stops and budget: `generation_kwargs`). The model
    adapter is lm-eval's HFLM with log-likelihoods computed at the continuation positions only
    (`igds.core.lm.ContinuationLM`).

    lm-eval is told whether to add a BOS token by the rule training tokenises with
    (`igds.core.tokens.tokenize_records`: when the tokenizer asks for one; lm-eval itself leaves
    it out when the rendered chat text already starts with it), so a model is scored on the
    token sequences it was trained on. Returns (aggregate metric per name, {metric: {doc id:
    value}}, raw per-sample logs)."""
    from lm_eval import simple_evaluate  # noqa: PLC0415
    from lm_eval.tasks import TaskManager  # noqa: PLC0415

    from igds.core.lm import ContinuationLM  # noqa: PLC0415

    lm = ContinuationLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_len,
              add_bos_token=bool(getattr(tokenizer, "add_bos_token", False)))
    results = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        apply_chat_template=True, log_samples=True, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed)
    aggregate, per_example, raw = {}, {}, []
    for task in tasks:
        metric = METRICS[task]
        aggregate[metric] = float(results["results"][task][f"{metric},none"])
        per_example[metric] = {}
        for sample in results["samples"][task]:
            per_example[metric][sample["doc"]["id"]] = float(sample[metric])
            raw.append({"task": task, "id": sample["doc"]["id"], "metric": metric, "value": float(sample[metric]),
                        "resps": sample["resps"], "filtered_resps": sample["filtered_resps"],
                        "target": sample["target"]})
    return aggregate, per_example, raw
