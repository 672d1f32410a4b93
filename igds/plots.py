"""The report's plots (Agg canvas: no display, no pyplot global state), each written
atomically to the path it is given: a forest plot of the paired differences, the ratio
sweep, and feature amplification vs task gain (the paper's Fig. 3)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from igds.artifacts import atomic_file
from igds.report import differences_long, label, table_metrics
from igds.stats import Correlation

log = logging.getLogger(__name__)


def _figure(n_panels: int, panel_w: float = 4.2, h: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_w * n_panels, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]


def _save(fig, path: str | Path) -> None:
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    log.debug("wrote %s", path)


def _colors(methods: Sequence[str]) -> dict[str, str]:
    fixed = {"base": "0.6", "full": "0.1"}
    others = [m for m in dict.fromkeys(methods) if m not in fixed]
    return {**fixed, **{m: f"C{i % 10}" for i, m in enumerate(others)}}


def plot_forest(table: pd.DataFrame, path: str | Path) -> None:
    """One panel per metric: each row's paired difference to random and to full, a point with
    its CI, on the difference's own scale around a line at 0 (bars drawn from 0 would hide
    differences far smaller than the metric's level)."""
    long = differences_long(table)
    metrics = [m for m in table_metrics(table) if (long["metric"] == m).any()]
    rows = list(dict.fromkeys(long["row"]))
    fig, axes = _figure(max(1, len(metrics)), panel_w=4.6, h=max(2.6, 0.32 * len(rows) + 1.2))
    y = {name: i for i, name in enumerate(reversed(rows))}
    colors = {"random": "C0", "full": "C3"}
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
        ax.set_title(m)
    if metrics:
        axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_ratio_sweep(table: pd.DataFrame, path: str | Path) -> None:
    """Per metric: metric vs selection ratio, a line per method with its CI band; base and
    full are horizontal reference lines. A method with one ratio is a point with an error bar."""
    metrics = table_metrics(table)
    colors = _colors(table["method"])
    fig, axes = _figure(len(metrics))
    swept = table[~table["method"].isin(["base", "full"])]
    span = float(np.ptp(swept["ratio"])) if len(swept) else 0.0
    # methods with a single ratio would sit on top of each other: nudge them apart
    nudge = {m: (i - (swept["method"].nunique() - 1) / 2) * 0.012 * (span or 1.0)
             for i, m in enumerate(dict.fromkeys(swept["method"]))}
    for ax, m in zip(axes, metrics):
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
        ax.set_title(m)
    if axes:
        axes[0].legend(fontsize=7)
    _save(fig, path)


def _stat(x: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def plot_amplification(points: pd.DataFrame, correlation: Correlation, path: str | Path,
                       task_metric: str = "answer_loglik") -> None:
    """Scatter of feature amplification vs task gain, one point per fine-tuned run (paper Fig. 3)."""
    colors = _colors(points["method"])
    fig, (ax,) = _figure(1, panel_w=5.5, h=4.2)
    for method, rows in points.groupby("method", sort=False):
        ax.scatter(rows["feature_amplification"], rows["task_gain"], color=colors[method], label=method)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.axvline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("feature amplification (activation / base − 1)")
    ax.set_ylabel(f"task gain ({task_metric} − base)")
    c = correlation
    ax.set_title(f"Pearson r = {_stat(c.pearson_r, '.2f')} (p = {_stat(c.pearson_p, '.2g')}), "
                 f"Spearman ρ = {_stat(c.spearman_rho, '.2f')} (p = {_stat(c.spearman_p, '.2g')}), n = {c.n}",
                 fontsize=8)
    if len(points):
        ax.legend(fontsize=7)
    _save(fig, path)
