"""python -m bench.precision: bf16 autocast (model.autocast) against fp32 on this machine, in one
process: what it buys and what it changes.

- speed, interleaved (the order alternates each repeat), best of `--repeats`: the suite's own
  fine-tuning steps (LoRA as params.yaml's `finetune:` says, on the within pool's batches) and
  the evaluate stage's log-likelihood requests (igds.core.lm.ContinuationLM on the eval split);
  tokens/s and requests/s, fp32 and bf16, and their ratio;
- results: the loss selector's scores of the within pool in both (Spearman rank correlation,
  and the overlap of the top halves it would select); and per arm (the whole pool, and seeded
  random halves), a fine-tune in fp32 and in bf16 from the same seed, each evaluated on the
  same eval problems: exact match paired problem by problem (the bf16 - fp32 difference with a
  paired-bootstrap 95% CI, the share of problems on which the two agree) and the final
  training loss.
The default turns bf16 on only if every arm's paired difference has a CI that holds 0 and the
selection overlap is high; the markdown says which, with the numbers. Writes
results/bench-precision.{json,md}. Run it alone on the machine (tens of minutes).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, interleaved, write_report
from bench.prefix import loglik_requests, training_steps
from igds.core.models.loading import load_model, mixed_precision
from igds.core.stats import bootstrap_ci
from igds.params import load_params
from pipelines.io import read_pool, read_split

log = logging.getLogger("bench.precision")
MODES = {"fp32": None, "bf16": "bfloat16"}


def train_rates(loaded, params, records, repeats: int) -> dict:
    """tokens/s of the suite's fine-tuning steps on `records`' batches, fp32 and under bf16 autocast
    (the whole step, as pipelines.common.main runs the finetune stage)."""
    steps, batches, n_tokens = training_steps(loaded, params.finetune, records)

    def run(mode: str) -> float:
        with mixed_precision("cpu", MODES[mode]):
            return steps(False)

    run("fp32"), run("bf16")  # warm-up
    walls = interleaved(run, list(MODES), repeats)
    best = {m: min(w) for m, w in walls.items()}
    return {"n_examples": len(records), "n_steps": len(batches), "n_tokens": n_tokens,
            "tokens_per_s": {m: n_tokens / w for m, w in best.items()}, "speedup": best["fp32"] / best["bf16"],
            "walls_s": walls}


def loglik_rates(loaded, records, batch_size: int, max_len: int, repeats: int) -> dict:
    """requests/s of the evaluate stage's log-likelihood requests (prompt -> reference answer)
    through ContinuationLM, fp32 and bf16; the largest difference in a request's value."""
    import igds.core.lm  # noqa: PLC0415

    requests = loglik_requests(loaded.tokenizer, records)
    lm = igds.core.lm.ContinuationLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size,
                                     max_length=max_len)
    values = {}

    def run(mode: str) -> float:
        with mixed_precision("cpu", MODES[mode]):
            t0 = time.perf_counter()
            out = lm._loglikelihood_tokens(requests, disable_tqdm=True)
            wall = time.perf_counter() - t0
        values[mode] = [v for v, _ in out]
        return wall

    walls = interleaved(run, list(MODES), repeats)
    best = {m: min(w) for m, w in walls.items()}
    diff = np.abs(np.array(values["bf16"]) - np.array(values["fp32"]))
    return {"n_requests": len(requests), "requests_per_s": {m: len(requests) / w for m, w in best.items()},
            "speedup": best["fp32"] / best["bf16"], "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "walls_s": walls}


def loss_scores(loaded, params, pool) -> dict:
    """The loss selector's scores of `pool` in fp32 and bf16: Spearman rank correlation and the
    overlap of the top halves it keeps."""
    from scipy.stats import spearmanr  # noqa: PLC0415

    from igds.core.context import ScoringContext  # noqa: PLC0415
    from igds.core.registry import build_selector  # noqa: PLC0415

    scores = {}
    for mode in MODES:
        ctx = ScoringContext(seed=params.seed, target=[], batch_size=params.scoring.batch_size,
                             max_len=params.scoring.max_len, loader=lambda: loaded)
        with mixed_precision("cpu", MODES[mode]):
            scores[mode] = np.asarray(build_selector("loss", params.methods["loss"]).score(pool, ctx).scores, float)
    half = len(pool) // 2
    top = {m: set(np.argsort(-s, kind="stable")[:half]) for m, s in scores.items()}
    return {"n": len(pool), "spearman": float(spearmanr(scores["fp32"], scores["bf16"]).statistic),
            "top_half_overlap": len(top["fp32"] & top["bf16"]) / half,
            "max_abs_diff": float(np.abs(scores["fp32"] - scores["bf16"]).max())}


def arm(loaded, params, records, eval_records, seed: int, n_boot: int) -> dict:
    """One arm fine-tuned from the same seed in fp32 and in bf16, each evaluated on the same eval
    problems: exact match paired problem by problem."""
    from igds.core.evaluate import run_lm_eval, write_tasks  # noqa: PLC0415
    from igds.core.finetune import finetune  # noqa: PLC0415

    cfg, out = params.evaluate, {}
    for mode in MODES:
        with mixed_precision("cpu", MODES[mode]):
            t0 = time.perf_counter()
            model, result = finetune(copy.deepcopy(loaded.model), loaded.tokenizer, records, params.finetune, seed,
                                     progress=False)
            train_s = time.perf_counter() - t0
            if hasattr(model, "merge_and_unload"):  # LoRA: merged, as the evaluate stage loads it
                model = model.merge_and_unload()
            model.eval()
            with tempfile.TemporaryDirectory() as tmp:
                tasks = write_tasks(Path(tmp), eval_records, [], loaded.tokenizer, cfg.max_gen_toks, cfg.n_generate)
                t0 = time.perf_counter()
                aggregate, per_example, _ = run_lm_eval(model, loaded.tokenizer, Path(tmp), tasks, cfg.batch_size,
                                                        cfg.max_len, params.seed)
                eval_s = time.perf_counter() - t0
        metric = params.report.task_metric
        out[mode] = {"aggregate": aggregate, "per_example": per_example[metric], "loss_last": result.loss[-1],
                     "train_s": train_s, "eval_s": eval_s, "tokens_per_s": result.summary()["tokens_per_s"]}
    ids = sorted(out["fp32"]["per_example"])
    a = np.array([out["fp32"]["per_example"][i] for i in ids], float)
    b = np.array([out["bf16"]["per_example"][i] for i in ids], float)
    ci = bootstrap_ci(b - a, np.random.default_rng(0), n_boot, 0.95)
    return {"n_train": len(records), "seed": seed, "metric": params.report.task_metric, "n_eval": len(ids),
            "fp32": float(a.mean()), "bf16": float(b.mean()), "diff": ci.mean, "diff_lo": ci.lo, "diff_hi": ci.hi,
            "agree_share": float(np.mean(a == b)),
            "loss_last": {m: out[m]["loss_last"] for m in MODES},
            "train_s": {m: out[m]["train_s"] for m in MODES}, "eval_s": {m: out[m]["eval_s"] for m in MODES}}


def markdown(result: dict) -> str:
    t, f, s = result["train"], result["loglik"], result["loss_scores"]
    lines = [f"### bf16 autocast vs fp32 (`python -m bench.precision`, {result['date']}, {result['machine']}, "
             f"commit {result['commit']})", "",
             "| what | fp32 | bf16 | bf16 / fp32 |", "|---|---|---|---|",
             f"| fine-tuning steps, tokens/s ({t['n_steps']} steps, {t['n_tokens']} tokens) | "
             f"{t['tokens_per_s']['fp32']:.0f} | {t['tokens_per_s']['bf16']:.0f} | {t['speedup']:.2f}x |",
             f"| log-likelihood requests/s ({f['n_requests']} eval requests) | {f['requests_per_s']['fp32']:.2f} | "
             f"{f['requests_per_s']['bf16']:.2f} | {f['speedup']:.2f}x |", "",
             f"Log-likelihoods differ by at most {f['max_abs_diff']:.4f} nats (mean {f['mean_abs_diff']:.4f}). The loss "
             f"selector's scores of the within pool (n {s['n']}): Spearman {s['spearman']:.4f}, top halves overlap "
             f"{s['top_half_overlap']:.2f}.", "",
             "| arm | n train | exact match fp32 | bf16 | bf16 - fp32 [95% CI] | problems agreeing | final loss fp32 / bf16 |",
             "|---|---|---|---|---|---|---|"]
    for name, a in result["arms"].items():
        lines.append(f"| {name} | {a['n_train']} | {a['fp32']:.3f} | {a['bf16']:.3f} | {a['diff']:+.3f} "
                     f"[{a['diff_lo']:+.3f}, {a['diff_hi']:+.3f}] | {a['agree_share']:.2f} | "
                     f"{a['loss_last']['fp32']:.3f} / {a['loss_last']['bf16']:.3f} |")
    lines += ["", result["verdict"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-precision",
                        help="where the params' data is prepared (reused when there)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arms", type=int, default=3, help="the whole pool, then seeded random halves")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    params = load_params(args.params)
    data = args.work / "data"
    if not (data / "report.json").is_file():
        log.info("preparing %s's data in %s", args.params, data)
        subprocess.run([sys.executable, "-m", "pipelines.prepare", "--params", str(args.params), "--out", str(data)],
                       cwd=ROOT, check=True)
    torch.manual_seed(0)
    loaded = load_model(params.model.name, "cpu", params.model.dtype)
    pool_name = "within" if "within" in params.data.pools else params.data.pools[0]
    pool = read_pool(data, pool_name)
    eval_records = read_split(data / "eval.jsonl")
    result: dict = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                             text=True).stdout.strip(),
                    "params": str(args.params), "pool": pool_name,
                    "finetune": dataclasses.asdict(params.finetune)}
    log.info("fine-tuning steps, fp32 vs bf16")
    result["train"] = train_rates(loaded, params, pool, args.repeats)
    log.info("log-likelihood requests, fp32 vs bf16")
    result["loglik"] = loglik_rates(loaded, eval_records, params.evaluate.batch_size, params.evaluate.max_len,
                                    args.repeats)
    log.info("loss scores, fp32 vs bf16")
    result["loss_scores"] = loss_scores(loaded, params, pool)
    result["arms"] = {}
    for i in range(args.arms):
        if i == 0:
            name, records = "full", pool
        else:
            keep = sorted(np.random.default_rng([params.seed, i]).choice(len(pool), len(pool) // 2, replace=False))
            name, records = f"random half {i}", [pool[j] for j in keep]
        log.info("arm %s: fine-tune and evaluate, fp32 and bf16", name)
        result["arms"][name] = arm(loaded, params, records, eval_records, seed=i, n_boot=params.report.n_boot)
    holds_zero = all(a["diff_lo"] <= 0 <= a["diff_hi"] for a in result["arms"].values())
    result["agree"] = bool(holds_zero and result["loss_scores"]["top_half_overlap"] >= 0.9)
    result["verdict"] = (
        f"Every arm's paired bf16 - fp32 difference has a 95% CI that holds 0 and the loss selector keeps "
        f"{result['loss_scores']['top_half_overlap']:.0%} of the same top half: bf16 agrees within noise here."
        if result["agree"] else
        "bf16 does not agree with fp32 within noise here (an arm's paired CI excludes 0, or the loss selector's "
        "top halves overlap below 90%): the default stays fp32.")
    write_report(args.out / "bench-precision.json", result, markdown)


if __name__ == "__main__":
    main()
