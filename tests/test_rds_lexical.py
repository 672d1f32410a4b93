"""RDS+ (baselines/rds.py) against a transcription of its reference code's steps, and the
lexical baseline (baselines/lexical.py): each finds planted near-copies of the target task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.lexical import LexicalParams, LexicalSelector, similarities
from baselines.rds import RdsParams, RdsSelector, round_robin, weighted_embeddings
from igds.core.context import ScoringContext
from igds.core.data import make_record
from igds.core.models.loading import LoadedModel
from igds.core.tokens import tokenize_records
from tests.conftest import build_char_tokenizer, build_tiny_model


def reference_round_robin(sims: np.ndarray, output_size: int) -> list[int]:
    """get_top_influences.py's `max` method, step by step: per test point a list sorted by score
    (descending), popped in turn; a duplicate is appended, then removed with its turn spent."""
    lists = {t: sorted(((j, s) for j, s in enumerate(row)), key=lambda x: x[1], reverse=True)
             for t, row in enumerate(sims)}
    saved: list[int] = []
    while len(saved) < output_size:
        for t in lists:
            inst, _ = lists[t].pop(0)
            saved.append(inst)
            saved = list(dict.fromkeys(saved))  # remove_dupes_ordered
            if len(saved) >= output_size:
                break
    return saved[:output_size]


def test_round_robin_takes_candidates_as_the_reference_does():
    sims = np.array([[0.9, 0.8, 0.1, 0.0], [0.95, 0.2, 0.3, 0.1]])
    assert list(round_robin(sims)) == [0, 1, 2, 3]  # target 1's turn at depth 0 is spent on candidate 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        sims = rng.random((rng.integers(1, 6), rng.integers(2, 30)))
        assert list(round_robin(sims)) == reference_round_robin(sims, sims.shape[1])


@pytest.fixture(scope="module")
def tiny():
    return LoadedModel(build_tiny_model(seed=0), build_char_tokenizer(), "tiny")


def test_weighted_embeddings_are_the_reference_position_weighted_mean_whatever_the_padding(tiny):
    records = [make_record("add 12 and 3", "", "15", "t", "s"), make_record("zz", "", "yyyy yy", "u", "s")]
    tok = tokenize_records(tiny.tokenizer, records, 384)
    batched, n_tokens = weighted_embeddings(tiny, tok, 2, "position", "test")
    for i, ids in enumerate(tok.input_ids):  # batch size 1, as the reference runs: no padding
        with torch.no_grad():
            hidden = tiny.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        weights = torch.arange(1, len(ids) + 1, dtype=torch.float32)
        want = (hidden * (weights / weights.sum())[:, None]).sum(0)
        want = want / want.norm()
        np.testing.assert_allclose(batched[i], want.numpy(), atol=1e-5)
    assert n_tokens == sum(map(len, tok.input_ids))


def _pool_and_prior():
    prior = [make_record(f"add {i} and {i + 1}", "", f"{2 * i + 1}", "task", "s") for i in range(3)]
    copies = [make_record(r.instruction, r.input, r.output, "task", "pool") for r in prior]  # same text, other source
    others = [make_record(f"spell zebra {i} backwards", "", "arbez" * (i + 1), "other", "s") for i in range(5)]
    return others[:2] + copies + others[2:], prior


def test_rds_ranks_copies_of_the_target_first(tiny):
    pool, prior = _pool_and_prior()
    result = RdsSelector(RdsParams()).score(pool, ScoringContext(seed=0, target=prior, batch_size=3,
                                                                loader=lambda: tiny))
    top = set(np.argsort(-result.scores)[:3])
    assert top == {2, 3, 4}  # the three copies: cosine 1 with a target example
    assert sorted(result.scores) == list(range(1, len(pool) + 1))
    np.testing.assert_allclose(result.extras["max_sim"][[2, 3, 4]], 1.0, atol=1e-5)


@pytest.mark.parametrize("aggregate", ["mean", "max", "round_robin"])
def test_lexical_ranks_the_candidates_that_share_the_priors_words_first(aggregate):
    pool, prior = _pool_and_prior()
    result = LexicalSelector(LexicalParams(aggregate=aggregate)).score(pool, ScoringContext(seed=0, target=prior))
    assert set(np.argsort(-result.scores, kind="stable")[:3]) == {2, 3, 4}
    sims = similarities(pool, prior, LexicalParams())
    np.testing.assert_allclose(sims[0, 2], 1.0)  # a copy of prior example 0
    assert sims[:, [0, 1, 5, 6, 7]].max() < 0.5


def test_bad_params_are_refused():
    from igds.core.config import ConfigError

    with pytest.raises(ConfigError, match="aggregate"):
        LexicalParams(aggregate="median")
    with pytest.raises(ConfigError, match="weighting"):
        RdsParams(weighting="last")
