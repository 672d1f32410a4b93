"""Bootstrap CIs, paired bootstrap tests, Holm and correlations: planted effects are
found, null effects are not, and the null p-values are roughly calibrated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from igds.stats import bootstrap_ci, correlation, holm, paired_bootstrap


def test_planted_difference_is_found():
    rng = np.random.default_rng(0)
    b = rng.normal(0.0, 1.0, size=200)
    a = b + 0.3 + rng.normal(0.0, 1.0, size=200)
    d = paired_bootstrap(a, b, np.random.default_rng(1))
    assert d.diff == pytest.approx(float(np.mean(a - b)))
    assert 0.0 < d.lo < d.diff < d.hi
    assert d.p_value < 0.01


def test_no_difference_is_not_found():
    rng = np.random.default_rng(2)
    b = rng.normal(0.0, 1.0, size=200)
    a = b + rng.normal(0.0, 1.0, size=200)
    d = paired_bootstrap(a, b, np.random.default_rng(3))
    assert d.lo < 0.0 < d.hi
    assert d.p_value > 0.05


def test_null_p_values_are_roughly_calibrated():
    rng = np.random.default_rng(4)
    p = []
    for _ in range(200):
        b = rng.normal(size=(1, 60))
        a = b + rng.normal(size=(1, 60))  # same mean: the null holds
        p.append(paired_bootstrap(a, b, rng, n_boot=400).p_value)
    share = np.mean(np.asarray(p) < 0.05)
    assert 0.01 <= share <= 0.12


def test_paired_bootstrap_with_several_seeds_per_arm():
    rng = np.random.default_rng(5)
    example = rng.normal(size=150)
    a = example + 0.5 + rng.normal(0.0, 0.3, size=(3, 150))
    b = example + rng.normal(0.0, 0.3, size=(2, 150))
    d = paired_bootstrap(a, b, np.random.default_rng(6), n_boot=1000)
    assert d.diff == pytest.approx(a.mean() - b.mean())
    assert d.lo > 0.0 and d.p_value < 0.01
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
