"""Baselines on the Selector protocol with planted properties: full, random, loss, IFD."""

from __future__ import annotations

import numpy as np
import pytest

from igds.core.config import ConfigError
from igds.core.data import make_record
from igds.core.models.loading import LoadedModel
from igds.core.context import ScoringContext
from igds.core.registry import available
from igds.core.selection import select_top
from tests.conftest import copy_record, fluent_record, random_word, selector_for


def ctx_for(model, tokenizer, seed=0):
    return ScoringContext(seed=seed, target=[], batch_size=4, max_len=128,
                          loader=lambda: LoadedModel(model, tokenizer, "tiny"))


def test_registry_knows_every_method_and_validates_params():
    assert {"igds", "full", "random", "loss", "ifd"} <= set(available())
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        selector_for("nope")
    with pytest.raises(ConfigError, match=r"methods.loss.keep = 'middle' is not allowed; expected high or low"):
        selector_for("loss", {"keep": "middle"})
    with pytest.raises(ConfigError, match=r"unknown key methods.igds.kk"):
        selector_for("igds", {"kk": 1})


def test_random_is_seed_stable_and_differs_across_seeds():
    pool = [make_record(f"q{i}", "", f"a{i}", "t", "s") for i in range(50)]
    selector = selector_for("random")
    a = selector.score(pool, ScoringContext(seed=1, target=[])).scores
    b = selector.score(pool, ScoringContext(seed=1, target=[])).scores
    c = selector.score(pool, ScoringContext(seed=2, target=[])).scores
    np.testing.assert_array_equal(a, b)
    ids = [r.id for r in pool]
    assert select_top(ids, a, 0.5, 1) != select_top(ids, c, 0.5, 2)


def test_full_keeps_everything():
    pool = [make_record(f"q{i}", "", f"a{i}", "t", "s") for i in range(5)]
    selector = selector_for("full")
    assert selector.keeps_all and (selector.score(pool, ScoringContext(seed=0, target=[])).scores == 1).all()


def test_loss_ranks_gibberish_above_fluent(trained_tiny):
    model, tokenizer = trained_tiny
    gibberish = [make_record("Say a sentence.", "", text, "gibberish", "test")
                 for text in ("xq zvkw pj qqz rrt.", "mmk jj vz qxw plk.")]
    pool = [fluent_record(i) for i in range(3)] + gibberish
    high = selector_for("loss", {"keep": "high"}).score(pool, ctx_for(model, tokenizer)).scores
    assert high[3:].min() > high[:3].max()
    low = selector_for("loss", {"keep": "low"}).score(pool, ctx_for(model, tokenizer)).scores
    np.testing.assert_allclose(low, -high)


def test_ifd_is_lower_when_the_instruction_predicts_the_response(trained_tiny):
    model, tokenizer = trained_tiny
    rng = np.random.default_rng(5)
    words = [random_word(rng) for _ in range(6)]
    predictable = [copy_record(w) for w in words]  # the response copies the instruction
    unpredictable = [copy_record(w, random_word(rng)) for w in words]  # the instruction does not help
    result = selector_for("ifd").score(predictable + unpredictable, ctx_for(model, tokenizer))
    scores = result.scores
    # predictable ones have IFD well below 1; the rest either rank lower... or are dropped (IFD >= 1)
    assert np.all(scores[:6] < 0.2)
    unpred = scores[6:]
    assert np.all(np.isnan(unpred) | (unpred > scores[:6].max()))
    assert result.info["n_dropped_ifd_ge_1"] == int(np.isnan(scores).sum())


def test_random_has_its_own_seed_defaulting_to_the_global_one():
    pool = [make_record(f"q{i}", "", f"a{i}", "t", "test") for i in range(50)]
    draw = lambda raw, seed: selector_for("random", raw).score(pool, ScoringContext(seed=seed, target=[])).scores  # noqa: E731
    assert np.array_equal(draw({}, 3), draw({"seed": None}, 3))
    assert np.array_equal(draw({"seed": 7}, 3), draw({}, 7))  # its own seed replaces the global one
    assert not np.array_equal(draw({"seed": 7}, 3), draw({}, 3))
