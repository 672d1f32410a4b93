"""report stage, per candidate pool (params data.pools): results/eval/base and every
results/eval/<pool>/<run>/metrics.json -> results/table.{md,csv} (a section / a `pool` column
per pool), the headline results/metrics.json (DVC metrics) and the whole report as data in
results/report.json (both {pool: ...}), and results/plots/: the data of the DVC plots
(forest.csv, ratio_sweep.csv, train_loss.csv, with a `pool` column) and the PNGs the README
shows (forest, ratio sweep, amplification), every pool in each. With a recipe search
(search.solvers, search.pools): results/recipes.{md,csv}, the recipe table on eval with the
proxy's validation first (igds.recipes.table), and results/plots/best_so_far.{csv,png}."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from igds.core.artifacts import atomic_file, read_json, write_json
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import DataError
from igds.core.plots import plot_amplification, plot_best_so_far, plot_forest, plot_ratio_sweep
from igds.core.runs import FULL, RunId, ratio_text
from igds.recipes.table import best_so_far_long, build_recipe_table, render_recipe_markdown, search_rows
from igds.core.report import (EvalRun, SelectionInfo, amplification_points, build_table, by_pool, differences_long,
                         finite_mean, headline_metrics, parse_eval_run, ratio_sweep_long, render_pools_markdown,
                         report_document, train_loss_long)
from igds.core.stats import correlation
from pipelines.common import main
from pipelines.graph import trained_runs
from pipelines.io import pools

log = logging.getLogger("report")


def _read(path: Path, fix: str):
    try:
        return read_json(path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); {fix}") from None


def expected_runs(params: Params) -> list[str]:
    """The runs params.yaml asks for in each pool, named as dvc.yaml's stages write them
    (results/eval/<pool>/<run>): full-s<seed>, <method>-<ratio>-s<seed> for the fine-tuned
    methods. Evaluations left on disk by other params are not reported. The untouched model
    (read_base) is every pool's."""
    return [run.stem for run in trained_runs("-", params.finetuned_methods, params.select.ratios, params.finetune.seeds)]


def _parse(path: Path) -> EvalRun:
    run = parse_eval_run(_read(path, "rerun the eval stage that writes it"), str(path))
    if run.run != path.parent.name:
        log.warning("%s: run '%s' does not match its folder name '%s'", path, run.run, path.parent.name)
    return run


def read_base(eval_dir: Path) -> EvalRun:
    """results/eval/base/metrics.json: the untouched model, the reference of every pool's table."""
    path = eval_dir / "base" / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} not found; run `dvc repro evaluate@base` (the untouched model's evaluation)")
    return _parse(path)


def read_eval_runs(pool_dir: Path, names: list[str] | None = None) -> list[EvalRun]:
    """Every results/eval/<pool>/<run>/metrics.json, or exactly the runs `names` (each must
    exist). A run that names its pool must sit in that pool's folder."""
    found = sorted(pool_dir.glob("*/metrics.json"))
    if not found:
        raise DataError(f"no {pool_dir}/<run>/metrics.json found; run the evaluate stages of pool "
                        f"'{pool_dir.name}' first (`dvc repro`)")
    paths = found
    if names is not None:
        paths = [pool_dir / name / "metrics.json" for name in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]} not found ({len(missing)} of {len(paths)} runs missing); "
                            f"run `dvc repro` so that every evaluate stage has run")
        extra = sorted({p.parent.name for p in found} - set(names))
        if extra:
            log.info("%s: not reported (not asked for by params.yaml): %s", pool_dir, ", ".join(extra))
    runs = [_parse(path) for path in paths]
    for run in runs:
        if run.pool is not None and run.pool != pool_dir.name:
            raise DataError(f"{run.source}: pool '{run.pool}' but it is in {pool_dir}; rerun the evaluate stage "
                            "that writes it")
    return runs


def _field(raw, path: Path, key: str) -> float:
    value = raw.get(key) if isinstance(raw, dict) else None
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: {key} = {value!r} is not a number; rerun the stage that writes it")
    return float(value)


def _selection_seed(raw, path: Path):
    value = raw.get("selection_seed") if isinstance(raw, dict) else None
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise DataError(f"{path}: selection_seed = {value!r} is not an integer or null; rerun the select stage")
    return value


def read_selection(metrics_dir: Path, method: str, ratio: float, seeds) -> SelectionInfo:
    """On-task recall and degraded share selected (means over training seeds) and the
    selection seeds from the runs' own select-<stem>.json (igds.core.runs.RunId names them: one
    per training seed in `seeds`, each must exist), and the scoring wall time from
    score-<method>.json; NaN / () where absent (a pool without degraded examples has no
    degraded share). No other file is read: a folder other profiles and older runs also write
    to is never globbed."""
    recalls, shares, selection_seeds = [], [], set()
    for seed in sorted(seeds):
        run = RunId(metrics_dir.name, method, None if method == FULL else ratio_text(ratio), seed)
        path = metrics_dir / run.selection_metrics(Path(".")).name
        if not path.is_file():
            raise DataError(f"{path} not found; run `dvc repro {run.stage('subset')}` (it writes the subset this "
                            "run trained on)")
        raw = _read(path, f"rerun `dvc repro {run.stage('subset')}`")
        if not isinstance(raw, dict) or raw.get("method") != method or raw.get("seed") != seed or \
                not math.isclose(_field(raw, path, "ratio"), ratio, abs_tol=1e-6):
            raise DataError(f"{path}: not {method} at {ratio:g}, seed {seed}; rerun `dvc repro {run.stage('subset')}`")
        recalls.append(_field(raw, path, "on_task_recall"))
        shares.append(_field(raw, path, "degraded_share_selected"))
        if (selection_seed := _selection_seed(raw, path)) is not None:
            selection_seeds.add(selection_seed)
    score = metrics_dir / f"score-{method}.json"
    fix = f"rerun `dvc repro score@{metrics_dir.name}-{method}`"
    wall_s = _field(_read(score, fix), score, "wall_s") if score.is_file() else float("nan")
    return SelectionInfo(on_task_recall=finite_mean(recalls), degraded_share=finite_mean(shares), selection_s=wall_s,
                         selection_seeds=tuple(sorted(selection_seeds)))


def read_selections(metrics_dir: Path, runs: list[EvalRun]) -> dict[tuple[str, float], SelectionInfo]:
    """(method, ratio) -> SelectionInfo of every fine-tuned group of a pool's runs, over its
    seeds, each from its own runs' select-<stem>.json (full's too: subset@<pool>-full-s<seed>
    writes the pool's on-task recall and damaged share, and no other run's file is read for it)."""
    seeds: dict[tuple, set] = {}
    for r in runs:
        if r.method != "base":
            seeds.setdefault((r.method, r.ratio), set()).add(r.seed)
    return {key: read_selection(metrics_dir, *key, seeds=seeds[key]) for key in seeds}


def read_search_metrics(params: Params, metrics_dir: Path) -> tuple[list[dict], dict, dict | None]:
    """A searched pool's search-<solver>-s<seed>.json (each must exist), search-single.json and
    proxy-check.json (None when absent)."""
    def need(name: str, stage: str) -> dict:
        path = metrics_dir / name
        if not path.is_file():
            raise DataError(f"{path} not found; run `dvc repro {stage}`")
        return _read(path, f"rerun `dvc repro {stage}`")

    pool = metrics_dir.name
    searches = [need(f"search-{s}-s{k}.json", f"recipe-search@{pool}-{s}-{k}")
                for s in params.search.solvers for k in params.search.seeds]
    check = metrics_dir / "proxy-check.json"
    return (searches, need("search-single.json", f"recipe-search-single@{pool}"),
            _read(check, f"rerun `dvc repro proxy-check@{pool}`") if check.is_file() else None)


def write_recipe_section(params: Params, args: argparse.Namespace, base: EvalRun) -> None:
    """results/recipes.{md,csv} (the recipe table of every pool of search.pools, the proxy's
    validation first) and results/plots/best_so_far.{csv,png}; a note when nothing was searched."""
    cfg, ratio = params.report, params.search.ratio
    tables, checks, curves = {}, {}, {}
    singles = [m for m in params.finetuned_methods if m in params.select.methods]
    if params.search.solvers or params.search.check.recipes:
        for pool in params.search.pools:
            names = [run.stem for run in trained_runs(pool, [*singles, *params.finalists], [ratio], params.finetune.seeds)]
            runs = [base, *read_eval_runs(args.eval / pool, names)]
            searches, single, checks[pool] = read_search_metrics(params, args.metrics / pool)
            rows = search_rows(runs, singles, ratio, params.finalists, searches, single)
            tables[pool] = build_recipe_table(rows, cfg.task_metric, np.random.default_rng(params.seed), cfg.n_boot,
                                              cfg.n_perm, cfg.level)
            curves[pool] = best_so_far_long(searches, single)
    with atomic_file(args.out / "recipes.md") as f:
        f.write(render_recipe_markdown(tables, checks, cfg.task_metric, cfg.level))
    with atomic_file(args.out / "recipes.csv") as f:
        by_pool(tables).to_csv(f, index=False) if tables else f.write("pool\n")
    with atomic_file(args.out / "plots" / "best_so_far.csv") as f:
        by_pool(curves).to_csv(f, index=False) if curves else f.write("pool,solver,seed,evaluation,best_so_far\n")
    plot_best_so_far(curves, args.out / "plots" / "best_so_far.png", params.search.proxy.metric)


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = params.report
    base = read_base(args.eval)
    if cfg.task_metric not in base.per_example:
        raise ConfigError(f"params.yaml: report.task_metric = {cfg.task_metric!r} is not an eval metric; "
                          f"expected one of {sorted(base.per_example)}")
    tables, points, corrs, losses = {}, {}, {}, {}
    for pool in pools(params):
        runs = [base, *read_eval_runs(args.eval / pool, expected_runs(params) if args.only_params_runs else None)]
        rng = np.random.default_rng(params.seed)  # per pool: a pool's table does not depend on the others
        tables[pool] = build_table(runs, read_selections(args.metrics / pool, runs), rng, cfg.n_boot,
                                   n_perm=cfg.n_perm, level=cfg.level, task_metric=cfg.task_metric,
                                   methods=[*params.methods, *params.recipes])
        points[pool] = amplification_points(runs, cfg.task_metric)
        corrs[pool] = correlation(points[pool]["feature_amplification"], points[pool]["task_gain"])
        losses[pool] = train_loss_long(runs)
        log.info("pool %s: %d eval runs -> %d rows; amplification vs task gain (%s): Pearson r = %.3f, "
                 "Spearman rho = %.3f, n = %d", pool, len(runs), len(tables[pool]), cfg.task_metric,
                 corrs[pool].pearson_r, corrs[pool].spearman_rho, corrs[pool].n)

    out, plots = args.out, args.out / "plots"
    with atomic_file(out / "table.md") as f:
        f.write(render_pools_markdown(tables, n_boot=cfg.n_boot, level=cfg.level))
    with atomic_file(out / "table.csv") as f:
        by_pool(tables).to_csv(f, index=False)
    write_json(out / "metrics.json", {p: headline_metrics(tables[p], corrs[p], cfg.task_metric) for p in tables})
    write_json(out / "report.json", {p: report_document(tables[p], corrs[p]) for p in tables})
    # the DVC templates draw a line (method, run) or a row (row) per label: prefixed with the pool
    for name, frame in (("ratio_sweep", by_pool({p: ratio_sweep_long(t) for p, t in tables.items()}, "method")),
                        ("train_loss", by_pool(losses, "run", sep="/")),
                        ("forest", by_pool({p: differences_long(t, [cfg.task_metric]) for p, t in tables.items()},
                                           "row"))):
        with atomic_file(plots / f"{name}.csv") as f:
            frame.to_csv(f, index=False)
    write_recipe_section(params, args, base)
    plot_forest(tables, plots / "forest.png")
    plot_ratio_sweep(tables, plots / "ratio_sweep.png")
    plot_amplification(points, corrs, plots / "amplification.png", task_metric=cfg.task_metric)
    log.info("pools %s: wrote %s, %s, %s, %s and %s/{forest,ratio_sweep,amplification}.png and "
             "{forest,ratio_sweep,train_loss}.csv", ", ".join(tables), out / "table.md", out / "table.csv",
             out / "metrics.json", out / "report.json", plots)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval", type=Path, default=Path("results/eval"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--all-runs", dest="only_params_runs", action="store_false",
                        help="report every results/eval/<pool>/<run>, not only the runs params.yaml asks for")


if __name__ == "__main__":
    main("report", run, _args, uses_model=False)
