"""The report's plots (Agg canvas: no display, no pyplot global state), each written
atomically to the path it is given: a forest plot of the paired differences, the ratio
sweep, and feature amplification vs task gain (the paper's Fig. 3). Every plot takes the
candidate pools' tables or points by pool name and shows them all: one row of panels per
pool, or one marker per pool."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from igds.core.artifacts import atomic_file
from igds.core.report import differences_long, table_metrics
from igds.core.stats import Correlation

log = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v")  # one per pool in the amplification scatter


def _figure(n_rows: int, n_cols: int, panel_w: float = 4.2, panel_h: float = 3.6):
    """A figure and its axes, [row][column]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_w * n_cols, panel_h * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [[fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1) for j in range(n_cols)] for i in range(n_rows)]


def _save(fig, path: str | Path) -> None:
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    log.debug("wrote %s", path)


def _colors(methods: Sequence[str]) -> dict[str, str]:
    fixed = {"base": "0.6", "full": "0.1"}
    others = [m for m in dict.fromkeys(methods) if m not in fixed]
    return {**fixed, **{m: f"C{i % 10}" for i, m in enumerate(others)}}


def _metrics(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The metrics of every pool's table, in first-seen order."""
    return list(dict.fromkeys(m for table in tables.values() for m in table_metrics(table)))


def plot_forest(tables: Mapping[str, pd.DataFrame], path: str | Path) -> None:
    """A row of panels per pool, a panel per metric: each row's paired difference to random and
    to full, a point with its CI, on the difference's own scale around a line at 0 (bars drawn
    from 0 would hide differences far smaller than the metric's level)."""
    longs = {pool: differences_long(table) for pool, table in tables.items()}
    metrics = [m for m in _metrics(tables) if any((long["metric"] == m).any() for long in longs.values())]
    n_labels = max([long["row"].nunique() for long in longs.values()] + [1])
    fig, grid = _figure(len(tables), max(1, len(metrics)), panel_w=4.6, panel_h=max(2.6, 0.32 * n_labels + 1.2))
    colors = {"random": "C0", "full": "C3"}
    for axes, (pool, long) in zip(grid, longs.items()):
        y = {name: i for i, name in enumerate(reversed(list(dict.fromkeys(long["row"]))))}
        for ax, m in zip(axes, metrics):
            mine = long[long["metric"] == m]
            for ref, part in mine.groupby("reference", sort=False):
                ys = np.array([y[name] for name in part["row"]])
                d = part["diff"].to_numpy(dtype=float)
                err = np.vstack([d - part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float) - d])
                ax.errorbar(d, ys, xerr=err, fmt="o", capsize=3, color=colors.get(ref, "C2"), label=f"vs {ref}")
            ax.axvline(0.0, color="0.3", lw=0.8)
            ax.set_yticks(list(y.values()), list(y), fontsize=7)
            ax.set_xlabel(f"Δ {m} (95% CI)")
            ax.set_title(f"pool {pool}: {m}")
    if metrics:
        grid[0][0].legend(fontsize=7)
    _save(fig, path)


def _sweep_panel(ax, table: pd.DataFrame, metric: str, colors: Mapping[str, str]) -> None:
    """One metric vs selection ratio: a line per method with its CI band; base and full are
    horizontal reference lines. A method with one ratio is a point with an error bar."""
    swept = table[~table["method"].isin(["base", "full"])]
    span = float(np.ptp(swept["ratio"])) if len(swept) else 0.0
    # methods with a single ratio would sit on top of each other: nudge them apart
    nudge = {m: (i - (swept["method"].nunique() - 1) / 2) * 0.012 * (span or 1.0)
             for i, m in enumerate(dict.fromkeys(swept["method"]))}
    m = metric
    for method, rows in table.groupby("method", sort=False):
        mean, lo, hi = (rows[c].to_numpy(dtype=float) for c in (m, f"{m}_lo", f"{m}_hi"))
        if method in ("base", "full"):
            ax.axhline(mean[0], color=colors[method], ls="--" if method == "base" else ":", label=method)
            ax.axhspan(lo[0], hi[0], color=colors[method], alpha=0.08)
            continue
        rows = rows.sort_values("ratio")
        ratio = rows["ratio"].to_numpy(dtype=float)
        mean, lo, hi = (rows[c].to_numpy(dtype=float) for c in (m, f"{m}_lo", f"{m}_hi"))
        if len(rows) > 1:
            ax.plot(ratio, mean, marker="o", color=colors[method], label=method)
            ax.fill_between(ratio, lo, hi, color=colors[method], alpha=0.2)
        else:
            ax.errorbar(ratio + nudge[method], mean, yerr=[mean - lo, hi - mean], fmt="o", capsize=3,
                        color=colors[method], label=method)
    if len(swept):
        ratios = sorted(set(swept["ratio"]))
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.set_xlim(ratios[0] - 0.1 * (span or 1.0), ratios[-1] + 0.1 * (span or 1.0))
    ax.set_xlabel("selection ratio")


def plot_ratio_sweep(tables: Mapping[str, pd.DataFrame], path: str | Path) -> None:
    """A row of panels per pool, a panel per metric: the metric vs the selection ratio (_sweep_panel)."""
    metrics = _metrics(tables)
    colors = _colors([m for table in tables.values() for m in table["method"]])
    fig, grid = _figure(len(tables), max(1, len(metrics)))
    for axes, (pool, table) in zip(grid, tables.items()):
        for ax, m in zip(axes, metrics):
            _sweep_panel(ax, table, m, colors)
            ax.set_title(f"pool {pool}: {m}")
    if metrics:
        grid[0][0].legend(fontsize=7)
    _save(fig, path)


def _stat(x: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def plot_amplification(points: Mapping[str, pd.DataFrame], correlations: Mapping[str, Correlation],
                       path: str | Path, task_metric: str = "answer_loglik") -> None:
    """Scatter of feature amplification vs task gain, one point per fine-tuned run (paper Fig. 3):
    a color per method, a marker per pool; the title gives each pool's own correlation."""
    colors = _colors([m for frame in points.values() for m in frame["method"]])
    fig, ((ax,),) = _figure(1, 1, panel_w=5.5, panel_h=4.2 + 0.2 * len(points))
    for (pool, frame), marker in zip(points.items(), MARKERS * len(points)):
        for method, rows in frame.groupby("method", sort=False):
            ax.scatter(rows["feature_amplification"], rows["task_gain"], color=colors[method], marker=marker,
                       label=f"{pool}: {method}" if len(points) > 1 else method)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.axvline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("feature amplification (activation / base − 1)")
    ax.set_ylabel(f"task gain ({task_metric} − base)")
    title = ["correlation per pool (its runs only)"]
    for pool, c in correlations.items():
        title.append(f"{pool}: Pearson r = {_stat(c.pearson_r, '.2f')} (p = {_stat(c.pearson_p, '.2g')}), "
                     f"Spearman ρ = {_stat(c.spearman_rho, '.2f')} (p = {_stat(c.spearman_p, '.2g')}), n = {c.n}")
    ax.set_title("\n".join(title), fontsize=8)
    if any(len(frame) for frame in points.values()):
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_best_so_far(curves: Mapping[str, pd.DataFrame], path: str | Path, metric: str = "proxy") -> None:
    """A panel per searched pool: each solver's best proxy value so far against the proxy
    fine-tunes spent, the median over its search seeds with the range (min to max) shaded;
    the best single selector's value (after its own proxy fine-tunes) as a dashed line."""
    fig, grid = _figure(1, max(1, len(curves)), panel_w=5.0, panel_h=3.6)
    for ax, (pool, long) in zip(grid[0], curves.items()):
        solvers = [s for s in dict.fromkeys(long["solver"]) if s != "single"]
        colors = {s: f"C{i % 10}" for i, s in enumerate(solvers)}
        for solver in solvers:
            wide = long[long["solver"] == solver].pivot_table(index="evaluation", columns="seed",
                                                              values="best_so_far")
            x = wide.index.to_numpy()
            ax.plot(x, wide.median(axis=1).to_numpy(), color=colors[solver], label=f"{solver} (n={wide.shape[1]})")
            ax.fill_between(x, wide.min(axis=1).to_numpy(), wide.max(axis=1).to_numpy(), color=colors[solver],
                            alpha=0.15)
        single = long[long["solver"] == "single"]
        if len(single):
            ax.axhline(float(single["best_so_far"].max()), color="0.3", ls="--", lw=1,
                       label=f"best single selector ({len(single)} fine-tunes)")
        ax.set_xlabel("proxy fine-tunes")
        ax.set_ylabel(f"best {metric} on val so far")
        ax.set_title(f"pool {pool}: recipe search")
        ax.legend(fontsize=7)
    _save(fig, path)
