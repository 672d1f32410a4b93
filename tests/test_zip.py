"""ZIP: exact prefix compression, near-duplicates pushed out of the greedy prefix, determinism."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from baselines.zip import ZipParams, ZipSelector
from igds.core.config import ConfigError, from_dict
from igds.core.context import ScoringContext
from igds.core.data import make_record
from igds.core.diversity import CompressedPrefix, example_bytes, zip_order
from igds.core.selection import select_top

N_DISTINCT, N_DUPLICATES = 60, 30
PREFIX = 40


def _words(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    p = 1 / np.arange(1, len(vocab) + 1)  # Zipf-like: distinct texts still share common words
    return [vocab[i] for i in rng.choice(len(vocab), n, p=p / p.sum())]


@pytest.fixture(scope="module")
def pool():
    """60 distinct ~250-byte texts and 30 near-duplicates of one more text (3 words changed),
    shuffled. The whole pool stays under zlib's 32 KB window, so all redundancy is visible."""
    rng = np.random.default_rng(0)
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(2000)]
    records = [make_record(" ".join(_words(rng, vocab, 8)), "", " ".join(_words(rng, vocab, 30)), "distinct", "t")
               for _ in range(N_DISTINCT)]
    base = _words(rng, vocab, 38)
    for _ in range(N_DUPLICATES):
        words = list(base)
        for j in rng.choice(len(words), 3, replace=False):
            words[j] = vocab[rng.integers(len(vocab))]
        records.append(make_record(" ".join(words[:8]), "", " ".join(words[8:]), "duplicate", "t"))
    return [records[i] for i in rng.permutation(len(records))]


def test_prefix_compression_is_exact():
    rng = np.random.default_rng(1)
    chunks = [rng.integers(97, 100, rng.integers(1, 3000)).astype(np.uint8).tobytes() for _ in range(30)]
    prefix = CompressedPrefix(level=9)
    for i, chunk in enumerate(chunks[:-1]):  # the prefix grows past zlib's 32 KB window
        prefix.add(chunk)
        data = b"".join(chunks[:i + 1]) + chunks[-1]
        assert prefix.ratio_with(chunks[-1]) == len(data) / len(zlib.compress(data, 9))


def test_greedy_prefix_avoids_near_duplicates(pool):
    params = ZipParams(k1=30, k2=10, k3=5)  # every stage narrows the candidates
    scores = ZipSelector(params).score(pool, ScoringContext(seed=0, target=[])).scores
    ids = [r.id for r in pool]
    duplicates = {r.id for r in pool if r.task == "duplicate"}
    prefix = select_top(ids, scores, PREFIX / len(pool), seed=0)
    random_subset = np.random.default_rng(0).choice(ids, PREFIX, replace=False)
    assert len(duplicates & set(prefix)) <= 2  # the first near-duplicate, and at most one more
    assert len(duplicates & set(random_subset)) >= 8  # a third of the pool


def test_stage3_sees_redundancy_within_the_round():
    """Round 1: the selected set is empty, so stage 2 ranks by each text's own ratio and the
    four copies of the least compressible text come first; stage 3 takes one copy only."""
    rng = np.random.default_rng(2)
    hard = rng.integers(33, 127, 400).astype(np.uint8).tobytes()  # 94 symbols: own ratio ~1.2
    easy = [rng.integers(97, 123, 400).astype(np.uint8).tobytes() for _ in range(4)]  # 26 symbols: ~1.6
    order, _ = zip_order([hard] * 4 + easy, k1=8, k2=8, k3=4, max_select=4)
    assert order[0] < 4  # a copy: the lowest own ratio
    assert sum(i < 4 for i in order[:4]) == 1


def test_scores_are_the_greedy_order(pool):
    ctx = ScoringContext(seed=0, target=[])
    selector = ZipSelector(ZipParams(k1=30, k2=10, k3=5))
    result = selector.score(pool, ctx)
    scores = result.scores
    assert sorted(scores) == list(range(1, len(pool) + 1))
    np.testing.assert_array_equal(scores, selector.score(pool, ctx).scores)
    assert result.info["n_rounds"] == len(pool) // 5  # k3 = 5 per round


def test_max_select_keeps_the_same_prefix(pool):
    texts = [example_bytes(r) for r in pool]
    full, _ = zip_order(texts, k1=30, k2=10, k3=5)
    partial, stats = zip_order(texts, k1=30, k2=10, k3=5, max_select=12)
    np.testing.assert_array_equal(partial[:12], full[:12])
    assert sorted(partial) == list(range(len(pool)))
    assert stats["n_rounds"] == 3  # 5 + 5 + 2: the last round stops at the budget


def test_stage3_with_selected_also_avoids_near_duplicates(pool):
    texts = [example_bytes(r) for r in pool]
    order, _ = zip_order(texts, k1=30, k2=10, k3=5, max_select=PREFIX, stage3_with_selected=True)
    assert sum(pool[i].task == "duplicate" for i in order[:PREFIX]) <= 2


def test_params_are_validated():
    with pytest.raises(ConfigError, match="methods.zip.k2"):
        from_dict(ZipParams, {"k1": 10, "k2": 20}, "methods.zip")
    with pytest.raises(ConfigError, match="methods.zip.level"):
        from_dict(ZipParams, {"level": 0}, "methods.zip")


def _reference_zip(texts: list[bytes], budget: int, k1: int, k2: int, k3: int) -> list[int]:
    """USTC-StarTeam/ZIP's ZIP_select and selec_data_from_corpus, step by step (numpy in place
    of torch.topk; the ratio of a list of examples is that of their bytes concatenated, the text
    this project compresses, where the reference takes str() of a list of JSON records)."""
    def ratio(parts: list[bytes]) -> float:
        data = b"".join(parts)
        return len(data) / len(zlib.compress(data, 9))

    state = np.array([ratio([t]) for t in texts])  # global_information_redundancy_state
    final: list[int] = []
    while len(final) < budget:
        # stage 1 & 2: selec_data_from_corpus(final, ..., k2, k2, k1): one pass (selection_num = budget = k2)
        cur = np.argsort(state, kind="stable")[:k1]
        group = np.array([ratio([texts[i] for i in final] + [texts[j]]) for j in cur])
        state[cur] = group
        second = cur[np.argsort(group, kind="stable")[:k2]]
        state[second] = 1_000_000
        # stage 3: selec_data_from_corpus([], second, k3, 1, 'all'): one at a time, this round's picks only
        picked: list[int] = []
        while len(picked) < k3:
            group = np.array([ratio([texts[second[p]] for p in picked] + [texts[j]]) for j in second])
            group[picked] = 1_000_000
            picked.append(int(np.argmin(group)))
        final += [int(second[p]) for p in picked]
    return final


def test_the_greedy_order_is_the_reference_implementations(pool):
    """Where the reference does what it intends (k2 = k3: every stage-2 candidate is picked; a
    budget that never asks stage 1 for more than the unselected), the same order, pick by pick."""
    texts = [example_bytes(r) for r in pool[:40]]
    order, _ = zip_order(texts, k1=12, k2=4, k3=4)
    assert list(order[:28]) == _reference_zip(texts, budget=28, k1=12, k2=4, k3=4)
