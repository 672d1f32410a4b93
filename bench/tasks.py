"""python -m bench.tasks: which reasoning-gym task should the offline default target? (issue 15.1)

The default's task metric must move: a target where the untouched model is mostly wrong and a
small LoRA fine-tune on the pool's on-task examples makes it right more often. For each
candidate task this measures, on the default budget:
- exact match of the untouched model on `--n-eval` problems of the task;
- exact match after LoRA fine-tuning on `--n-train` examples of it (params.yaml's `finetune:`
  section; `--epochs` overrides its epochs), from a seed disjoint from the eval seed;
- the gain with a paired percentile-bootstrap CI over the eval problems and a paired sign-flip
  permutation p (igds.core.stats), and the wall time of each part.
Both evaluations run as the evaluate stage runs them (igds.core.evaluate.write_tasks +
run_lm_eval: lm-eval, chat template, greedy, stopped at the end of turn or `--max-gen-toks`).

The rule (issue 15): base exact match <= 0.30 and a gain >= 0.20 whose CI excludes 0; and,
added here, the fine-tuned model must beat always answering the training set's commonest
answer (paired CI above 0): a one-token answer task can "gain" by learning the answers'
prior alone. Among the tasks that pass, the one with the highest CI lower bound on the gain
is chosen.

Writes results/tasks.json (atomically, after every task: a rerun with the same settings skips
the tasks already measured) and results/tasks.md. Run it alone on the machine: its wall times
are part of the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from bench.common import ROOT
from igds.core.answers import extract_answer
from igds.core.artifacts import atomic_file, read_json, write_json
from igds.core.config import SourceConfig
from igds.params import load_params
from igds.core.data.sources import read_source
from igds.core.evaluate import TASK_EXACT_MATCH, generation_stats, run_lm_eval, write_tasks
from igds.core.finetune import finetune
from igds.core.models.loading import load_model
from igds.core.stats import bootstrap_ci, paired_bootstrap, paired_permutation_test

log = logging.getLogger("bench.tasks")

CANDIDATES = ("chain_sum", "basic_arithmetic", "leg_counting", "letter_counting", "gcd", "simple_equations",
              "number_sequence")
MAX_BASE_EM, MIN_GAIN = 0.30, 0.20  # the rule of issue 15
TRAIN_SEED, EVAL_SEED = 1501, 1502  # reasoning-gym seeds of the two sets (distinct: disjoint draws)


def parse_spec(spec: str) -> tuple[str, dict]:
    """'chain_sum' or 'chain_sum:max_digits=2,max_terms=3' -> (task, reasoning-gym options); the
    option `solution=steps` is the source's (worked solutions: igds.core.data.steps), not the dataset's."""
    task, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"candidate {spec!r}: {item!r} is not key=value")
        options[key.strip()] = yaml.safe_load(value)
    return task.strip(), options


def task_records(spec: str, n: int, seed: int, max_chars: int, held: dict[str, str] | None = None):
    """n validated records of one reasoning-gym task (a spec: task[:options]), none of whose
    ids are in `held`."""
    task, options = parse_spec(spec)
    solution = str(options.pop("solution", "answer"))
    split = read_source(task, SourceConfig(kind="reasoning_gym", tasks=(task,), n=n, seed=seed, options=options,
                                           solution=solution),
                        max_chars=max_chars, strict=False, held=held)
    if len(split.records) < n:
        raise RuntimeError(f"{task}: only {len(split.records)} of {n} records ({len(split.rejects)} rejected)")
    return split.records


def task_sets(spec: str, n_train: int, n_eval: int, max_chars: int):
    """(training records, eval records) of a candidate, disjoint, from their own seeds."""
    eval_records = task_records(spec, n_eval, EVAL_SEED, max_chars)
    held = {r.id: "eval" for r in eval_records}
    return task_records(spec, n_train, TRAIN_SEED, max_chars, held=held), eval_records


def exact_match(model, tokenizer, records, max_gen_toks: int, batch_size: int, max_len: int, seed: int):
    """Per-example exact match in record order, and the generation statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        import datasets  # noqa: PLC0415

        datasets.config.HF_DATASETS_CACHE = Path(tmp) / "cache"
        write_tasks(Path(tmp) / "tasks", records, [], tokenizer, max_gen_toks)
        _, per_example, raw = run_lm_eval(model, tokenizer, Path(tmp) / "tasks", [TASK_EXACT_MATCH], batch_size,
                                          max_len, seed)
    scores = np.array([per_example["exact_match"][r.id] for r in records])
    return scores, generation_stats(raw, tokenizer, max_gen_toks)


def measure(task: str, params, args) -> dict:
    """One candidate: base and fine-tuned exact match on the same eval problems, the gain's
    CI and p, wall times."""
    cfg = dataclasses.replace(params.finetune, epochs=args.epochs or params.finetune.epochs)
    ev = params.evaluate
    train_records, eval_records = task_sets(task, args.n_train, args.n_eval, params.data.max_chars)
    model_name = cfg.model or params.model.name
    out: dict = {"task": task, "n_train": len(train_records), "n_eval": len(eval_records), "epochs": cfg.epochs}
    t0 = time.perf_counter()
    loaded = load_model(model_name, params.model.device, params.model.dtype)
    base, out["base_generation"] = exact_match(loaded.model, loaded.tokenizer, eval_records, args.max_gen_toks,
                                               ev.batch_size, ev.max_len, params.seed)
    out["base_eval_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    loaded = load_model(model_name, params.model.device, params.model.dtype)
    model, result = finetune(loaded.model, loaded.tokenizer, train_records, cfg, seed=0)
    out["train_s"] = round(time.perf_counter() - t0, 1)
    out["train_tokens_per_s"] = result.summary()["tokens_per_s"]
    out["train_loss_first_last"] = [result.summary()["loss_first"], result.summary()["loss_last"]]
    t0 = time.perf_counter()
    tuned, out["tuned_generation"] = exact_match(model.merge_and_unload().eval(), loaded.tokenizer, eval_records,
                                                 args.max_gen_toks, ev.batch_size, ev.max_len, params.seed)
    out["tuned_eval_s"] = round(time.perf_counter() - t0, 1)
    rng = np.random.default_rng(params.seed)
    for name, values in (("base_em", base), ("tuned_em", tuned)):
        ci = bootstrap_ci(values[None], rng, params.report.n_boot, params.report.level)
        out[name] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi}
    gain = paired_bootstrap(tuned[None], base[None], rng, params.report.n_boot, params.report.level)
    test = paired_permutation_test(tuned[None], base[None], rng, params.report.n_perm)
    out["gain"] = {"mean": gain.diff, "lo": gain.lo, "hi": gain.hi, "p": test.p_value, "exact": test.exact}
    majority = majority_correct(train_records, eval_records)
    out["majority_em"] = float(majority.mean())
    out["per_example"] = {"ids": [r.id for r in eval_records], "base": base.tolist(), "tuned": tuned.tolist()}
    out["vs_majority"] = versus_majority(out, majority, params)
    return out


def majority_correct(train_records, eval_records) -> np.ndarray:
    """Per eval problem, whether always answering the training set's most common final answer
    is right: what a model that learnt only the answers' distribution scores (ties: the
    smallest answer)."""
    answers = Counter(a for r in train_records if (a := extract_answer(r.output)) is not None)
    top = max(answers.values())
    mode = min(a for a, n in answers.items() if n == top)
    return np.array([float(extract_answer(r.output) == mode) for r in eval_records])


def versus_majority(row: dict, majority: np.ndarray, params) -> dict:
    """The fine-tuned model's exact match minus the majority answer's, paired on the eval
    problems: CI and permutation p."""
    tuned = np.asarray(row["per_example"]["tuned"])
    rng = np.random.default_rng([params.seed, 1])
    ci = paired_bootstrap(tuned[None], majority[None], rng, params.report.n_boot, params.report.level)
    test = paired_permutation_test(tuned[None], majority[None], rng, params.report.n_perm)
    return {"mean": ci.diff, "lo": ci.lo, "hi": ci.hi, "p": test.p_value}


def passes(row: dict) -> bool:
    """Issue 15's rule: base EM <= 0.30, gain >= 0.20, the gain's CI above 0; and ours on top
    of it: the fine-tuned model beats always answering the commonest training answer (CI of
    the paired difference above 0), so the gain is not the answers' prior learnt."""
    beats_prior = "vs_majority" not in row or row["vs_majority"]["lo"] > 0
    return (row["base_em"]["mean"] <= MAX_BASE_EM and row["gain"]["mean"] >= MIN_GAIN and row["gain"]["lo"] > 0
            and beats_prior)


def choose(rows: dict[str, dict]) -> str | None:
    """The passing task with the highest CI lower bound on the gain (None: no task passes)."""
    passing = [r for r in rows.values() if passes(r)]
    return max(passing, key=lambda r: (r["gain"]["lo"], r["gain"]["mean"]))["task"] if passing else None


def _maybe(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _diff(d: dict | None) -> str:
    return "–" if d is None else f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [f"# Candidate target tasks ({doc['created']})", "",
             f"Model {s['model']}; LoRA on {s['n_train']} examples of the task, {s['epochs']} epoch(s), "
             f"params.yaml's finetune: otherwise; exact match on {s['n_eval']} held-out problems (lm-eval, greedy, "
             f"at most {s['max_gen_toks']} new tokens); 95% CIs: percentile bootstrap over the problems (paired for "
             f"the gain), p: paired sign-flip permutation test. Rule: base <= {MAX_BASE_EM:.2f} and gain >= "
             f"{MIN_GAIN:.2f} with a CI above 0 (issue 15), and the fine-tuned model above the majority answer with a "
             "CI above 0 (ours: the gain must not be the answers' prior).", "",
             "| task | base EM | fine-tuned EM | gain | p | majority answer EM | fine-tuned − majority | passes | "
             "base at limit | wall s (base eval / train / eval) |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for row in doc["tasks"].values():
        b, t, g = row["base_em"], row["tuned_em"], row["gain"]
        lines.append(
            f"| {row['task']} | {b['mean']:.2f} [{b['lo']:.2f}, {b['hi']:.2f}] | {t['mean']:.2f} [{t['lo']:.2f}, "
            f"{t['hi']:.2f}] | {g['mean']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}] | {g['p']:.2g} | "
            f"{_maybe(row.get('majority_em'))} | {_diff(row.get('vs_majority'))} | {'yes' if passes(row) else 'no'} | "
            f"{row['base_generation']['gen_hit_limit_share']:.0%} | "
            f"{row['base_eval_s']:.0f} / {row['train_s']:.0f} / {row['tuned_eval_s']:.0f} |")
    lines += ["", "majority answer EM: always answering the training set's most common answer (what learning only "
              "the answers' distribution would score).", "", f"Chosen: **{doc['chosen'] or 'none passes'}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--task", dest="tasks", action="append", default=None,
                        help="a candidate: a reasoning-gym task, optionally with its dataset options, e.g. "
                             "chain_sum:max_digits=2,max_terms=3; solution=steps writes worked solutions "
                             "(igds/core/data/steps.py) (repeat for several; default: %s)" % ", ".join(CANDIDATES))
    parser.add_argument("--n-train", type=int, default=None,
                        help="training examples (default: the default pool's on-task count)")
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=None, help="default: params.yaml's finetune.epochs")
    parser.add_argument("--max-gen-toks", type=int, default=None, help="default: params.yaml's evaluate.max_gen_toks")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tasks.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    params = load_params(args.params)
    if args.n_train is None:
        args.n_train = round(params.data.splits.pool.n * (params.data.mix.on_task_share if params.data.mix else 1))
    args.max_gen_toks = args.max_gen_toks or params.evaluate.max_gen_toks
    settings = {"model": params.finetune.model or params.model.name, "n_train": args.n_train, "n_eval": args.n_eval,
                "epochs": args.epochs or params.finetune.epochs, "max_gen_toks": args.max_gen_toks,
                "finetune": dataclasses.asdict(params.finetune), "seeds": [TRAIN_SEED, EVAL_SEED]}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    doc = read_json(args.out) if args.out.is_file() else {}
    if doc.get("key") != key:
        doc = {"key": key, "settings": settings, "tasks": {}}
    for task, row in doc["tasks"].items():  # rows measured before the majority baseline was
        if "vs_majority" not in row:
            train, evals = task_sets(task, row["n_train"], row["n_eval"], params.data.max_chars)
            assert [r.id for r in evals] == row["per_example"]["ids"], f"{task}: the eval set changed"
            majority = majority_correct(train, evals)
            row["majority_em"], row["vs_majority"] = float(majority.mean()), versus_majority(row, majority, params)
            row["passes"] = passes(row)
    for task in args.tasks or CANDIDATES:
        if task in doc["tasks"]:
            log.info("%s: measured already (same settings), skipped", task)
            continue
        row = measure(task, params, args)
        log.info("%s: base %.2f -> tuned %.2f (gain %+.2f [%+.2f, %+.2f])", task, row["base_em"]["mean"],
                 row["tuned_em"]["mean"], row["gain"]["mean"], row["gain"]["lo"], row["gain"]["hi"])
        doc["tasks"][task] = row
        doc["created"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        save(doc, args.out)
    save(doc, args.out)
    print(markdown(doc))


def save(doc: dict, out: Path) -> None:
    """results/tasks.json and results/tasks.md, atomically, with the choice made again."""
    doc["chosen"] = choose(doc["tasks"])
    write_json(out, doc)
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(markdown(doc))


if __name__ == "__main__":
    main()
