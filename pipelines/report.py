"""report stage: every results/eval/<run>/metrics.json -> results/table.{md,csv}, the
headline results/metrics.json (DVC metrics), the whole report as data in results/report.json,
and results/plots/: the data of the DVC plots (forest.csv, ratio_sweep.csv, train_loss.csv)
and the PNGs the README shows (forest, ratio sweep, amplification)."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from igds.artifacts import atomic_file, read_json, write_json
from igds.config import ConfigError, Params
from igds.data import DataError
from igds.plots import plot_amplification, plot_forest, plot_ratio_sweep
from igds.report import (EvalRun, SelectionInfo, amplification_points, build_table, differences_long,
                         headline_metrics, parse_eval_run, ratio_sweep_long, render_markdown, report_document,
                         train_loss_long)
from igds.stats import correlation
from pipelines.common import main

log = logging.getLogger("report")


def _read(path: Path, fix: str):
    try:
        return read_json(path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); {fix}") from None


def expected_runs(params: Params) -> list[str]:
    """The runs params.yaml asks for, named as dvc.yaml's stages write them: base, full-s<seed>,
    <method>-<ratio>-s<seed>. Evaluations left on disk by other params are not reported."""
    seeds = params.finetune.seeds
    return (["base"] + [f"full-s{s}" for s in seeds]
            + [f"{m}-{r}-s{s}" for m in params.select.methods for r in params.select.ratios for s in seeds])


def read_eval_runs(eval_dir: Path, names: list[str] | None = None) -> list[EvalRun]:
    """Every results/eval/<run>/metrics.json, or exactly the runs `names` (each must exist)."""
    if names is None:
        paths = sorted(eval_dir.glob("*/metrics.json"))
    else:
        paths = [eval_dir / name / "metrics.json" for name in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]} not found ({len(missing)} of {len(paths)} runs missing); "
                            f"run `dvc repro` so that every evaluate stage has run")
        extra = sorted(set(p.parent.name for p in eval_dir.glob("*/metrics.json")) - set(names))
        if extra:
            log.info("not reported (not asked for by params.yaml): %s", ", ".join(extra))
    if not paths:
        raise DataError(f"no {eval_dir}/<run>/metrics.json found; run the eval stages first (`dvc repro`)")
    runs = []
    for path in paths:
        run = parse_eval_run(_read(path, "rerun the eval stage that writes it"), str(path))
        if run.run != path.parent.name:
            log.warning("%s: run '%s' does not match its folder name '%s'", path, run.run, path.parent.name)
        runs.append(run)
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


def read_selection(metrics_dir: Path, method: str, ratio: float, seeds=None) -> SelectionInfo:
    """On-task recall (mean over training seeds) and the selection seeds from
    select-<method>-<ratio>-s<seed>.json, one per training seed (only `seeds` if given), and
    the scoring wall time from score-<method>.json; NaN / () where absent (full has no selection).

    Files are matched on their own method, ratio and seed keys, so the ratio's spelling in
    the file name (dvc.yaml's) does not matter."""
    recalls, selection_seeds, found = [], set(), set()
    for path in sorted(metrics_dir.glob(f"select-{method}-*-s*.json")):
        raw = _read(path, f"rerun `dvc repro select` for {method} at {ratio:g}")
        if not isinstance(raw, dict) or raw.get("method") != method or "seed" not in raw:
            continue
        file_ratio, seed = _field(raw, path, "ratio"), raw["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise DataError(f"{path}: seed = {seed!r} is not an integer; rerun the select stage")
        if not math.isclose(file_ratio, ratio, abs_tol=1e-6) or (seeds is not None and seed not in seeds):
            continue
        found.add(seed)
        recalls.append(_field(raw, path, "on_task_recall"))
        if (selection_seed := _selection_seed(raw, path)) is not None:
            selection_seeds.add(selection_seed)
    if seeds is not None and found and set(seeds) - found:
        log.warning("%s at %g: no select metrics for seed(s) %s; on-task recall averages seeds %s", method, ratio,
                    sorted(set(seeds) - found), sorted(found))
    finite = [r for r in recalls if math.isfinite(r)]
    score = metrics_dir / f"score-{method}.json"
    wall_s = _field(_read(score, f"rerun `dvc repro score@{method}`"), score, "wall_s") if score.is_file() \
        else float("nan")
    return SelectionInfo(on_task_recall=sum(finite) / len(finite) if finite else float("nan"), selection_s=wall_s,
                         selection_seeds=tuple(sorted(selection_seeds)))


def run(params: Params, args: argparse.Namespace) -> None:
    runs = read_eval_runs(args.eval, expected_runs(params) if args.only_params_runs else None)
    metric_names = sorted(runs[0].per_example)
    cfg = params.report
    if cfg.task_metric not in metric_names:
        raise ConfigError(f"params.yaml: report.task_metric = {cfg.task_metric!r} is not an eval metric; "
                          f"expected one of {metric_names}")
    seeds: dict[tuple, set] = {}
    for r in runs:
        if r.method != "base":
            seeds.setdefault((r.method, r.ratio), set()).add(r.seed)
    selection = {key: read_selection(args.metrics, *key, seeds=seeds[key]) for key in seeds}
    rng = np.random.default_rng(params.seed)
    table = build_table(runs, selection, rng, cfg.n_boot, n_perm=cfg.n_perm, level=cfg.level,
                        task_metric=cfg.task_metric, methods=list(params.methods))
    points = amplification_points(runs, cfg.task_metric)
    corr = correlation(points["feature_amplification"], points["task_gain"])

    out, plots = args.out, args.out / "plots"
    with atomic_file(out / "table.md") as f:
        f.write(render_markdown(table, n_boot=cfg.n_boot, level=cfg.level))
    with atomic_file(out / "table.csv") as f:
        table.to_csv(f, index=False)
    write_json(out / "metrics.json", headline_metrics(table, corr, cfg.task_metric))
    write_json(out / "report.json", report_document(table, corr))
    for name, frame in (("ratio_sweep", ratio_sweep_long(table)), ("train_loss", train_loss_long(runs)),
                        ("forest", differences_long(table, [cfg.task_metric]))):
        with atomic_file(plots / f"{name}.csv") as f:
            frame.to_csv(f, index=False)
    plot_forest(table, plots / "forest.png")
    plot_ratio_sweep(table, plots / "ratio_sweep.png")
    plot_amplification(points, corr, plots / "amplification.png", task_metric=cfg.task_metric)
    log.info("%d eval runs -> %d rows; wrote %s, %s, %s, %s and %s/{forest,ratio_sweep,amplification}.png "
             "and {forest,ratio_sweep,train_loss}.csv", len(runs), len(table), out / "table.md", out / "table.csv",
             out / "metrics.json", out / "report.json", plots)
    log.info("amplification vs task gain (%s): Pearson r = %.3f, Spearman rho = %.3f, n = %d",
             cfg.task_metric, corr.pearson_r, corr.spearman_rho, corr.n)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval", type=Path, default=Path("results/eval"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--all-runs", dest="only_params_runs", action="store_false",
                        help="report every results/eval/<run>, not only the runs params.yaml asks for")


if __name__ == "__main__":
    main("report", run, _args, uses_model=False)
