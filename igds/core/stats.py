"""Uncertainty for the benchmark table: bootstrap CIs over seeds and eval examples, paired
bootstrap CIs and paired sign-flip permutation tests between methods, Holm's correction, and
the amplification correlation.

Pure numpy and scipy; no file io. The eval examples are the unit of resampling, so a method
is compared on the same questions as its reference; when a method was trained with several
seeds, the seeds are resampled too (a two-level bootstrap, and a seed term in the
permutation null), so intervals and p-values also carry training-seed variance.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

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
class PairedCI:
    diff: float  # grand mean of a minus grand mean of b
    lo: float
    hi: float


@dataclass(frozen=True)
class PermutationTest:
    diff: float  # the statistic: grand mean of a minus grand mean of b
    p_value: float  # two-sided
    n_perm: int  # null draws: n_perm asked for, or 2**n_examples when exact
    exact: bool  # every sign flip enumerated (p is exact, not Monte Carlo)


@dataclass(frozen=True)
class Correlation:
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int


def _as_levels(values: np.ndarray, name: str, levels: tuple[str, ...]) -> np.ndarray:
    """A non-empty, finite float array with one axis per level (e.g. seeds, examples); an array
    with one axis fewer is one member of the outermost level."""
    m = np.asarray(values, dtype=float)
    if m.ndim == len(levels) - 1:
        m = m[None]
    if m.ndim != len(levels) or 0 in m.shape:
        shape = ", ".join(f"n_{level}" for level in levels)
        raise ValueError(f"{name} must be a non-empty [{shape}] array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite values")
    return m


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """[n_seeds, n_examples] float array; a 1-D array is one seed."""
    return _as_levels(values, name, ("seeds", "examples"))


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
                     level: float = 0.95) -> PairedCI:
    """Paired bootstrap CI of (grand mean of a) - (grand mean of b) on the same eval examples.

    a [n_seeds_a, n_examples] and b [n_seeds_b, n_examples] must have their columns in the
    same example order. Each draw resamples the examples once for both arms (paired) and
    the seeds of each arm independently. The CI is the percentile interval of the drawn
    differences; its p-value is paired_permutation_test's, not read off these draws.
    """
    ma, mb = _paired(a, b)
    n_examples = ma.shape[1]
    draws = []
    for size in _chunks(n_boot, n_examples):
        example_counts = _counts(rng, size, n_examples)
        draws.append(_resampled_mean(ma, _counts(rng, size, ma.shape[0]), example_counts)
                     - _resampled_mean(mb, _counts(rng, size, mb.shape[0]), example_counts))
    lo, hi = _percentiles(np.concatenate(draws), level)
    return PairedCI(float(ma.mean() - mb.mean()), lo, hi)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"a has {ma.shape[1]} examples but b has {mb.shape[1]}; they must be paired")
    return ma, mb


def _seed_scale(m: np.ndarray) -> float:
    """Scale turning the centred bootstrap of m's seed means into a draw with the training-seed
    variance component's variance, sigma_u^2 / S; 0 with one seed or no excess seed spread.

    Two-way ANOVA of m [S, N] (seeds x examples, no replication): the seed means m_s have
    E[var(m_s)] = sigma_u^2 + sigma_e^2 / N, the residual mean square estimates sigma_e^2,
    so sigma_u^2 ~ var(m_s) - MSE / N (truncated at 0). The per-example part sigma_e^2 / N is
    already in the sign-flip null; counting it again would make the test conservative.
    A bootstrap mean of S seeds has variance (S - 1) / S * var(m_s) / S, hence the scale.
    """
    n_seeds = m.shape[0]
    sigma_u2, var_seed = _row_component(m)
    if var_seed <= 0.0:
        return 0.0
    return math.sqrt(sigma_u2 * n_seeds / ((n_seeds - 1) * var_seed))


def _row_component(m: np.ndarray) -> tuple[float, float]:
    """(the ANOVA estimate of the row variance component of m [R, N] (rows x examples, no
    replication): var(row means) - residual mean square / N, truncated at 0; var(row means)).
    Both 0 with fewer than 2 rows or examples."""
    n_rows, n_examples = m.shape
    if n_rows < 2 or n_examples < 2:
        return 0.0, 0.0
    row_means = m.mean(axis=1)
    var_rows = float(np.var(row_means, ddof=1))
    residual = m - m.mean(axis=0) - row_means[:, None] + m.mean()
    mse = float((residual ** 2).sum()) / ((n_rows - 1) * (n_examples - 1))
    return max(0.0, var_rows - mse / n_examples), var_rows


def _seed_term(m: np.ndarray, scale: float, rng: np.random.Generator, n_draws: int) -> np.ndarray:
    """[n_draws] scale * (mean of S seed means drawn with replacement - their mean)."""
    seed_means = m.mean(axis=1)
    drawn = _counts(rng, n_draws, len(seed_means)) @ seed_means / len(seed_means)
    return scale * (drawn - seed_means.mean())


# scipy >= 1.15 takes `rng`; older releases the same Generator as `random_state`
_RNG_KW = "rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state"


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _two_sided_p(null: np.ndarray, observed: float, exact: bool) -> float:
    """scipy.stats.permutation_test's two-sided p of `observed` against `null` (same
    tie tolerance, +1 for a Monte Carlo null)."""
    gamma = abs(np.finfo(float).eps * 100 * observed)
    adjustment = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / (len(null) + adjustment)
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / (len(null) + adjustment)
    return float(min(1.0, 2.0 * min(less, greater)))


def paired_permutation_test(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                            n_perm: int = 10000) -> PermutationTest:
    """Two-sided paired sign-flip permutation test of mean(a) = mean(b) on the same examples.

    a [n_seeds_a, n_examples], b [n_seeds_b, n_examples], columns in the same example order.
    The statistic is T = mean_i (a_i - b_i), with a_i, b_i the example's mean over that
    arm's seeds. Under the null the two arms are exchangeable on each example, so
    scipy.stats.permutation_test(permutation_type="samples") swaps a_i and b_i
    independently per example (a sign flip of the difference); it enumerates all 2**n
    flips, an exact test, when 2**n <= n_perm, and draws n_perm random flips otherwise.

    Seeds: a flip cannot move a training-seed offset shared by every example of a run
    (flipped, it averages out), so with several seeds each null draw adds a seed term per
    arm: the arm's seed means resampled with replacement and centred on their mean, scaled
    to the ANOVA estimate of the seed variance component (_seed_scale). The null is then
    T* = (sign-flipped mean) + (seed term of a) - (seed term of b), n_perm Monte Carlo draws
    (not exact). An arm with one seed, or whose seed means spread no more than per-example
    noise explains, contributes no seed term. p follows scipy's two-sided rule,
    2 * min(P(T* <= T), P(T* >= T)), capped at 1; a Monte Carlo p is >= 2 / (n_perm + 1).
    """
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm = {n_perm!r} must be a positive integer")
    ma, mb = _paired(a, b)
    n_examples = ma.shape[1]
    if n_examples < 2:
        raise ValueError("a permutation test needs at least 2 paired examples")
    flips = stats.permutation_test(
        (ma.mean(axis=0), mb.mean(axis=0)), _mean_diff, permutation_type="samples", vectorized=True,
        n_resamples=int(n_perm), batch=max(1, _CHUNK_CELLS // n_examples), alternative="two-sided",
        **{_RNG_KW: rng})
    observed = float(flips.statistic)
    scales = (_seed_scale(ma), _seed_scale(mb))
    if scales == (0.0, 0.0):
        return PermutationTest(observed, float(flips.pvalue), int(len(flips.null_distribution)),
                               2 ** n_examples <= n_perm)  # scipy's rule for enumerating
    # an exact flip null (few examples) is repeated to n_perm draws, each paired with a seed term
    null = np.resize(flips.null_distribution, int(n_perm))
    null = null + _seed_term(ma, scales[0], rng, int(n_perm)) - _seed_term(mb, scales[1], rng, int(n_perm))
    return PermutationTest(observed, _two_sided_p(null, observed, exact=False), int(n_perm), False)


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


def minimal_detectable_difference(lo, hi, level: float = 0.95, power: float = 0.8, m: int = 1) -> np.ndarray:
    """The smallest true difference a two-sided test at 1 - `level` (Bonferroni over `m`
    comparisons: Holm's first step) detects with probability `power`, given the difference's
    CI [lo, hi]: the normal approximation (z_{1 - a/2m} + z_power) x SE, with the standard error
    read from the CI's width (SE = (hi - lo) / 2 z_{1 - a/2}). NaN where the CI is."""
    alpha = 1.0 - level
    z_ci = stats.norm.ppf(1 - alpha / 2)
    se = (np.asarray(hi, dtype=float) - np.asarray(lo, dtype=float)) / (2 * z_ci)
    return (stats.norm.ppf(1 - alpha / (2 * max(m, 1))) + stats.norm.ppf(power)) * se


def correlation(x, y) -> Correlation:
    """Pearson r and Spearman rho of x and y with their two-sided p-values.

    Pairs with a non-finite entry are dropped; with fewer than 3 pairs left, or a constant
    variable, every entry is NaN (n is still reported).
    """
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


@dataclass(frozen=True)
class ProxyAgreement:
    """How well a cheap proxy ranks recipes the way full-fidelity training does (recipe search)."""

    rho: float  # Spearman rho: proxy vs the full-fidelity mean over seeds, across recipes
    lo: float  # percentile bootstrap CI over recipes
    hi: float
    ceiling: float  # noise ceiling: rho between the means of two halves of the seeds (mean over splits)
    ceiling_lo: float
    ceiling_hi: float
    n_recipes: int
    n_seeds: int


def _seed_splits(n_seeds: int) -> list[tuple[list[int], list[int]]]:
    """Every split of the seeds into two halves as equal as possible (each split once)."""
    from itertools import combinations  # noqa: PLC0415

    half = n_seeds // 2
    seen, out = set(), []
    for a in combinations(range(n_seeds), half):
        b = tuple(i for i in range(n_seeds) if i not in a)
        if (b, a) not in seen:
            seen.add((a, b))
            out.append((list(a), list(b)))
    return out


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair of x, y [n_draws, n] (average ranks for ties)."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / den, np.nan)


def _finite_percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of the finite draws; NaN when none is (a rank correlation of a
    constant, e.g. every recipe at exact match 0, is undefined)."""
    finite = draws[np.isfinite(draws)]
    return _percentiles(finite, level) if len(finite) else (math.nan, math.nan)


def proxy_agreement(proxy, full, rng: np.random.Generator, n_boot: int = 2000, level: float = 0.95) -> ProxyAgreement:
    """Spearman rho between a proxy's value of each recipe (`proxy` [n_recipes]) and its
    full-fidelity value (`full` [n_recipes, n_seeds], averaged over seeds), with a percentile
    bootstrap CI over recipes; beside it the noise ceiling, the rho full fidelity reaches
    against itself: between the mean of one half of the seeds and the other's, averaged over
    the splits (with 3 seeds, 1 against 2), resampled over recipes the same way."""
    proxy, full = np.asarray(proxy, dtype=float), np.asarray(full, dtype=float)
    if full.ndim != 2 or full.shape[0] != len(proxy):
        raise ValueError(f"full must be [n_recipes = {len(proxy)}, n_seeds], got shape {full.shape}")
    n, n_seeds = full.shape
    if n < 3 or n_seeds < 2:
        raise ValueError(f"proxy_agreement needs >= 3 recipes and >= 2 seeds; got {n} and {n_seeds}")
    idx = np.concatenate([np.arange(n)[None], rng.integers(0, n, size=(n_boot, n))])  # row 0: the data as is
    mean = full.mean(1)
    rho = _spearman_rows(proxy[idx], mean[idx])
    halves = [_spearman_rows(full[:, a].mean(1)[idx], full[:, b].mean(1)[idx]) for a, b in _seed_splits(n_seeds)]
    with warnings.catch_warnings():  # a draw whose every split is undefined stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        ceiling = np.nanmean(np.stack(halves), axis=0)
    (lo, hi), (c_lo, c_hi) = _finite_percentiles(rho[1:], level), _finite_percentiles(ceiling[1:], level)
    return ProxyAgreement(float(rho[0]), lo, hi, float(ceiling[0]), c_lo, c_hi, n, n_seeds)


# ---- redraws (issue 34): draws x training seeds x eval examples --------------------------------
#
# A study redraws the whole procedure (the prior, the pool, the SAE's seed, so identification and
# selection) D times on one fixed eval split; each draw trains S seeds per arm. An arm's values are
# then [D, S, N]; the arms of one draw are paired (same pool), and every draw shares the examples.

LEVELS = ("draws", "seeds", "examples")


@dataclass(frozen=True)
class VarianceSplit:
    """Bootstrap standard deviation of a statistic with one level resampled at a time (the rest
    held at what was observed), and with all three: how its uncertainty splits among the
    draws of the procedure, the training seeds within a draw and the eval examples."""
    draws: float
    seeds: float
    examples: float
    total: float


def _as_nested(values: np.ndarray, name: str) -> np.ndarray:
    """[n_draws, n_seeds, n_examples] float array; a 2-D array is one draw."""
    return _as_levels(values, name, LEVELS)


def _nested_paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = _as_nested(a, "a"), _as_nested(b, "b")
    if ma.shape[0] != mb.shape[0] or ma.shape[2] != mb.shape[2]:
        raise ValueError(f"a is {ma.shape} and b {mb.shape} (draws, seeds, examples): the arms must share "
                         "the draws and the eval examples to be paired")
    return ma, mb


def _nested_mean(m: np.ndarray, draw_idx: np.ndarray, seed_w: np.ndarray, example_w: np.ndarray) -> np.ndarray:
    """[B] grand means of m [D, S, N] over the draws draw_idx [B, D] (indices, with
    replacement), the seed counts seed_w [B, D, S] of each drawn draw (a draw drawn twice gets
    two seed resamples) and the example counts example_w [B, N]; no [B, D, S, N] array is built."""
    n_draws, n_seeds, n_examples = m.shape
    cell = (m.reshape(n_draws * n_seeds, n_examples) @ example_w.T).T.reshape(-1, n_draws, n_seeds) / n_examples
    drawn = np.take_along_axis(cell, draw_idx[:, :, None], axis=1)  # [B, D, S]: the drawn draws' cells
    return (drawn * seed_w).sum(axis=(1, 2)) / (n_draws * n_seeds)


def _level_counts(rng: np.random.Generator, size: int, n: int, on: bool) -> np.ndarray:
    return _counts(rng, size, n) if on else np.ones((size, n))


def nested_bootstrap(a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator, n_boot: int = 2000,
                     resample: tuple[str, ...] = LEVELS) -> np.ndarray:
    """[n_boot] bootstrap draws of mean(a) (or mean(a) - mean(b)) over a [D, S, N] (b [D, S', N]).

    A hierarchical bootstrap: the draws are resampled with replacement (the same draws for both
    arms: they are paired), then within each drawn draw its seeds (each arm its own), and the eval
    examples once for everything (every draw and arm is measured on the same examples). `resample`
    names the levels that are resampled; the others stay as observed (variance_split). Resampling
    every level is conservative: a draw's mean already carries some of its seeds' and examples'
    noise, which the lower levels then add again."""
    unknown = set(resample) - set(LEVELS)
    if unknown:
        raise ValueError(f"resample {sorted(unknown)}: the levels are {LEVELS}")
    arms = [_as_nested(a, "a")] if b is None else list(_nested_paired(a, b))
    n_draws, _, n_examples = arms[0].shape
    out = []
    for size in _chunks(n_boot, n_examples * n_draws * max(arm.shape[1] for arm in arms)):
        draw_idx = (rng.integers(0, n_draws, size=(size, n_draws)) if "draws" in resample
                    else np.broadcast_to(np.arange(n_draws), (size, n_draws)))
        example_w = _level_counts(rng, size, n_examples, "examples" in resample)
        means = []
        for arm in arms:
            n_seeds = arm.shape[1]
            seed_w = (_level_counts(rng, size * n_draws, n_seeds, "seeds" in resample)
                      .reshape(size, n_draws, n_seeds))
            means.append(_nested_mean(arm, draw_idx, seed_w, example_w))
        out.append(means[0] if b is None else means[0] - means[1])
    return np.concatenate(out)


def _nested_interval(estimate: float, boot: np.ndarray, n_draws: int, level: float) -> tuple[float, float]:
    """With one draw the percentile interval of the bootstrap; with D >= 2 draws the estimate
    +- t_{D-1} x the bootstrap SD. A percentile interval over 5 resampled clusters under-covers (88%
    of 200 simulated null studies at 95%, draws dominating), as with few clusters in any cluster
    bootstrap; t critical values on D - 1 degrees of freedom (Cameron, Gelbach & Miller 2008) gave
    98% there, conservative as resampling every level is."""
    if n_draws < 2:
        return _percentiles(boot, level)
    half = float(stats.t.ppf(1 - (1 - level) / 2, n_draws - 1) * np.std(boot, ddof=1))
    return estimate - half, estimate + half


def nested_ci(a: np.ndarray, rng: np.random.Generator, n_boot: int = 2000, level: float = 0.95) -> BootstrapCI:
    """CI of an arm's grand mean over draws x seeds x examples (nested_bootstrap, _nested_interval);
    n_seeds counts the draws' runs (draws x seeds)."""
    m = _as_nested(a, "a")
    lo, hi = _nested_interval(float(m.mean()), nested_bootstrap(m, None, rng, n_boot), m.shape[0], level)
    return BootstrapCI(float(m.mean()), lo, hi, m.shape[0] * m.shape[1], m.shape[2])


def nested_paired_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                     level: float = 0.95) -> PairedCI:
    """CI of mean(a) - mean(b), draws paired, seeds per arm, examples shared (_nested_interval)."""
    ma, mb = _nested_paired(a, b)
    diff = float(ma.mean() - mb.mean())
    lo, hi = _nested_interval(diff, nested_bootstrap(ma, mb, rng, n_boot), ma.shape[0], level)
    return PairedCI(diff, lo, hi)


def variance_split(a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator, n_boot: int = 2000) -> VarianceSplit:
    """The bootstrap SD of mean(a) (- mean(b)) resampling only the draws, only the seeds, only
    the examples, and all three (nested_bootstrap). A level with one member contributes 0."""
    sd = {level: float(np.std(nested_bootstrap(a, b, rng, n_boot, (level,)), ddof=1)) for level in LEVELS}
    return VarianceSplit(sd["draws"], sd["seeds"], sd["examples"],
                         float(np.std(nested_bootstrap(a, b, rng, n_boot), ddof=1)))


def draws_permutation_test(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                           n_perm: int = 10000) -> PermutationTest:
    """Two-sided paired test of mean(a) = mean(b) whose null respects the draws.

    d[j, i] = (a's mean over its seeds - b's) on draw j and example i. The statistic is the
    mean of d. Under the null the arms are exchangeable on each example (a sign flip of
    mean_j d[j, i], as paired_permutation_test), and a draw's offset shared by all its examples
    (its pool, its identification, its selection, its seeds) cannot be flipped, so each null
    draw adds a draw term: the ANOVA estimate of the draw variance component (draws x examples;
    the seeds' variance within a draw is part of it) over D, times a Student t with D - 1 degrees
    of freedom, as that estimate has D - 1. With one draw, or draws that spread no more than
    example noise explains, the test is paired_permutation_test's sign flip. The study also
    reports draw_t_test (the draws alone as the unit)."""
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm = {n_perm!r} must be a positive integer")
    ma, mb = _nested_paired(a, b)
    d = ma.mean(axis=1) - mb.mean(axis=1)
    n_examples = d.shape[1]
    if n_examples < 2:
        raise ValueError("a permutation test needs at least 2 paired examples")
    flips = stats.permutation_test(
        (d.mean(axis=0), np.zeros(n_examples)), _mean_diff, permutation_type="samples", vectorized=True,
        n_resamples=int(n_perm), batch=max(1, _CHUNK_CELLS // n_examples), alternative="two-sided",
        **{_RNG_KW: rng})
    observed = float(flips.statistic)
    n_draws = d.shape[0]
    sigma_d2 = _row_component(d)[0]  # the draw variance component (ANOVA, draws x examples)
    if sigma_d2 == 0.0:
        return PermutationTest(observed, float(flips.pvalue), int(len(flips.null_distribution)),
                               2 ** n_examples <= n_perm)
    # the draw term: N(0, sigma_d^2 / D) with sigma_d^2 estimated on D - 1 degrees of freedom, so a
    # Student t with D - 1 df (a normal term, like the seeds', rejects ~1 in 4 true nulls at 0.05 with 5 draws)
    term = math.sqrt(sigma_d2 / n_draws) * rng.standard_t(n_draws - 1, size=int(n_perm))
    null = np.resize(flips.null_distribution, int(n_perm)) + term
    return PermutationTest(observed, _two_sided_p(null, observed, exact=False), int(n_perm), False)


def draw_t_test(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(the per-draw differences of the grand means, the two-sided p of a one-sample t-test of
    them against 0 with D - 1 degrees of freedom: the procedure as the only unit; NaN with fewer
    than 2 draws or no spread)."""
    ma, mb = _nested_paired(a, b)
    per_draw = ma.mean(axis=(1, 2)) - mb.mean(axis=(1, 2))
    if len(per_draw) < 2 or np.ptp(per_draw) == 0.0:
        return per_draw, float("nan")
    return per_draw, float(stats.ttest_1samp(per_draw, 0.0).pvalue)
