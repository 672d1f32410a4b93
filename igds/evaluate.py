"""Evaluation through lm-eval: task YAMLs generated from the eval (and probe) split, run with
`simple_evaluate` on a model already in memory, and the per-example scores the report's
statistics need.

Three tasks (lm-eval's own harness, no hub access: the data are local JSONL files):
- `igds_exact_match`: greedy generation, GSM8K-style final-number extraction, exact match;
- `igds_answer_loglik`: log-likelihood of the reference solution per solution token (at
  small scale exact match sits near the floor; this still separates methods);
- `igds_probe_loglik`: the same on held-out non-target tasks, the forgetting check.
Users with the internet add lm-eval's own tasks (MMLU, TruthfulQA) the usual way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from igds.data import Record

log = logging.getLogger(__name__)

TASK_EXACT_MATCH, TASK_ANSWER, TASK_PROBE = "igds_exact_match", "igds_answer_loglik", "igds_probe_loglik"
METRICS = {TASK_EXACT_MATCH: "exact_match", TASK_ANSWER: "answer_loglik", TASK_PROBE: "probe_loglik"}

# --- answers ----------------------------------------------------------------------------------

_FINAL = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"-?\s?[$€£]?\s?-?\d[\d,]*(?:\.\d+)?|-?[$€£]?\.\d+")


def normalise_number(text: str) -> Decimal | None:
    """'1,000' -> 1000, '$5' -> 5, '-3' -> -3, '3.50' -> 3.5, '7.' -> 7; None if no number."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    raw = match.group(0)
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


def extract_answer(text: str) -> Decimal | None:
    """The final answer of a GSM8K-style solution: the number after '####' if present,
    else the last number in the text (how lm-eval's gsm8k 'flexible-extract' reads it)."""
    final = _FINAL.search(text)
    if final is not None:
        value = normalise_number(final.group(1))
        if value is not None:
            return value
    numbers = list(_NUMBER.finditer(text))
    return normalise_number(numbers[-1].group(0)) if numbers else None


def is_correct(generated: str, reference: str) -> bool:
    """Exact match of the extracted final numbers (numeric: '3.50' equals '3.5')."""
    predicted, target = extract_answer(generated), extract_answer(reference)
    return predicted is not None and target is not None and predicted == target


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


def task_config(task: str, data: Path, output_type: str, metric: str, process_results: str) -> dict:
    """One lm-eval task (its YAML schema): local JSONL data, the prompt as text, the reference
    as target, our own per-document scoring function."""
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
        "metadata": {"version": 1.0},
    }


def write_tasks(out: Path, eval_records: Sequence[Record], probe_records: Sequence[Record], tokenizer,
                n_generate: int | None = None) -> list[str]:
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
        config = task_config(name, dump(name, docs(records, name)), output_type, METRICS[name], process)
        (out / f"{name}.yaml").write_text(yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True),
                                          encoding="utf-8")
    (out / "utils.py").write_text(
        '"""Generated by igds.evaluate.write_tasks: lm-eval resolves `!function utils.*` here."""\n'
        "from igds.evaluate import process_exact_match, process_loglik  # noqa: F401\n", encoding="utf-8")
    return list(tasks)


def run_lm_eval(model, tokenizer, task_dir: Path, tasks: Sequence[str], batch_size: int, max_gen_toks: int,
                max_len: int, seed: int = 0) -> tuple[dict, dict, list[dict]]:
    """Evaluate `model` on the generated tasks with lm-eval, greedy decoding, chat template.

    Returns (aggregate metric per name, {metric: {doc id: value}}, raw per-sample logs)."""
    from lm_eval import simple_evaluate  # noqa: PLC0415
    from lm_eval.models.huggingface import HFLM  # noqa: PLC0415
    from lm_eval.tasks import TaskManager  # noqa: PLC0415

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_len)
    results = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        apply_chat_template=True, log_samples=True, gen_kwargs={"max_gen_toks": max_gen_toks, "do_sample": False},
        bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
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
