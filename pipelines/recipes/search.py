"""recipe-search@<pool>-<solver>-<seed> stage: a budgeted search for the best recipe
(igds.recipes.search) over the pool's cached signals, its objective a proxy fine-tune of each subset
scored on data/val.jsonl (never eval). Writes search/<pool>/<solver>-s<seed>/:
- study.journal: the Optuna study (journal storage; the stage's output persists, so a killed
  search resumes where it stopped: run the stage again);
- evaluated.jsonl: every evaluated subset in order (step, proxy value, subset key, recipe, the
  best value so far: the best-so-far curve);
- best.yaml: the best recipe in params.yaml's form (subset@<pool>-search_<solver>_s<search seed>-<ratio>-s<seed>
  materialises it per training seed; finetune/evaluate then retrain it at full fidelity);
- summary.json: budget spent, proposals made, reused subsets, best value and subset, wall time;
and results/metrics/<pool>/search-<solver>-s<seed>.json, the summary with the best-so-far curve.

`--solver single` (stage recipe-search-single@<pool>, search/<pool>/single): the proxy of every
fine-tuned single selector's own subset at search.ratio; the best of them is the best single
selector chosen on val, and its proxy fine-tunes count against it in the recipe table.

The base model is loaded once; each proxy fine-tunes a copy with finetune's settings but
search.proxy.epochs and seed search.proxy.seed (the same for every subset, so subsets are
compared on one footing), merges the adapter and measures the mean log-likelihood per answer
token of the val examples. A journal whose settings differ from this run's (another budget,
other signals, ...) is set aside, never resumed."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import yaml

from igds.core.artifacts import atomic_file, write_json, write_jsonl
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from igds.recipes.recipe import signal_sources
from pipelines.common import main
from pipelines.io import pool_arg, read_pool, read_split
from pipelines.recipes.recipe import read_signals

log = logging.getLogger("search")


def search_space(params: Params):
    """The space the solvers search: every selective method's score and `length` as signals,
    and the vector spaces the methods provide."""
    from igds.recipes.search import Space  # noqa: PLC0415

    available, spaces = signal_sources(params)
    signals = tuple(s for s in sorted(available) if s not in params.methods or
                    not params.methods.selector_class(s).keeps_all)
    return Space(signals, tuple(sorted(spaces)))


def proxy_objective(params: Params, pool: list, val: list):
    """ids -> the proxy value of that subset (see the module docstring), with the model loaded once."""
    import torch  # noqa: PLC0415

    from igds.core.finetune import finetune  # noqa: PLC0415
    from igds.core.loglik import answer_loglik  # noqa: PLC0415
    from igds.core.models.loading import load_model  # noqa: PLC0415
    from igds.core.tokens import tokenize_records  # noqa: PLC0415

    cfg = dataclasses.replace(params.finetune, epochs=params.search.proxy.epochs)
    loaded = load_model(params.finetune.model or params.model.name, params.model.device, params.model.dtype)
    by_id = {r.id: r for r in pool}
    val_tok = tokenize_records(loaded.tokenizer, val, params.scoring.max_len)

    def objective(ids: list[str]) -> float:
        model = copy.deepcopy(loaded.model)
        trained, _ = finetune(model, loaded.tokenizer, [by_id[i] for i in ids], cfg, params.search.proxy.seed,
                              progress=False)
        merged = trained.merge_and_unload() if hasattr(trained, "merge_and_unload") else trained
        with torch.inference_mode():
            value = float(np.mean(answer_loglik(merged, val_tok, params.scoring.batch_size,
                                                loaded.tokenizer.pad_token_id)))
        del model, trained, merged
        return value

    return objective


def training_settings(params: Params, epochs: bool = False) -> dict:
    """finetune's settings that change what a fine-tune learns (not its seeds, methods or resume
    cadence), with finetune.epochs only if `epochs` (the proxy trains search.proxy.epochs)."""
    drop = {"seeds", "methods", "checkpoint_every"} | (set() if epochs else {"epochs"})
    return {k: v for k, v in dataclasses.asdict(params.finetune).items() if k not in drop}


def fingerprint(params: Params, solver: str, seed: int, space, signals, final_n: int) -> str:
    """What a journal must match to be resumed: the search settings, model, fine-tune, space (with
    every param's distribution: a journal of another parametrisation is never resumed) and signals."""
    from igds.recipes.search import distributions  # noqa: PLC0415

    trained = training_settings(params)  # the proxy's settings
    blob = json.dumps([solver, seed, dataclasses.asdict(params.search), trained,
                       dataclasses.asdict(params.model), params.seed, dataclasses.asdict(space), final_n,
                       signals.ids, [f"{k}: {d!r}" for k, d in distributions(space, {}).items()]],
                      sort_keys=True, default=str)
    h = hashlib.sha256(blob.encode())
    for name in sorted(signals.values):
        h.update(name.encode() + np.ascontiguousarray(signals.values[name]).tobytes())
    for name in sorted(signals.spaces):
        h.update(name.encode() + np.ascontiguousarray(signals.spaces[name]).tobytes())
    return h.hexdigest()[:16]


def set_aside_if_stale(path: Path, stamp: Path, key: str) -> None:
    """Progress kept across runs (`path`) is resumed only if `stamp` holds `key`, the settings
    it was made with; otherwise it is renamed <stem>.<time>.stale<suffix> (kept, never deleted)
    and the run starts afresh. Then `stamp` holds `key`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (not stamp.exists() or stamp.read_text().strip() != key):
        aside = path.with_name(f"{path.stem}.{int(time.time())}.stale{path.suffix}")
        path.rename(aside)
        log.warning("%s was made with other settings; moved to %s, starting afresh", path, aside.name)
    stamp.write_text(key + "\n")


def open_study(out: Path, key: str):
    """The study in out/study.journal; a journal of other settings is moved aside first."""
    import optuna  # noqa: PLC0415
    from optuna.storages import JournalStorage  # noqa: PLC0415
    from optuna.storages.journal import JournalFileBackend  # noqa: PLC0415

    journal = out / "study.journal"
    set_aside_if_stale(journal, out / "study.key", key)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(study_name="search", storage=storage, direction="maximize", load_if_exists=True)


def _write_results(args: argparse.Namespace, evaluated: list[dict], best: dict, summary: dict) -> None:
    """evaluated.jsonl (with the best-so-far curve), best.yaml and summary.json in the search's
    folder, and summary.json's fields plus the curve as results/metrics/<pool>/search-<name>.json
    (git-tracked: the report's recipe table and best-so-far plot read it)."""
    best_so_far = np.maximum.accumulate([e["value"] for e in evaluated]).tolist()
    rows = [{"evaluation": i, **e, "best_so_far": b} for i, (e, b) in enumerate(zip(evaluated, best_so_far))]
    write_jsonl(args.out / "evaluated.jsonl", ({k: v for k, v in r.items() if k != "ids"} for r in rows))
    header = (f"# {summary['pool']} {summary['solver']} seed {summary['seed']}: best {summary['metric']} "
              f"{best['value']:.6g} of {len(evaluated)} proxy fine-tunes\n# subset {best['key']}\n")
    with atomic_file(args.out / "best.yaml") as f:
        f.write(header + yaml.safe_dump(best["recipe"], sort_keys=False))
    summary = {**summary, "fine_tunes": len(evaluated), "best_value": best["value"], "best_key": best["key"],
               "best_recipe": best["recipe"], "best_ids": best["ids"]}
    write_json(args.out / "summary.json", summary)
    name = "single" if summary["solver"] == "single" else f"{summary['solver']}-s{summary['seed']}"
    write_json(args.metrics / f"search-{name}.json", {**{k: v for k, v in summary.items() if k != "best_ids"},
                                                       "best_so_far": best_so_far,
                                                       "values": [e["value"] for e in evaluated]})


def run_single(params: Params, args: argparse.Namespace, pool: list, val: list) -> None:
    """recipe-search-single@<pool>: the proxy of each fine-tuned single selector's own subset at
    search.ratio (its select stage's selection, drawn for training seed search.proxy.seed); the
    best is the best single selector chosen on val, and these are the fine-tunes it cost."""
    import optuna  # noqa: PLC0415

    from igds.recipes.recipe import subset_key  # noqa: PLC0415
    from pipelines.select import selection  # noqa: PLC0415

    cfg = params.search
    methods = [m for m in params.finetuned_methods if m in params.select.methods]
    subsets = {m: selection(params, m, args.scores, args.pool, pool, cfg.ratio, cfg.proxy.seed)[0] for m in methods}
    study = open_study(args.out, single_fingerprint(params, subsets))
    done = {t.params["method"]: t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    t0 = time.perf_counter()
    todo = [m for m in methods if m not in done]
    if todo:
        objective = proxy_objective(params, pool, val)
        for m in todo:
            value = objective(subsets[m])
            done[m] = optuna.trial.create_trial(
                params={"method": m}, distributions={"method": optuna.distributions.CategoricalDistribution(methods)},
                value=value, user_attrs={"key": subset_key(subsets[m])})
            study.add_trial(done[m])
            log.info("%s: single selector %s: %s %.4f", args.pool, m, cfg.proxy.metric, value)
    evaluated = [{"value": done[m].value, "key": subset_key(subsets[m]), "method": m,
                  "recipe": {"method": m}, "ids": subsets[m]} for m in methods]
    best = max(evaluated, key=lambda e: e["value"])
    _write_results(args, evaluated, best, {
        "pool": args.pool, "solver": "single", "seed": None, "budget": len(methods), "proposals": len(methods),
        "reused": 0, "best_method": best["method"], "methods": methods, "metric": cfg.proxy.metric,
        "final_n": math.ceil(cfg.ratio * len(pool)), "wall_s_this_process": round(time.perf_counter() - t0, 3)})
    log.info("%s: best single selector on val: %s (%s %.4f, %d fine-tunes)", args.pool, best["method"],
             cfg.proxy.metric, best["value"], len(methods))


def single_fingerprint(params: Params, subsets: dict) -> str:
    from igds.recipes.recipe import subset_key  # noqa: PLC0415

    trained = training_settings(params)
    blob = json.dumps(["single", dataclasses.asdict(params.search.proxy), trained, dataclasses.asdict(params.model),
                       {m: subset_key(ids) for m, ids in subsets.items()}], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(params: Params, args: argparse.Namespace) -> None:
    from igds.recipes.search import SearchSettings, run_search  # noqa: PLC0415

    cfg = params.search
    if args.pool not in cfg.pools or (args.solver != "single" and (args.solver not in cfg.solvers
                                                                   or args.seed not in cfg.seeds)):
        raise ConfigError(f"--pool {args.pool} --solver {args.solver} --seed {args.seed} is not a search of params.yaml "
                          f"(search.pools {list(cfg.pools)}, solvers {list(cfg.solvers)} or single, "
                          f"seeds {list(cfg.seeds)})")
    pool = read_pool(args.data, pool_arg(params, args.pool))
    val = read_split(args.data / "val.jsonl")
    if not val:
        raise DataError(f"{args.data / 'val.jsonl'} is empty: recipe search needs data.splits.val (the target "
                        "task, disjoint from eval) for its objective")
    if args.solver == "single":
        return run_single(params, args, pool, val)
    space = search_space(params)
    signals = read_signals(params, args.scores, pool, set(space.signals) | {f"space:{s}" for s in space.spaces})
    final_n = math.ceil(cfg.ratio * len(pool))
    settings = SearchSettings(args.solver, args.seed, cfg.budget, cfg.warmup, cfg.patience, cfg.candidates, cfg.beta)
    study = open_study(args.out, fingerprint(params, args.solver, args.seed, space, signals, final_n))
    t0 = time.perf_counter()
    evaluated = run_search(study, settings, space, signals, final_n, proxy_objective(params, pool, val),
                           data_seed=params.seed)
    rows = [{"value": e.value, "key": e.key, "pre_fill": e.pre_fill, "recipe": e.recipe, "ids": e.ids}
            for e in evaluated]
    best = max(rows, key=lambda e: e["value"])
    trials = study.trials
    _write_results(args, rows, best, {
        "pool": args.pool, "solver": args.solver, "seed": args.seed, "budget": cfg.budget, "proposals": len(trials),
        "reused": sum(bool(t.user_attrs.get("reused")) for t in trials), "metric": cfg.proxy.metric,
        "final_n": final_n, "wall_s_this_process": round(time.perf_counter() - t0, 3)})
    log.info("%s-%s seed %d: best %s %.4f after %d fine-tunes (%d proposals)", args.pool, args.solver, args.seed,
             cfg.proxy.metric, best["value"], len(evaluated), len(trials))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True)
    parser.add_argument("--solver", required=True, help="one of search.solvers, or single (the single selectors)")
    parser.add_argument("--seed", type=int, default=0, help="the search seed (single: ignored)")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--scores", type=Path, default=Path("scores"))
    parser.add_argument("--out", type=Path, required=True, help="search/<pool>/<solver>-s<seed> (single: search/<pool>/single)")
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"),
                        help="results/metrics/<pool>: search-<solver>-s<seed>.json (single: search-single.json)")


if __name__ == "__main__":
    main("search", run, _args, autocast=True)
