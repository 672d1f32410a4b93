"""k-center greedy: planted clusters are all covered first, determinism, and scoring through
the tiny model's mean-pooled hidden states."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.kcenter import KCenterParams, KCenterSelector
from igds.core.config import ConfigError
from igds.core.context import ScoringContext
from igds.core.data import make_record
from igds.core.diversity import kcenter_order
from igds.core.models.loading import LoadedModel
from igds.core.pooling import mean_pooled_hidden
from igds.core.tokens import tokenize_records
from tests.conftest import build_char_tokenizer, build_tiny_model

SIZES = (100, 40, 10, 3, 1)  # points per cluster: random picks rarely reach the small ones


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Five well-separated Gaussian blobs in 8-D (centers 20 apart, spread 1): points, labels."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(len(SIZES), 8))
    centers *= 20 / np.linalg.norm(centers[:, None] - centers[None], axis=-1)[np.triu_indices(5, 1)].min()
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    x = centers[labels] + rng.normal(size=(len(labels), 8))
    perm = rng.permutation(len(labels))
    return x[perm], labels[perm]


def test_first_picks_cover_every_cluster(blobs):
    x, labels = blobs
    for first in (0, 17, 99):
        order = kcenter_order(x, first)
        assert set(labels[order[:len(SIZES)]]) == set(range(len(SIZES)))
    random_picks = np.random.default_rng(0).choice(len(x), len(SIZES), replace=False)
    assert len(set(labels[random_picks])) < len(SIZES)


def test_order_is_a_permutation_and_max_select_keeps_the_prefix(blobs):
    x, _ = blobs
    full = kcenter_order(x, first=3)
    partial = kcenter_order(x, first=3, max_select=7)
    assert full[0] == 3
    assert sorted(full) == list(range(len(x))) and sorted(partial) == list(range(len(x)))
    np.testing.assert_array_equal(partial[:7], full[:7])
    np.testing.assert_array_equal(kcenter_order(x, first=3), full)


def test_greedy_picks_the_farthest_point():
    x = np.array([[0.0], [1.0], [10.0], [4.0], [6.0]])
    # 0 -> 10 (farthest) -> 4 or 6 (both 4 from a center; lowest index wins) -> ...
    assert list(kcenter_order(x, first=0)[:3]) == [0, 2, 3]


def _groups() -> list:
    digits = [make_record(f"{i}{i + 1}{i + 2} {i * 7}", "", f"{i * 3}{i}{i}", "digits", "t") for i in range(6)]
    letters = [make_record("zzzz yyyy xxxx", "", "qqqq wwww " + "abcdef"[i], "letters", "t") for i in range(6)]
    return digits + letters


@pytest.fixture(scope="module")
def tiny():
    return LoadedModel(build_tiny_model(seed=0), build_char_tokenizer(), "tiny")


def test_score_through_the_tiny_model(tiny):
    pool = _groups()
    ctx = ScoringContext(seed=0, target=[], batch_size=4, loader=lambda: tiny)
    result = KCenterSelector(KCenterParams()).score(pool, ctx)
    scores = result.scores
    assert scores.shape == (len(pool),)
    assert sorted(scores) == list(range(1, len(pool) + 1))
    first, second = np.argsort(-scores)[:2]
    assert pool[first].task != pool[second].task
    assert result.info["layer"] == 3  # -1: the tiny model's last decoder layer
    np.testing.assert_array_equal(scores, KCenterSelector(KCenterParams()).score(pool, ctx).scores)  # same seed
    other = KCenterSelector(KCenterParams()).score(pool, ScoringContext(seed=1, target=[], loader=lambda: tiny)).scores
    assert (other != scores).any()  # the seed draws the first center


def test_embeddings_ignore_padding_and_batching(tiny):
    pool = _groups()
    pad = tiny.tokenizer.pad_token_id
    alone = mean_pooled_hidden(tiny.model, tokenize_records(tiny.tokenizer, pool[:1], 384), 1, 1, pad)[0]
    batched, n_tokens = mean_pooled_hidden(tiny.model, tokenize_records(tiny.tokenizer, pool, 384), 1, 12, pad)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    assert batched.shape == (len(pool), 32) and n_tokens > 0


def test_layer_outside_the_model_is_a_config_error(tiny):
    ctx = ScoringContext(seed=0, target=[], loader=lambda: tiny)
    with pytest.raises(ConfigError, match="methods.kcenter.layer"):
        KCenterSelector(KCenterParams(layer=4)).score(_groups(), ctx)
