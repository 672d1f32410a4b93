"""Bootstrap CIs, paired bootstrap CIs, paired permutation tests, Holm and correlations:
planted effects are found, null effects are not, the null p-values are roughly calibrated
(also with training-seed offsets), and a small case matches a hand enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from igds.core.stats import _two_sided_p, bootstrap_ci, correlation, holm, paired_bootstrap, paired_permutation_test


def test_planted_difference_is_found():
    rng = np.random.default_rng(0)
    b = rng.normal(0.0, 1.0, size=200)
    a = b + 0.3 + rng.normal(0.0, 1.0, size=200)
    d = paired_bootstrap(a, b, np.random.default_rng(1))
    assert d.diff == pytest.approx(float(np.mean(a - b)))
    assert 0.0 < d.lo < d.diff < d.hi
    test = paired_permutation_test(a, b, np.random.default_rng(1), n_perm=2000)
    assert test.diff == pytest.approx(d.diff) and test.p_value < 0.01
    assert (test.n_perm, test.exact) == (2000, False)


def test_no_difference_is_not_found():
    rng = np.random.default_rng(2)
    b = rng.normal(0.0, 1.0, size=200)
    a = b + rng.normal(0.0, 1.0, size=200)
    d = paired_bootstrap(a, b, np.random.default_rng(3))
    assert d.lo < 0.0 < d.hi
    assert paired_permutation_test(a, b, np.random.default_rng(3), n_perm=2000).p_value > 0.05


def test_null_p_values_are_roughly_uniform():
    rng = np.random.default_rng(4)
    p = []
    for _ in range(200):
        b = rng.normal(size=(1, 60))
        a = b + rng.normal(size=(1, 60))  # same mean: the null holds
        p.append(paired_permutation_test(a, b, rng, n_perm=500).p_value)
    p = np.asarray(p)
    assert 0.4 <= p.mean() <= 0.6
    assert 0.01 <= np.mean(p < 0.05) <= 0.1


def test_a_strong_effect_is_not_held_at_the_bootstrap_floor():
    # the old p was read off the bootstrap CI: never below 2 / (n_boot + 1) (0.00995 for n_boot = 200)
    rng = np.random.default_rng(13)
    b = rng.normal(size=100)
    a = b + 2.0 + rng.normal(0.0, 0.5, size=100)
    test = paired_permutation_test(a, b, np.random.default_rng(14), n_perm=100_000)
    assert test.p_value < 1e-4
    assert test.p_value == pytest.approx(2.0 / (100_000 + 1))  # no flip reaches it: the Monte Carlo floor


def test_small_n_matches_a_hand_enumeration():
    a = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 2.0])
    b = np.zeros(6)
    test = paired_permutation_test(a, b, np.random.default_rng(0), n_perm=10000)
    # all six differences are positive: of the 2^6 flips only the identity reaches T, so
    # P(T* >= T) = 1/64, P(T* <= T) = 1 and p = 2/64
    assert test.exact and test.n_perm == 64 and test.p_value == pytest.approx(2 / 64)

    d = np.array([0.5, -1.0, 2.0, 1.5, -0.25, 3.0, 0.75])
    base = np.random.default_rng(1).normal(size=7)
    null = np.array([np.mean(np.multiply(signs, d)) for signs in itertools.product((1, -1), repeat=7)])
    observed = d.mean()
    expected = 2 * min(np.mean(null <= observed + 1e-12), np.mean(null >= observed - 1e-12))
    test = paired_permutation_test(base + d, base, np.random.default_rng(0), n_perm=200)
    assert test.exact and test.n_perm == 128 and test.p_value == pytest.approx(expected)
    assert 0.01 < expected < 0.2  # a case where the count is neither 1 nor all


def test_more_examples_than_the_enumeration_budget_is_monte_carlo():
    rng = np.random.default_rng(15)
    b = rng.normal(size=20)
    test = paired_permutation_test(b + 0.2, b, np.random.default_rng(16), n_perm=1000)  # 2^20 > 1000
    assert (test.n_perm, test.exact) == (1000, False)
    with pytest.raises(ValueError, match="n_perm"):
        paired_permutation_test(b, b, rng, n_perm=0)
    with pytest.raises(ValueError, match="paired"):
        paired_permutation_test(b, b[:10], rng)


def test_two_sided_p_rule_is_scipys():
    rng = np.random.default_rng(17)
    x = np.round(rng.normal(size=40), 1)  # ties in the null
    y = np.round(rng.normal(size=40), 1)
    res = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                                 vectorized=True, n_resamples=999, rng=np.random.default_rng(18))
    assert _two_sided_p(res.null_distribution, float(res.statistic), exact=False) == pytest.approx(res.pvalue)


def test_seed_offsets_without_a_method_effect_are_not_significant():
    # each training run shifts every example by its own offset: sign flips cancel a shared
    # offset, so a test on seed means alone rejects far too often; the seed term fixes that
    rng = np.random.default_rng(19)
    p_seeds, p_flips_only = [], []
    for _ in range(150):
        difficulty = rng.normal(size=100)
        a = difficulty + rng.normal(0.0, 0.3, size=(3, 1)) + rng.normal(size=(3, 100))
        b = difficulty + rng.normal(0.0, 0.3, size=(3, 1)) + rng.normal(size=(3, 100))
        p_seeds.append(paired_permutation_test(a, b, rng, n_perm=500).p_value)
        p_flips_only.append(paired_permutation_test(a.mean(axis=0), b.mean(axis=0), rng, n_perm=500).p_value)
    assert np.mean(np.asarray(p_flips_only) < 0.05) > 0.3
    assert np.mean(np.asarray(p_seeds) < 0.05) <= 0.15


def test_per_example_seed_noise_alone_keeps_the_test_calibrated():
    # seeds differ only example by example (no shared offset): no seed term is needed, and
    # the ANOVA estimate keeps the per-example noise from being counted twice
    rng = np.random.default_rng(20)
    p = []
    for _ in range(150):
        difficulty = rng.normal(size=80)
        a = difficulty + rng.normal(size=(3, 80))
        b = difficulty + rng.normal(size=(2, 80))
        p.append(paired_permutation_test(a, b, rng, n_perm=500).p_value)
    p = np.asarray(p)
    assert 0.4 <= p.mean() <= 0.62 and np.mean(p < 0.05) <= 0.1


def test_paired_bootstrap_with_several_seeds_per_arm():
    rng = np.random.default_rng(5)
    example = rng.normal(size=150)
    a = example + 0.5 + rng.normal(0.0, 0.3, size=(3, 150))
    b = example + rng.normal(0.0, 0.3, size=(2, 150))
    d = paired_bootstrap(a, b, np.random.default_rng(6), n_boot=1000)
    assert d.diff == pytest.approx(a.mean() - b.mean())
    assert d.lo > 0.0
    test = paired_permutation_test(a, b, np.random.default_rng(6), n_perm=2000)
    assert test.diff == pytest.approx(d.diff) and test.p_value < 0.01 and not test.exact
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(a, b[:, :100], rng)


def test_ci_covers_the_known_mean():
    values = np.random.default_rng(7).normal(2.0, 1.0, size=5000)
    ci = bootstrap_ci(values, np.random.default_rng(8))
    assert ci.lo < 2.0 < ci.hi and ci.hi - ci.lo < 0.1
    assert (ci.n_seeds, ci.n_examples) == (1, 5000)
    assert ci.mean == pytest.approx(values.mean())


def test_seed_level_resampling_widens_the_ci_when_seeds_differ():
    rng = np.random.default_rng(9)
    offsets = np.array([-0.5, 0.0, 0.5])[:, None]  # seeds differ systematically
    values = rng.normal(size=300) + offsets + rng.normal(0.0, 0.1, size=(3, 300))
    two_level = bootstrap_ci(values, np.random.default_rng(10))
    one_level = bootstrap_ci(values.mean(axis=0), np.random.default_rng(10))
    assert two_level.mean == pytest.approx(one_level.mean)
    assert two_level.hi - two_level.lo > 1.5 * (one_level.hi - one_level.lo)
    assert two_level.n_seeds == 3


def test_bootstrap_is_reproducible_with_the_same_rng():
    values = np.random.default_rng(11).normal(size=(2, 50))
    assert bootstrap_ci(values, np.random.default_rng(0)) == bootstrap_ci(values, np.random.default_rng(0))


def test_holm_matches_a_hand_computed_example():
    # sorted 0.01, 0.02, 0.03, 0.04 -> 4*0.01, 3*0.02, 2*0.03, 1*0.04 = .04 .06 .06 .04 -> monotone .04 .06 .06 .06
    adjusted = holm([0.03, 0.01, 0.04, 0.02])
    np.testing.assert_allclose(adjusted, [0.06, 0.04, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    with_nan = holm([0.01, math.nan, 0.04])
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], [0.02, 0.04])  # NaN is not in the family
    assert holm([]).shape == (0,)


def test_correlation_of_a_planted_linear_relation():
    rng = np.random.default_rng(12)
    x = rng.normal(size=40)
    c = correlation(x, 2.0 * x + rng.normal(0.0, 0.2, size=40))
    assert c.pearson_r > 0.9 and c.spearman_rho > 0.9
    assert c.pearson_p < 1e-6 and c.spearman_p < 1e-6 and c.n == 40


def test_correlation_is_nan_when_undefined():
    short = correlation([1.0, 2.0], [3.0, 5.0])
    assert short.n == 2 and all(math.isnan(v) for v in (short.pearson_r, short.pearson_p,
                                                          short.spearman_rho, short.spearman_p))
    assert math.isnan(correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).pearson_r)
    dropped = correlation([1.0, 2.0, math.nan, 3.0], [1.0, 2.5, 0.0, 3.5])
    assert dropped.n == 3 and dropped.pearson_r > 0.9


def test_proxy_agreement_finds_a_proxy_that_ranks_recipes_and_one_that_does_not():
    """Recipe search's proxy check: 16 recipes with a planted true value, 3 full-fidelity seeds
    with small noise; a proxy tracking the truth has a rho near the noise ceiling with a CI
    above 0, a proxy of noise has a CI across 0, and noisier seeds lower the ceiling."""
    from igds.core.stats import proxy_agreement

    rng = np.random.default_rng(0)
    truth = np.linspace(0.0, 1.0, 16)
    full = truth[:, None] + rng.normal(scale=0.05, size=(16, 3))
    proxy = truth + rng.normal(scale=0.05, size=16)
    good = proxy_agreement(proxy, full, np.random.default_rng(1), n_boot=1000)
    assert good.rho == pytest.approx(stats.spearmanr(proxy, full.mean(1)).statistic)
    assert good.rho > 0.8 and good.lo > 0.5 and good.n_recipes == 16 and good.n_seeds == 3
    assert good.ceiling > 0.9 and good.ceiling_lo <= good.ceiling <= good.ceiling_hi
    noise = proxy_agreement(rng.normal(size=16), full, np.random.default_rng(1), n_boot=1000)
    assert noise.lo < 0 < noise.hi
    noisy = proxy_agreement(truth, truth[:, None] + rng.normal(scale=1.0, size=(16, 3)), np.random.default_rng(1),
                            n_boot=1000)
    assert noisy.ceiling < good.ceiling
    with pytest.raises(ValueError, match=">= 2 seeds"):
        proxy_agreement(truth, full[:, :1], rng)


def test_proxy_agreement_of_a_constant_full_fidelity_is_undefined_not_a_crash():
    """Every recipe at the same full-fidelity value (e.g. exact match 0 on a weak model): no
    ranking to agree with, so rho, its CI and the ceiling are NaN."""
    from igds.core.stats import proxy_agreement

    a = proxy_agreement(np.linspace(0, 1, 5), np.zeros((5, 2)), np.random.default_rng(0), n_boot=200)
    assert all(math.isnan(v) for v in (a.rho, a.lo, a.hi, a.ceiling, a.ceiling_lo, a.ceiling_hi))
    assert (a.n_recipes, a.n_seeds) == (5, 2)


def test_minimal_detectable_difference_from_a_ci_width():
    """A paired SE of 0.03 (the issue's 100 eval problems): ~0.084 at 80% power, ~0.106 after
    Holm over 7 methods; NaN CIs stay NaN."""
    from igds.core.stats import minimal_detectable_difference

    half = 1.959964 * 0.03
    assert minimal_detectable_difference(-half, half) == pytest.approx((1.959964 + 0.841621) * 0.03, rel=1e-4)
    assert minimal_detectable_difference(-half, half, m=7) == pytest.approx((2.690110 + 0.841621) * 0.03, rel=1e-4)
    assert np.isnan(minimal_detectable_difference(np.nan, 0.1))
