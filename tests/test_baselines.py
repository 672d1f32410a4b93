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


def _reference_ifd(model, tokenizer, record) -> float:
    """Cherry_LLM's chat-model IFD, step by step (data_analysis_vic.py's
    get_perplexity_and_embedding_part_text and data_by_IFD_vic.py's get_loss_part_text), with this
    tokenizer's template in place of Vicuna's: per-token losses of the whole text, those from the
    first token of the output's last occurrence on, averaged; conditioned / alone."""
    import torch

    from baselines.ifd import assistant_header

    def mean_loss(text: str, target: str) -> float:
        ids = tokenizer.encode(text, return_tensors="pt")
        start = len(tokenizer.encode(text[:text.rfind(target)]))
        with torch.no_grad():
            logits = model(ids).logits[0]
        losses = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
        return float(losses[start - 1:].mean())

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": record.prompt}], add_generation_prompt=True,
                                           tokenize=False)
    return mean_loss(prompt + record.output, record.output) / mean_loss(assistant_header(tokenizer) + record.output,
                                                                        record.output)


def test_ifd_scores_are_the_references_chat_model_scores(trained_tiny):
    """IFD as its authors' chat-model path computes it (the assistant header before the response
    alone; the output's own tokens in both means), transcribed from their code: the same values."""
    model, tokenizer = trained_tiny
    rng = np.random.default_rng(7)
    pool = [copy_record(random_word(rng)) for _ in range(4)] + [copy_record(random_word(rng), random_word(rng))
                                                                 for _ in range(4)] + [fluent_record(i) for i in range(3)]
    result = selector_for("ifd").score(pool, ctx_for(model, tokenizer))
    reference = np.array([_reference_ifd(model, tokenizer, r) for r in pool])
    kept = reference < 1
    np.testing.assert_allclose(result.scores[kept], reference[kept], rtol=1e-4)
    assert np.isnan(result.scores[~kept]).all() and kept.sum() >= 4


def test_random_has_its_own_seed_defaulting_to_the_global_one():
    pool = [make_record(f"q{i}", "", f"a{i}", "t", "test") for i in range(50)]
    draw = lambda raw, seed: selector_for("random", raw).score(pool, ScoringContext(seed=seed, target=[])).scores  # noqa: E731
    assert np.array_equal(draw({}, 3), draw({"seed": None}, 3))
    assert np.array_equal(draw({"seed": 7}, 3), draw({}, 7))  # its own seed replaces the global one
    assert not np.array_equal(draw({"seed": 7}, 3), draw({}, 3))
