"""proxy-check@<pool> stage: does the recipe search's proxy rank recipes as full fidelity does?

search.check.recipes recipes (igds.recipes.search.fixed_recipes: the warm-up's retention zones, then
random draws of the space, each a distinct subset of the pool at search.ratio) each get
- the proxy, exactly as a search scores a subset (pipelines.recipes.search.proxy_objective), and
- a full-fidelity fine-tune with finetune's settings for every seed of search.check.seeds, on
  the same subset, scored on data/val.jsonl as the evaluate stage scores eval (lm-eval: exact
  match by greedy generation, answer log-likelihood).
Eval is never read. The statistic (igds.core.stats.proxy_agreement): Spearman rho of the proxy
against the full-fidelity seed mean across recipes, a percentile bootstrap CI over recipes,
beside the noise ceiling (rho between the means of two halves of the seeds), for
report.task_metric and for the proxy's own metric.

Writes search/<pool>/check/ (persist: true): progress.jsonl, one line per finished unit (a
recipe's proxy, or one full-fidelity seed), appended and flushed as it finishes, so a killed
check resumes from the last finished unit; check.key, the settings the progress was made with
(other settings: the progress is set aside and the check starts afresh). And
results/metrics/<pool>/proxy-check.json: every recipe with its values and the statistic."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from igds.core.artifacts import atomic_file, write_json
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from pipelines.common import main
from pipelines.io import pool_arg, read_pool, read_split
from pipelines.recipes.recipe import read_signals
from pipelines.recipes.search import proxy_objective, search_space, set_aside_if_stale, training_settings

log = logging.getLogger("check")


def check_key(params: Params, recipes: list[tuple[dict, list[str]]]) -> str:
    """What a progress file must match to be resumed: the check, proxy, fine-tune, evaluation and
    model settings and the recipes' subsets."""
    trained = training_settings(params, epochs=True)  # full fidelity trains finetune.epochs
    blob = json.dumps([dataclasses.asdict(params.search.check), dataclasses.asdict(params.search.proxy), trained,
                       dataclasses.asdict(params.evaluate), dataclasses.asdict(params.model), params.seed,
                       params.scoring.max_len, params.scoring.batch_size, [ids for _, ids in recipes]],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_progress(out: Path, key: str) -> dict[tuple, dict]:
    """(recipe, kind, seed) -> its finished line; a file of other settings is set aside, and a
    last line cut short by a kill is dropped."""
    progress = out / "progress.jsonl"
    set_aside_if_stale(progress, out / "check.key", key)
    done = {}
    if progress.exists():
        text = progress.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # cut short by a kill: drop the partial line before appending
            text = text[:text.rfind("\n") + 1]
            with atomic_file(progress) as f:
                f.write(text)
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: dropped a line cut short (a killed run): %.60s", progress, line)
                continue
            done[row["recipe"], row["kind"], row["seed"]] = row
    return done


def append(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def full_fidelity(params: Params, val: list):
    """(ids, seed) -> {metric: mean on val} of a fine-tune with finetune's settings, the model loaded once."""
    import torch  # noqa: PLC0415

    from igds.core.evaluate import run_lm_eval, write_tasks  # noqa: PLC0415
    from igds.core.finetune import finetune  # noqa: PLC0415
    from igds.core.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(params.finetune.model or params.model.name, params.model.device, params.model.dtype)
    cfg = params.evaluate

    def score(records: list, seed: int) -> dict[str, float]:
        trained, _ = finetune(copy.deepcopy(loaded.model), loaded.tokenizer, records, params.finetune, seed,
                              progress=False)
        merged = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            import datasets  # noqa: PLC0415

            datasets.config.HF_DATASETS_CACHE = Path(tmp) / "cache"
            tasks = write_tasks(Path(tmp) / "tasks", val, [], loaded.tokenizer, cfg.max_gen_toks, cfg.n_generate)
            aggregate, _, _ = run_lm_eval(merged, loaded.tokenizer, Path(tmp) / "tasks", tasks, cfg.batch_size,
                                          cfg.max_len, params.seed)
        return aggregate

    return score


def run(params: Params, args: argparse.Namespace) -> None:
    from igds.recipes.search import fixed_recipes  # noqa: PLC0415
    from igds.core.stats import proxy_agreement  # noqa: PLC0415

    cfg = params.search.check
    if args.pool not in params.search.pools:
        raise ConfigError(f"--pool {args.pool} is not one of search.pools {list(params.search.pools)}")
    pool = read_pool(args.data, pool_arg(params, args.pool))
    val = read_split(args.data / "val.jsonl")
    final_n = math.ceil(params.search.ratio * len(pool))
    metrics_path = args.metrics / "proxy-check.json"
    if cfg.recipes == 0:  # both outputs exist either way (DVC requires them)
        note = {"pool": args.pool, "recipes": 0, "note": "search.check.recipes is 0: no check"}
        write_json(args.out / "summary.json", note)
        write_json(metrics_path, note)
        log.info("%s: search.check.recipes is 0: no proxy check", args.pool)
        return
    if not val:
        raise DataError(f"{args.data / 'val.jsonl'} is empty: the proxy check scores on data.splits.val")
    space = search_space(params)
    signals = read_signals(params, args.scores, pool, set(space.signals) | {f"space:{s}" for s in space.spaces})
    recipes = fixed_recipes(space, signals, final_n, cfg.recipes, cfg.seed, params.seed)
    done = read_progress(args.out, check_key(params, recipes))
    units = [(i, "proxy", None) for i in range(len(recipes))] + \
        [(i, "full", s) for i in range(len(recipes)) for s in cfg.seeds]
    todo = [u for u in units if u not in done]
    log.info("%s: %d recipes, %d units (%d done); proxy %d epoch(s), full fidelity %d epoch(s) x seeds %s",
             args.pool, len(recipes), len(units), len(units) - len(todo), params.search.proxy.epochs,
             params.finetune.epochs, list(cfg.seeds))
    t0 = time.perf_counter()
    if todo:
        from tqdm.auto import tqdm  # noqa: PLC0415

        by_id = {r.id: r for r in pool}
        proxy = proxy_objective(params, pool, val) if any(k == "proxy" for _, k, _ in todo) else None
        full = full_fidelity(params, val) if any(k == "full" for _, k, _ in todo) else None
        for i, kind, seed in tqdm(todo, desc=f"proxy check {args.pool}"):
            ids = recipes[i][1]
            start = time.perf_counter()
            values = ({params.search.proxy.metric: proxy(ids)} if kind == "proxy"
                      else full([by_id[x] for x in ids], seed))
            row = {"recipe": i, "kind": kind, "seed": seed, "values": values,
                   "wall_s": round(time.perf_counter() - start, 3)}
            append(args.out / "progress.jsonl", row)
            done[i, kind, seed] = row
    metric, proxy_metric = params.report.task_metric, params.search.proxy.metric
    proxy_values = np.array([done[i, "proxy", None]["values"][proxy_metric] for i in range(len(recipes))])
    rng = np.random.default_rng(params.seed)
    agreement = {}
    for m in dict.fromkeys([metric, proxy_metric]):
        table = np.array([[done[i, "full", s]["values"][m] for s in cfg.seeds] for i in range(len(recipes))])
        a = proxy_agreement(proxy_values, table, rng, params.report.n_boot, params.report.level)
        agreement[m] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in dataclasses.asdict(a).items()}
    write_json(metrics_path, {
        "pool": args.pool, "recipes": len(recipes), "seeds": list(cfg.seeds), "proxy_metric": proxy_metric,
        "task_metric": metric, "level": params.report.level, "agreement": agreement,
        "per_recipe": [{"recipe": r, "proxy": float(proxy_values[i]),
                        "full": {m: [done[i, "full", s]["values"][m] for s in cfg.seeds] for m in agreement}}
                       for i, (r, _) in enumerate(recipes)],
        "wall_s": round(sum(row["wall_s"] for row in done.values()), 1),
        "wall_s_this_process": round(time.perf_counter() - t0, 1)})
    a = agreement[metric]
    log.info("%s: proxy vs full-fidelity %s over %d recipes: Spearman rho %.2f [%.2f, %.2f]; noise ceiling %.2f",
             args.pool, metric, len(recipes), a["rho"], a["lo"], a["hi"], a["ceiling"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--scores", type=Path, default=Path("scores"))
    parser.add_argument("--out", type=Path, required=True, help="search/<pool>/check")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"), help="results/metrics/<pool>")


if __name__ == "__main__":
    main("check", run, _args, autocast=True)
