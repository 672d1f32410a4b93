"""recipe-search@<pool>-<solver>-<seed> stage: a budgeted search for the best recipe
(igds.search) over the pool's cached signals, its objective a proxy fine-tune of each subset
scored on data/val.jsonl (never eval). Writes search/<pool>/<solver>-s<seed>/:
- study.journal: the Optuna study (journal storage; the stage's output persists, so a killed
  search resumes where it stopped: run the stage again);
- evaluated.jsonl: every evaluated subset in order (step, proxy value, subset key, recipe, the
  best value so far: the best-so-far curve);
- best.yaml: the best recipe in params.yaml's form (paste it under `recipes:` to retrain it
  at full fidelity through finetune/evaluate/report);
- summary.json: budget spent, proposals made, reused subsets, best value, wall time.

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

from igds.artifacts import write_json, write_jsonl
from igds.config import ConfigError, Params
from igds.data import DataError
from igds.recipes import signal_sources
from pipelines.common import main
from pipelines.io import pool_arg, read_pool, read_split
from pipelines.recipe import read_signals

log = logging.getLogger("search")


def search_space(params: Params):
    """The space the solvers search: every selective method's score and `length` as signals,
    and the vector spaces the methods provide."""
    from igds.search import Space  # noqa: PLC0415

    available, spaces = signal_sources(params)
    signals = tuple(s for s in sorted(available) if s not in params.methods or
                    not params.methods.selector_class(s).keeps_all)
    return Space(signals, tuple(sorted(spaces)))


def proxy_objective(params: Params, pool: list, val: list):
    """ids -> the proxy value of that subset (see the module docstring), with the model loaded once."""
    import torch  # noqa: PLC0415

    from igds.finetune import finetune  # noqa: PLC0415
    from igds.loglik import answer_loglik  # noqa: PLC0415
    from igds.models.loading import load_model  # noqa: PLC0415
    from igds.tokens import tokenize_records  # noqa: PLC0415

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


def fingerprint(params: Params, solver: str, seed: int, space, signals, final_n: int) -> str:
    """What a journal must match to be resumed: the search settings, model, fine-tune, space and signals."""
    trained = {k: v for k, v in dataclasses.asdict(params.finetune).items()
               if k not in ("seeds", "methods", "epochs", "checkpoint_every")}  # the proxy's settings
    blob = json.dumps([solver, seed, dataclasses.asdict(params.search), trained,
                       dataclasses.asdict(params.model), params.seed, dataclasses.asdict(space), final_n,
                       signals.ids], sort_keys=True, default=str)
    h = hashlib.sha256(blob.encode())
    for name in sorted(signals.values):
        h.update(name.encode() + np.ascontiguousarray(signals.values[name]).tobytes())
    for name in sorted(signals.spaces):
        h.update(name.encode() + np.ascontiguousarray(signals.spaces[name]).tobytes())
    return h.hexdigest()[:16]


def open_study(out: Path, key: str):
    """The study in out/study.journal; a journal of other settings is moved aside first."""
    import optuna  # noqa: PLC0415
    from optuna.storages import JournalStorage  # noqa: PLC0415
    from optuna.storages.journal import JournalFileBackend  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    journal, stamp = out / "study.journal", out / "study.key"
    if journal.exists() and (not stamp.exists() or stamp.read_text().strip() != key):
        aside = journal.with_name(f"study.{int(time.time())}.stale.journal")
        journal.rename(aside)
        log.warning("%s was made with other settings; moved to %s, starting afresh", journal, aside.name)
    stamp.write_text(key + "\n")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(study_name="search", storage=storage, direction="maximize", load_if_exists=True)


def run(params: Params, args: argparse.Namespace) -> None:
    from igds.search import SearchSettings, run_search  # noqa: PLC0415

    cfg = params.search
    if args.solver not in cfg.solvers or args.seed not in cfg.seeds or args.pool not in cfg.pools:
        raise ConfigError(f"--pool {args.pool} --solver {args.solver} --seed {args.seed} is not a search of params.yaml "
                          f"(search.pools {list(cfg.pools)}, solvers {list(cfg.solvers)}, seeds {list(cfg.seeds)})")
    pool = read_pool(args.data, pool_arg(params, args.pool))
    val = read_split(args.data / "val.jsonl")
    if not val:
        raise DataError(f"{args.data / 'val.jsonl'} is empty: recipe search needs data.splits.val (the target "
                        "task, disjoint from eval) for its objective")
    space = search_space(params)
    signals = read_signals(params, args.scores, pool, set(space.signals) | {f"space:{s}" for s in space.spaces})
    final_n = math.ceil(cfg.ratio * len(pool))
    settings = SearchSettings(args.solver, args.seed, cfg.budget, cfg.warmup, cfg.patience, cfg.candidates, cfg.beta)
    study = open_study(args.out, fingerprint(params, args.solver, args.seed, space, signals, final_n))
    t0 = time.perf_counter()
    evaluated = run_search(study, settings, space, signals, final_n, proxy_objective(params, pool, val),
                           data_seed=params.seed)
    best_so_far = np.maximum.accumulate([e.value for e in evaluated]).tolist() if evaluated else []
    write_jsonl(args.out / "evaluated.jsonl", (
        {"evaluation": i, "value": e.value, "best_so_far": b, "key": e.key, "pre_fill": e.pre_fill,
         "recipe": e.recipe} for i, (e, b) in enumerate(zip(evaluated, best_so_far))))
    best = max(evaluated, key=lambda e: e.value)
    text = yaml.safe_dump({"process": best.recipe["process"]}, sort_keys=False)
    (args.out / "best.yaml.tmp").write_text(text)
    (args.out / "best.yaml.tmp").replace(args.out / "best.yaml")
    trials = study.trials
    write_json(args.out / "summary.json", {
        "pool": args.pool, "solver": args.solver, "seed": args.seed, "budget": cfg.budget,
        "evaluated": len(evaluated), "proposals": len(trials),
        "reused": sum(bool(t.user_attrs.get("reused")) for t in trials),
        "best_value": best.value, "best_key": best.key, "metric": cfg.proxy.metric, "final_n": final_n,
        "wall_s_this_process": round(time.perf_counter() - t0, 3)})
    log.info("%s-%s seed %d: best %s %.4f after %d fine-tunes (%d proposals)", args.pool, args.solver, args.seed,
             cfg.proxy.metric, best.value, len(evaluated), len(trials))


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True)
    parser.add_argument("--solver", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the search seed")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--scores", type=Path, default=Path("scores"))
    parser.add_argument("--out", type=Path, required=True, help="search/<pool>/<solver>-s<seed>")


if __name__ == "__main__":
    main("search", run, _args)
