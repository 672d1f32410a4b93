"""Uncertainty for the benchmark table: bootstrap CIs over seeds and eval examples, paired
bootstrap tests between methods, Holm's correction, and the amplification correlation.

Pure numpy (scipy for the correlation p-values); no file io. The eval examples are the
unit of resampling, so a method is compared on the same questions as its reference; when
a method was trained with several seeds, the seeds are resampled too (a two-level
bootstrap), so the interval also carries training-seed variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# bootstrap draws are processed in chunks of at most this many [draw, example] cells
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class BootstrapCI:
    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_examples: int


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # grand mean of a minus grand mean of b
    lo: float
    hi: float
    p_value: float


@dataclass(frozen=True)
class Correlation:
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """[n_seeds, n_examples] float array; a 1-D array is one seed."""
    m = np.asarray(values, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [n_seeds, n_examples] array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite values")
    return m


def _counts(rng: np.random.Generator, n_draws: int, n: int) -> np.ndarray:
    """[n_draws, n] how often each of n items is drawn in n draws with replacement."""
    idx = rng.integers(0, n, size=(n_draws, n)) + n * np.arange(n_draws)[:, None]
    return np.bincount(idx.ravel(), minlength=n_draws * n).reshape(n_draws, n).astype(float)


def _chunks(n_boot: int, n_examples: int) -> list[int]:
    size = max(1, _CHUNK_CELLS // max(n_examples, 1))
    return [min(size, n_boot - start) for start in range(0, n_boot, size)]


def _resampled_mean(m: np.ndarray, seed_counts: np.ndarray, example_counts: np.ndarray) -> np.ndarray:
    """Grand mean of m over the drawn seeds x drawn examples, one per bootstrap draw.

    Drawing seeds s_1..s_S and examples e_1..e_N, the mean of m[s_i, e_j] over all i, j is
    c^T m w / (S N) with c, w the draw counts, so no [B, S, N] array is ever built.
    """
    n_seeds, n_examples = m.shape
    return ((seed_counts @ m) * example_counts).sum(axis=1) / (n_seeds * n_examples)


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} is outside (0, 1)")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                 level: float = 0.95) -> BootstrapCI:
    """Percentile-bootstrap CI of the grand mean of `values` [n_seeds, n_examples].

    Each draw resamples the seeds with replacement and then the eval examples with
    replacement, the same example draw for every drawn seed (examples stay the unit).
    With one seed this is the ordinary bootstrap over examples.
    """
    m = _as_matrix(values, "values")
    n_seeds, n_examples = m.shape
    stats = np.concatenate([
        _resampled_mean(m, _counts(rng, size, n_seeds), _counts(rng, size, n_examples))
        for size in _chunks(n_boot, n_examples)])
    lo, hi = _percentiles(stats, level)
    return BootstrapCI(float(m.mean()), lo, hi, n_seeds, n_examples)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                     level: float = 0.95) -> PairedDiff:
    """Paired bootstrap of (grand mean of a) - (grand mean of b) on the same eval examples.

    a [n_seeds_a, n_examples] and b [n_seeds_b, n_examples] must have their columns in the
    same example order. Each draw resamples the examples once for both arms (paired) and
    the seeds of each arm independently. The CI is the percentile interval of the drawn
    differences d*. The two-sided p-value is also read off that distribution,
        p = min(1, 2 * min((#{d* <= 0} + 1) / (B + 1), (#{d* >= 0} + 1) / (B + 1))),
    i.e. the smallest two-sided level at which the percentile CI would exclude 0 (not a
    test built by recentring the statistic under the null); its floor is 2 / (B + 1).
    """
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a has {ma.shape[1]} examples but b has {mb.shape[1]}; they must be paired")
    n_examples = ma.shape[1]
    draws = []
    for size in _chunks(n_boot, n_examples):
        example_counts = _counts(rng, size, n_examples)
        draws.append(_resampled_mean(ma, _counts(rng, size, ma.shape[0]), example_counts)
                     - _resampled_mean(mb, _counts(rng, size, mb.shape[0]), example_counts))
    d = np.concatenate(draws)
    lo, hi = _percentiles(d, level)
    tail = min((np.sum(d <= 0) + 1) / (n_boot + 1), (np.sum(d >= 0) + 1) / (n_boot + 1))
    return PairedDiff(float(ma.mean() - mb.mean()), lo, hi, float(min(1.0, 2.0 * tail)))


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in the input order (NaN entries stay NaN and do
    not count towards the family size)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="mergesort")]
    m = len(order)
    # step-down: the i-th smallest is multiplied by (m - i), then made monotone
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def correlation(x, y) -> Correlation:
    """Pearson r and Spearman rho of x and y with their two-sided p-values.

    Pairs with a non-finite entry are dropped; with fewer than 3 pairs left, or a constant
    variable, every entry is NaN (n is still reported).
    """
    from scipy import stats  # imported here: only the report needs scipy

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} but y has {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    return Correlation(float(pearson.statistic), float(pearson.pvalue),
                       float(spearman.statistic), float(spearman.pvalue), n)
