"""The benchmark report: eval runs -> one table of means with bootstrap CIs and paired
differences vs random and vs full, and its markdown/summary renderings (plots: igds.core.plots).
Each candidate pool is its own table; by_pool stacks them with a `pool` column.

In-memory in, in-memory out: runs arrive as parsed metrics.json dicts (parse_eval_run). The statistics
are igds.core.stats: percentile bootstrap over eval examples (and training seeds when a
method has several), paired on the examples when two methods are compared, with p-values
from a paired sign-flip permutation test. Each row names the sources of variance its
intervals carry (`variance`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from igds.core.data import DataError
from igds.core.stats import (Correlation, bootstrap_ci, holm, minimal_detectable_difference, paired_bootstrap,
                              paired_permutation_test)

log = logging.getLogger(__name__)

REFERENCES = ("random", "full")  # every method is compared with these (DESIGN: the table)
POWER = 0.8  # the power at which each difference's minimal detectable difference is stated
NAN = math.nan


@dataclass(frozen=True)
class EvalRun:
    """One evaluated model (results/eval/base or results/eval/<pool>/<run>: metrics.json)."""

    run: str
    method: str  # "base" (untouched model), "full", or a selection method
    ratio: float | None  # None for base
    seed: int | None  # None for base
    n_train: int
    per_example: dict[str, dict[str, float]]  # metric -> example id -> value (higher = better)
    feature_activation: float  # mean activation of the chosen SAE features; NaN if unknown
    train_wall_s: float
    eval_wall_s: float
    source: str  # where it was read from, named in errors
    gen_hit_limit_share: float = NAN  # share of exact-match generations stopped at max_gen_toks; NaN if unknown
    train_loss: tuple[float, ...] = ()  # the fine-tune's loss per optimizer step; () for base or if unknown
    pool: str | None = None  # the candidate pool it was fine-tuned on; None for base or if not reported


@dataclass(frozen=True)
class SelectionInfo:
    """What a (method, ratio) selection cost and kept (results/metrics/<pool>/select-*, score-*)."""

    on_task_recall: float = NAN  # mean over the row's training seeds
    # share of the selection that is degraded (issue 15.2), mean over seeds; full: the pool's
    # share; NaN on a pool without degraded examples
    degraded_share: float = NAN
    selection_s: float = NAN
    selection_seeds: tuple[int, ...] = ()  # distinct seeds the subsets were drawn with; () if deterministic


VARIANCE_SOURCES = ("eval examples", "training seeds", "selection")


def variance_sources(n_seeds: int, info: SelectionInfo) -> str:
    """The sources of variance a row's intervals carry: eval examples always, training seeds
    when it has several, selection when its seeds drew more than one subset."""
    sources = [VARIANCE_SOURCES[0]]
    if n_seeds > 1:
        sources.append(VARIANCE_SOURCES[1])
    if len(set(info.selection_seeds)) > 1:
        sources.append(VARIANCE_SOURCES[2])
    return " + ".join(sources)


def _number(x, source: str, what: str, allow_none: bool = False) -> float:
    if x is None and allow_none:
        return NAN
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise DataError(f"{source}: {what} = {x!r} is not a finite number; rerun the eval stage that wrote it")
    return float(x)


def parse_eval_run(raw, source: str) -> EvalRun:
    """Validate one parsed metrics.json; a malformed one raises DataError naming `source`."""
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(raw).__name__}; rerun the eval stage")
    missing = [k for k in ("run", "method", "per_example") if k not in raw]
    if missing:
        raise DataError(f"{source}: missing key(s) {', '.join(missing)}; rerun the eval stage that wrote it")
    method = raw["method"]
    per_example = raw["per_example"]
    if not isinstance(per_example, dict) or not per_example:
        raise DataError(f"{source}: per_example must map metric -> {{example id: value}}; rerun the eval stage")
    parsed = {}
    for metric, values in per_example.items():
        if not isinstance(values, dict) or not values:
            raise DataError(f"{source}: per_example.{metric} must be a non-empty {{example id: value}} mapping")
        parsed[metric] = {str(k): _number(v, source, f"per_example.{metric}[{k!r}]") for k, v in values.items()}
    ratio = raw.get("ratio")
    if method != "base" and ratio is None:
        raise DataError(f"{source}: ratio is null for method '{method}'; only base has no ratio")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DataError(f"{source}: seed = {seed!r} is not an integer or null")
    hit_limit = _number(raw.get("gen_hit_limit_share"), source, "gen_hit_limit_share", allow_none=True)
    if not (math.isnan(hit_limit) or 0.0 <= hit_limit <= 1.0):
        raise DataError(f"{source}: gen_hit_limit_share = {hit_limit!r} is not a share in [0, 1]; "
                        "rerun the eval stage that wrote it")
    pool = raw.get("pool")
    if pool is not None and not isinstance(pool, str):
        raise DataError(f"{source}: pool = {pool!r} is not a pool name or null; rerun the eval stage")
    train_loss = raw.get("train_loss") or []
    if not isinstance(train_loss, list):
        raise DataError(f"{source}: train_loss = {train_loss!r} is not a list of numbers; rerun the eval stage")
    return EvalRun(
        run=str(raw["run"]), method=str(method),
        ratio=None if ratio is None else round(_number(ratio, source, "ratio"), 6),
        seed=seed, n_train=int(_number(raw.get("n_train", 0), source, "n_train")),
        per_example=parsed,
        feature_activation=_number(raw.get("feature_activation"), source, "feature_activation", allow_none=True),
        train_wall_s=_number(raw.get("train_wall_s", 0.0), source, "train_wall_s"),
        eval_wall_s=_number(raw.get("eval_wall_s", 0.0), source, "eval_wall_s"),
        source=source, gen_hit_limit_share=hit_limit, pool=pool,
        train_loss=tuple(_number(x, source, f"train_loss[{i}]") for i, x in enumerate(train_loss)))


def label(method: str, ratio: float | None) -> str:
    """The row name: 'base', or '<method>-<ratio:g>' (e.g. 'igds-0.5')."""
    return method if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)) else f"{method}-{ratio:g}"


def example_ids(runs: Sequence[EvalRun]) -> dict[str, list[str]]:
    """metric -> its eval example ids (column order of every matrix); all runs must agree."""
    first = runs[0]
    ids = {m: sorted(v) for m, v in first.per_example.items()}
    for run in runs[1:]:
        if set(run.per_example) != set(ids):
            raise DataError(f"{run.source}: metrics {sorted(run.per_example)} differ from {sorted(ids)} in "
                            f"{first.source}; evaluate every run on the same metrics")
        for metric, expected in ids.items():
            got = run.per_example[metric]
            if set(got) != set(expected):
                n_missing, n_extra = len(set(expected) - set(got)), len(set(got) - set(expected))
                raise DataError(f"{run.source}: per_example.{metric} ids differ from {first.source} "
                                f"({n_missing} missing, {n_extra} extra); evaluate every run on the same eval set")
    return ids


def group_runs(runs: Sequence[EvalRun], methods: Sequence[str] = ()) -> dict[tuple[str, float | None], list[EvalRun]]:
    """(method, ratio) -> its runs by seed, in table order: base, then `methods` in the given
    order (methods not named follow in order of appearance), each by ratio."""
    groups: dict[tuple[str, float | None], list[EvalRun]] = {}
    for run in runs:
        groups.setdefault((run.method, run.ratio), []).append(run)
    for key, members in groups.items():
        for seed in {r.seed for r in members}:
            dup = [r.source for r in members if r.seed == seed]
            if len(dup) > 1:
                raise DataError(f"{dup[1]}: {label(*key)} seed {seed} is also in {dup[0]}; remove one of them")
        members.sort(key=lambda r: -1 if r.seed is None else r.seed)
    order = ["base", *methods, *[r.method for r in runs]]
    rank = {m: i for i, m in reversed(list(enumerate(order)))}
    return dict(sorted(groups.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1] or 0.0)))


def _matrix(members: Sequence[EvalRun], metric: str, ids: Sequence[str]) -> np.ndarray:
    return np.array([[r.per_example[metric][i] for i in ids] for r in members])  # [n_seeds, n_examples]


def _reference(groups: Mapping, method: str, ratio: float | None, ref: str):
    """The group a row is compared with: random at the same ratio; full at ratio 1 (or its only ratio)."""
    if ref == "random":
        key = ("random", ratio)
        return key if key in groups else None
    fulls = sorted((k for k in groups if k[0] == ref), key=lambda k: (k[1] != 1.0, -(k[1] or 0.0)))
    return fulls[0] if fulls else None


def amplification_points(runs: Sequence[EvalRun], task_metric: str = "answer_loglik") -> pd.DataFrame:
    """One row per fine-tuned run: feature_amplification = feature_activation / base's - 1 and
    task_gain = mean task metric - base's (paper Fig. 3); NaN without a base run."""
    base = next((r for r in runs if r.method == "base"), None)
    rows = []
    for r in runs:
        if r.method == "base":
            continue
        amp = gain = NAN
        if base is not None:
            if base.feature_activation and math.isfinite(base.feature_activation):
                amp = r.feature_activation / base.feature_activation - 1.0
            if task_metric in r.per_example and task_metric in base.per_example:
                gain = float(np.mean(list(r.per_example[task_metric].values()))
                             - np.mean(list(base.per_example[task_metric].values())))
        rows.append({"run": r.run, "method": r.method, "ratio": r.ratio, "seed": r.seed,
                     "feature_amplification": amp, "task_gain": gain})
    return pd.DataFrame(rows, columns=["run", "method", "ratio", "seed", "feature_amplification", "task_gain"])


def _differences(matrices: Mapping, key: tuple[str, float | None], rng: np.random.Generator,
                 n_boot: int, n_perm: int, level: float) -> dict[str, float]:
    """<metric>_vs_<ref>{,_lo,_hi,_p,_n_perm,_p_exact} of one row: the paired-bootstrap CI and the
    paired permutation test; NaN for base, the reference itself, or no reference."""
    out = {}
    for metric, mine in matrices[key].items():
        for ref in REFERENCES:
            ref_key = _reference(matrices, *key, ref)
            ci = test = None
            if key[0] != "base" and ref_key is not None and ref_key != key:
                ci = paired_bootstrap(mine, matrices[ref_key][metric], rng, n_boot, level)
                test = paired_permutation_test(mine, matrices[ref_key][metric], rng, n_perm)
            col = f"{metric}_vs_{ref}"
            out.update({col: ci.diff if ci else NAN, f"{col}_lo": ci.lo if ci else NAN,
                        f"{col}_hi": ci.hi if ci else NAN, f"{col}_p": test.p_value if test else NAN,
                        f"{col}_n_perm": test.n_perm if test else NAN,
                        f"{col}_p_exact": test.exact if test else NAN})
    return out


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values; NaN if there are none (e.g. a share no run reported)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else NAN


def build_table(runs: Sequence[EvalRun], selection: Mapping[tuple[str, float], SelectionInfo],
                rng: np.random.Generator, n_boot: int = 2000, *, n_perm: int = 10000, level: float = 0.95,
                task_metric: str = "answer_loglik", methods: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (method, ratio): means with CIs per metric, differences vs random (same
    ratio) and vs full with paired-bootstrap CIs and paired sign-flip permutation p-values
    (n_perm flips), Holm-adjusted within each metric x reference across rows; NaN where a
    reference is missing or is the row itself. `variance` names the sources each row's
    intervals carry; gen_hit_limit_share is the mean over its seeds (NaN if not reported);
    degraded_share is the selection's (SelectionInfo)."""
    if not runs:
        raise ValueError("no eval runs to report")
    ids = example_ids(runs)
    if task_metric not in ids:
        raise ValueError(f"task metric {task_metric!r} is not among the eval metrics {sorted(ids)}")
    groups = group_runs(runs, methods)
    points = amplification_points(runs, task_metric)
    base_key = next((k for k in groups if k[0] == "base"), None)
    matrices = {key: {m: _matrix(members, m, ids[m]) for m in ids} for key, members in groups.items()}
    rows = []
    for (method, ratio), members in groups.items():
        row = {"method": method, "ratio": NAN if ratio is None else ratio, "n_seeds": len(members),
               "n_train": int(round(np.mean([r.n_train for r in members])))}
        for metric in ids:
            ci = bootstrap_ci(matrices[method, ratio][metric], rng, n_boot, level)
            row.update({metric: ci.mean, f"{metric}_lo": ci.lo, f"{metric}_hi": ci.hi})
        row.update(_differences(matrices, (method, ratio), rng, n_boot, n_perm, level))
        info = selection.get((method, ratio), SelectionInfo())
        row["variance"] = variance_sources(len(members), info)
        recall = info.on_task_recall
        if method == "full" and not math.isfinite(recall):
            recall = 1.0  # full keeps every on-task example by construction
        amplification = gain = NAN
        if method != "base":
            mine = points[(points["method"] == method) & (points["ratio"] == ratio)]
            amplification = float(mine["feature_amplification"].mean())
            if base_key is not None:
                gain = row[task_metric] - float(matrices[base_key][task_metric].mean())
        row.update({"on_task_recall": recall, "degraded_share": info.degraded_share,
                    "selection_s": info.selection_s,
                    "gen_hit_limit_share": finite_mean([r.gen_hit_limit_share for r in members]),
                    "feature_amplification": amplification, "task_gain": gain})
        rows.append(row)
    table = pd.DataFrame(rows)
    for metric in ids:
        for ref in REFERENCES:
            col = f"{metric}_vs_{ref}"
            table[f"{col}_p_holm"] = holm(table[f"{col}_p"].to_numpy())
            family = int(np.isfinite(table[f"{col}_p"].to_numpy(dtype=float)).sum())
            table[f"{col}_mdd"] = minimal_detectable_difference(table[f"{col}_lo"], table[f"{col}_hi"], level, POWER)
            table[f"{col}_mdd_holm"] = minimal_detectable_difference(table[f"{col}_lo"], table[f"{col}_hi"], level,
                                                                     POWER, family)
    return table[_columns(list(ids))]


def _columns(metrics: Sequence[str]) -> list[str]:
    cols = ["method", "ratio", "n_seeds", "n_train", "variance"]
    for m in metrics:
        cols += [m, f"{m}_lo", f"{m}_hi"]
    for m in metrics:
        for ref in REFERENCES:
            cols += [f"{m}_vs_{ref}{s}" for s in ("", "_lo", "_hi", "_p", "_p_holm", "_n_perm", "_p_exact", "_mdd",
                                                   "_mdd_holm")]
    return cols + ["on_task_recall", "degraded_share", "selection_s", "gen_hit_limit_share", "feature_amplification",
                   "task_gain"]


def table_metrics(table: pd.DataFrame) -> list[str]:
    """The metric names of a build_table frame (also after a CSV round trip)."""
    return [c for c in table.columns if f"{c}_vs_{REFERENCES[-1]}_p_holm" in table.columns]


# --- renderings -----------------------------------------------------------------------------

def _decimals(widths: np.ndarray) -> int:
    """Enough decimals to show a CI's width with about two significant digits (1..4)."""
    widths = widths[np.isfinite(widths) & (widths > 0)]
    if not len(widths):
        return 3
    return int(np.clip(math.ceil(-math.log10(float(np.median(widths)))) + 1, 1, 4))


def _num(x: float, decimals: int, sign: bool = False) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"


def _interval(row: pd.Series, col: str, decimals: int, sign: bool = False) -> str:
    """'mean [lo, hi]' of column `col` and its _lo/_hi columns."""
    mean, lo, hi = (_num(row[c], decimals, sign) for c in (col, f"{col}_lo", f"{col}_hi"))
    return f"{mean} [{lo}, {hi}]"


def _p(p: float, prefix: str, bound: bool = False) -> str:
    """p to three decimals, two significant digits below 0.001; `bound`: p is a Monte Carlo
    test's floor 2 / (n_perm + 1) (no null draw was as extreme), an upper bound, shown as such."""
    if not math.isfinite(p):
        return "–"
    return f"{prefix}{'≤' if bound else '='}{p:{'.1e' if p < 0.001 else '.3f'}}"


def _at_floor(row: pd.Series, col: str) -> bool:
    """Whether the Monte Carlo p of difference `col` sits at its floor 2 / (n_perm + 1)."""
    n_perm, exact, p = row[f"{col}_n_perm"], row[f"{col}_p_exact"], row[f"{col}_p"]
    if not (math.isfinite(p) and math.isfinite(n_perm)) or bool(exact):
        return False
    return p <= 2.0 / (n_perm + 1) * (1 + 1e-9)


def _share(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _permutation_note(table: pd.DataFrame, metrics: Sequence[str]) -> str:
    """How many sign flips the table's p-values rest on, and which were exact."""
    n_perm, exact = [], []
    for m in metrics:
        for ref in REFERENCES:
            done = table[f"{m}_vs_{ref}_n_perm"].notna()
            n_perm += table.loc[done, f"{m}_vs_{ref}_n_perm"].astype(int).tolist()
            exact += table.loc[done, f"{m}_vs_{ref}_p_exact"].astype(bool).tolist()
    if not n_perm:
        return "no differences to test"
    random_n = sorted({n for n, e in zip(n_perm, exact) if not e})
    parts = []
    if random_n:
        counts = "/".join(f"{n}" for n in random_n)
        floor = 2.0 / (random_n[-1] + 1)
        parts.append(f"{counts} random sign flips per test (Monte Carlo; smallest attainable p = "
                     f"2 / ({random_n[-1]} + 1) = {floor:.1e})")
    if any(exact):
        parts.append(f"{sum(exact)} of {len(exact)} tests exact (all 2^n sign flips enumerated)")
    return "; ".join(parts)


def _markdown_table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _shows_degraded(table: pd.DataFrame) -> bool:
    """Whether a table has a degraded share to show: a pool with degraded examples (data.degrade)."""
    return "degraded_share" in table.columns and bool(np.isfinite(table["degraded_share"].to_numpy(float)).any())


def _tables_markdown(table: pd.DataFrame, level: float) -> list[str]:
    """The means table and the differences table of one build_table frame, each under a caption.
    The degraded share is a column only where some row has one."""
    metrics = table_metrics(table)
    pct = f"{level * 100:g}%"
    degraded = _shows_degraded(table)
    main_rows, diff_rows = [], []
    dec = {m: _decimals((table[f"{m}_hi"] - table[f"{m}_lo"]).to_numpy(dtype=float)) for m in metrics}
    for _, r in table.iterrows():
        ratio = "–" if not math.isfinite(r["ratio"]) else f"{r['ratio']:g}"
        cells = [_interval(r, m, dec[m]) for m in metrics]
        kept = [_num(r["on_task_recall"], 2), *([_num(r["degraded_share"], 2)] if degraded else [])]
        main_rows.append([str(r["method"]), ratio, str(int(r["n_seeds"])), str(int(r["n_train"])), *cells, *kept,
                          _num(r["selection_s"], 1), _share(r["gen_hit_limit_share"]), str(r["variance"])])
        if r["method"] == "base":
            continue
        diffs = []
        for m in metrics:
            for ref in REFERENCES:
                c = f"{m}_vs_{ref}"
                floor = _at_floor(r, c)  # then Holm's p, a multiple of it, is a bound too
                diffs.append("–" if not math.isfinite(r[c]) else f"{_interval(r, c, dec[m], sign=True)} "
                             f"{_p(r[c + '_p'], 'p', floor)} ({_p(r[c + '_p_holm'], 'Holm p', floor)}) "
                             f"MDD {_num(r[c + '_mdd'], dec[m])} ({_num(r[c + '_mdd_holm'], dec[m])})")
        diff_rows.append([str(r["method"]), ratio, *diffs])
    kept_header = ["on-task recall", *(["degraded share"] if degraded else [])]
    lines = [f"Means with {pct} CIs:", ""]
    lines += _markdown_table(["method", "ratio", "seeds", "n_train", *metrics, *kept_header, "selection s",
                              "gen. at token limit", "variance"],
                             ["---", "---:", "---:", "---:", *["---:"] * (len(metrics) + len(kept_header) + 2), "---"],
                             main_rows)
    lines += ["", f"Differences to random (same ratio) and to full, {pct} CI, p (Holm p), MDD (after Holm):", ""]
    lines += _markdown_table(["method", "ratio", *[f"{m} vs {ref}" for m in metrics for ref in REFERENCES]],
                             ["---", "---:", *["---:"] * (2 * len(metrics))], diff_rows)
    return lines


def _notes(table: pd.DataFrame, *, n_boot: int, level: float) -> list[str]:
    """How to read the tables: the statistics behind the intervals and p-values, and the columns."""
    pct = f"{level * 100:g}%"
    notes = [f"Means over eval examples and seeds, with {pct} CIs: percentile bootstrap, B = {n_boot}, "
             "eval examples and training seeds resampled. Higher is better for every metric.", ""]
    notes += [f"Differences Δ = method − reference (random at the same ratio; full), {pct} CI: paired "
              "percentile bootstrap (examples paired, seeds resampled). p: two-sided paired sign-flip "
              "permutation test on the per-example differences (scipy.stats.permutation_test, "
              "permutation_type='samples'; a training-seed term is added to the null where an arm has "
              f"several seeds), {_permutation_note(table, table_metrics(table))}; unadjusted and Holm-adjusted "
              "(within each metric × reference, across the methods of one table). p≤ marks a p at that floor "
              "(no null draw as extreme as the observed difference): the true p is smaller. "
              f"MDD: the smallest true difference the comparison detects with {POWER:.0%} power at "
              f"{1 - level:g} two-sided (in brackets: at Holm's strictest step, {1 - level:g} / the number of methods "
              "compared), from the normal approximation with the standard error the CI's width gives; a "
              "difference smaller than it is not resolved, whichever its sign.", ""]
    notes += ["variance: the sources of variation each row's intervals carry: eval examples always; "
              "training seeds when the row has several; selection when its seeds also drew different "
              "subsets (a stochastic selector, redrawn per seed). A deterministic selector's subset is "
              "fixed, so its intervals say nothing about a different selection. A difference's interval "
              "and p also carry its reference's sources (e.g. random's selection). "
              "gen. at token limit: share of exact-match generations that stopped at max_gen_toks "
              "(truncated answers), mean over seeds."]
    if _shows_degraded(table):
        notes += ["", "degraded share: share of the selected examples that are degraded (data.degrade: a wrong "
                  "answer, a dropped or shuffled reasoning line, truncation), mean over seeds; for full, the "
                  "pool's share. Shown for pools with degraded examples."]
    return notes


def render_markdown(table: pd.DataFrame, *, n_boot: int, level: float = 0.95) -> str:
    """One table as README-ready markdown: means with CIs, differences vs random and full,
    then how to read them."""
    return "\n".join([*_tables_markdown(table, level), "", *_notes(table, n_boot=n_boot, level=level)]) + "\n"


def render_pools_markdown(tables: Mapping[str, pd.DataFrame], *, n_boot: int, level: float = 0.95) -> str:
    """Every pool's tables under a `### Pool: <pool>` heading, then how to read them (once)."""
    lines = []
    for pool, table in tables.items():
        lines += [f"### Pool: {pool}", "", *_tables_markdown(table, level), ""]
    lines += ["### How to read these tables", "", *_notes(by_pool(tables), n_boot=n_boot, level=level)]
    return "\n".join(lines) + "\n"


def by_pool(frames: Mapping[str, pd.DataFrame], prefix: str | None = None, sep: str = ": ") -> pd.DataFrame:
    """The pools' frames stacked, a `pool` column first. `prefix`: a column whose labels get
    '<pool><sep>' in front, so they stay distinct across pools (the DVC plot templates draw a
    line or a row per label)."""
    parts = []
    for pool, frame in frames.items():
        frame = frame.copy()
        if prefix is not None:
            frame[prefix] = pool + sep + frame[prefix].astype(str)
        frame.insert(0, "pool", pool)
        parts.append(frame)
    return pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)


def ratio_sweep_long(table: pd.DataFrame) -> pd.DataFrame:
    """Long format (method, ratio, metric, mean, lo, hi) of the fine-tuned rows, for `dvc plots`."""
    rows = [{"method": r["method"], "ratio": r["ratio"], "metric": m, "mean": r[m], "lo": r[f"{m}_lo"],
             "hi": r[f"{m}_hi"]}
            for _, r in table.iterrows() if r["method"] != "base" for m in table_metrics(table)]
    return pd.DataFrame(rows, columns=["method", "ratio", "metric", "mean", "lo", "hi"])


def _finite_or_none(x) -> float | None:
    """JSON-safe: 6 significant digits, None for NaN/inf."""
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


def report_document(table: pd.DataFrame, correlation: Correlation) -> dict:
    """results/report.json, the report as data: every row's metrics, differences with their
    CIs and p-values, selection facts, and the Fig. 3 correlation."""
    metrics = table_metrics(table)
    out = {}
    for _, r in table.iterrows():
        keys = [k for m in metrics for k in (m, f"{m}_lo", f"{m}_hi")]
        if r["method"] != "base":
            keys += [f"{m}_vs_{ref}{s}" for m in metrics for ref in REFERENCES
                     for s in ("", "_lo", "_hi", "_p", "_p_holm")]
            keys += ["on_task_recall", "degraded_share", "selection_s", "feature_amplification", "task_gain"]
        keys += ["gen_hit_limit_share"]
        out[label(r["method"], r["ratio"])] = {"n_seeds": int(r["n_seeds"]), "variance": str(r["variance"]),
                                               **{k: _finite_or_none(r[k]) for k in keys}}
    out["amplification_correlation"] = _correlation(correlation)
    return out


def _correlation(c: Correlation) -> dict:
    return {"pearson_r": _finite_or_none(c.pearson_r), "pearson_p": _finite_or_none(c.pearson_p),
            "spearman_rho": _finite_or_none(c.spearman_rho), "spearman_p": _finite_or_none(c.spearman_p),
            "n": int(c.n)}


def headline_metrics(table: pd.DataFrame, correlation: Correlation, task_metric: str,
                     focus: str = "igds") -> dict:
    """results/metrics.json, what `dvc metrics show` and `dvc exp show` print: the task metric
    of every row, the `focus` method's paired differences in it to random and to full with
    their Holm-adjusted p, and the amplification correlation. Everything else is in
    report_document (results/report.json)."""
    out: dict = {task_metric: {label(r["method"], r["ratio"]): _finite_or_none(r[task_metric])
                               for _, r in table.iterrows()}}
    for _, r in table[table["method"] == focus].iterrows():
        out[label(r["method"], r["ratio"])] = {
            f"vs_{ref}{s}": _finite_or_none(r[f"{task_metric}_vs_{ref}{s}"]) for ref in REFERENCES
            for s in ("", "_p_holm")}
    out["amplification_r"] = _finite_or_none(correlation.pearson_r)
    return out


def differences_long(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (row, reference, metric) difference: its label, the paired difference, its
    CI and Holm p. The forest plot's data (`dvc plots`: x = diff, y = row)."""
    rows = []
    for _, r in table.iterrows():
        for m in metrics or table_metrics(table):
            for ref in REFERENCES:
                if math.isfinite(float(r[f"{m}_vs_{ref}"])):
                    rows.append({"row": f"{label(r['method'], r['ratio'])} − {ref}", "metric": m,
                                 "reference": ref, "diff": r[f"{m}_vs_{ref}"], "lo": r[f"{m}_vs_{ref}_lo"],
                                 "hi": r[f"{m}_vs_{ref}_hi"], "p_holm": r[f"{m}_vs_{ref}_p_holm"]})
    return pd.DataFrame(rows, columns=["row", "metric", "reference", "diff", "lo", "hi", "p_holm"])


def train_loss_long(runs: Sequence[EvalRun]) -> pd.DataFrame:
    """The training loss per optimizer step of every fine-tuned run (`dvc plots`: x = step,
    y = loss, one line per run)."""
    rows = [{"run": r.run, "step": i + 1, "loss": loss} for r in runs for i, loss in enumerate(r.train_loss)]
    return pd.DataFrame(rows, columns=["run", "step", "loss"])
