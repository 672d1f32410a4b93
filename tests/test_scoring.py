"""Scoring in pieces: shards form exactly the whole pool's batches (so their scores are the
unsharded scores bit for bit), and a killed run resumes from its finished chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from igds.core.tokens import tokenize_records
from igds.core.data import make_record
from igds.core.models.loading import LoadedModel
from igds.core.scoring import merge_shards, parse_shard, score_pool, split_batches
from igds.core.context import ScoringContext
from tests.conftest import selector_for
from tests.conftest import GSM8K_SAMPLE, build_char_tokenizer, build_tiny_model


def pool_of(n: int):
    rng = np.random.default_rng(0)
    return [make_record(f"Q{i}: " + "x" * int(rng.integers(1, 30)), "", "y" * int(rng.integers(1, 20)) + f" {i}",
                        "task" if i % 2 else "other", "test") for i in range(n)]


@pytest.fixture
def ctx():
    model, tok = build_tiny_model(seed=2), build_char_tokenizer()
    return ScoringContext(seed=0, target=[], batch_size=4, max_len=128,
                          loader=lambda: LoadedModel(model, tok, "tiny"))


def batches_seen(ctx, run) -> list[frozenset]:
    """The batches (as sets of token sequences) the model is called on while `run()` runs."""
    seen = []

    def hook(module, args):
        pad = ctx.model().tokenizer.pad_token_id  # never a real token of these records
        seen.append(frozenset(tuple(t for t in row.tolist() if t != pad) for row in args[0]))

    handle = ctx.model().model.get_input_embeddings().register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_split_batches_cuts_whole_batches_and_covers_everything():
    order = np.arange(23)
    pieces = split_batches(order, 4, 3)  # 6 batches -> 2 + 2 + 2
    assert [len(p) for p in pieces] == [8, 8, 7]
    assert np.array_equal(np.concatenate(pieces), order)
    assert [len(p) for p in split_batches(order, 4, 6)] == [4, 4, 4, 4, 4, 3]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match="0 <= i < n"):
            parse_shard(bad)


def test_shards_form_the_whole_pools_batches_and_equal_its_scores(ctx):
    pool = pool_of(30)
    selector = selector_for("loss", {"keep": "high"})
    whole = {}
    seen_whole = batches_seen(ctx, lambda: whole.update(frame=score_pool(selector, pool, ctx)[0]))
    shard_frames, seen_shards = [], []
    for i in range(3):
        seen_shards += batches_seen(ctx, lambda i=i: shard_frames.append(score_pool(selector, pool, ctx,
                                                                                    shard=(i, 3))[0]))
    assert sorted(map(sorted, seen_shards)) == sorted(map(sorted, seen_whole))  # the very same batches
    merged = merge_shards(pool, shard_frames)
    assert list(merged["id"]) == [r.id for r in pool] == list(whole["frame"]["id"])
    assert np.array_equal(merged["score"].to_numpy(), whole["frame"]["score"].to_numpy())
    # the pieces of a naive cut (pool order) are other batches
    naive = batches_seen(ctx, lambda: [selector.score(pool[lo:lo + 10], ctx) for lo in (0, 10, 20)])
    assert sorted(map(sorted, naive)) != sorted(map(sorted, seen_whole))


def test_merge_rejects_missing_or_duplicated_rows(ctx):
    pool = pool_of(12)
    selector = selector_for("loss")
    frames = [score_pool(selector, pool, ctx, shard=(i, 2))[0] for i in range(2)]
    with pytest.raises(ValueError, match="missing"):
        merge_shards(pool, frames[:1])
    with pytest.raises(ValueError, match="duplicated: "):
        merge_shards(pool, [frames[0], frames[0], frames[1]])


def test_a_killed_run_keeps_its_finished_chunks_and_scores_only_the_rest(ctx, tmp_path):
    pool = pool_of(30)  # 8 batches of 4 -> chunks of 2 batches: 4 chunks
    selector = selector_for("loss")
    clean, clean_info = score_pool(selector, pool, ctx)

    calls = []
    real_score = selector.score

    def dies_on_third_chunk(records, c):
        calls.append(len(records))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_score(records, c)

    selector.score = dies_on_third_chunk
    with pytest.raises(KeyboardInterrupt):
        score_pool(selector, pool, ctx, chunk_batches=2, state_dir=tmp_path, fingerprint="run-a")
    assert len(list(tmp_path.glob("chunk-*.parquet"))) == 2
    calls.clear()
    selector.score = real_score
    counted = []
    selector.score = lambda records, c: counted.append(len(records)) or real_score(records, c)
    frame, info = score_pool(selector, pool, ctx, chunk_batches=2, state_dir=tmp_path, fingerprint="run-a")
    assert info["resumed_chunks"] == 2 and sum(counted) == 30 - 16  # only the last two chunks
    # the info describes the whole pool, not one chunk: token counts add up, means are the pool's
    assert info["n_tokens"] == ctx.tokenized(pool).n_tokens
    assert info["mean_loss"] == pytest.approx(clean_info["mean_loss"]) == pytest.approx(clean["score"].mean())
    assert np.array_equal(frame["score"].to_numpy(), clean["score"].to_numpy())
    assert list(frame["id"]) == [r.id for r in pool]

    # chunks of another run (other fingerprint) are discarded, not reused
    counted.clear()
    score_pool(selector, pool, ctx, chunk_batches=2, state_dir=tmp_path, fingerprint="run-b")
    assert sum(counted) == 30


def test_set_level_methods_score_whole_in_shard_zero(ctx):
    """A method that cannot be sharded fills shard 0 with the whole pool; its other shards are empty,
    so merging the shards gives the one-process scores."""
    pool = pool_of(8)
    whole, info = score_pool(selector_for("zip"), pool, ctx)
    first, first_info = score_pool(selector_for("zip"), pool, ctx, shard=(0, 2))
    second, second_info = score_pool(selector_for("zip"), pool, ctx, shard=(1, 2))
    assert len(first) == 8 and len(second) == 0 and second_info == {} and first_info == info
    assert merge_shards(pool, [first, second]).equals(whole)


@pytest.mark.slow
def test_real_model_shards_are_bit_identical_to_one_process():
    """On SmolLM2 a naive cut changes scores by ~1e-6; the length-sorted cut changes nothing."""
    lines = (GSM8K_SAMPLE / "train.jsonl").read_text().splitlines()[:24]
    pool = [make_record(r["question"], "", r["answer"], "gsm8k", "test") for r in map(json.loads, lines)]
    ctx = ScoringContext(seed=0, target=[], batch_size=8, max_len=256)
    selector = selector_for("loss")
    whole, _ = score_pool(selector, pool, ctx)
    merged = merge_shards(pool, [score_pool(selector, pool, ctx, shard=(i, 3))[0] for i in range(3)])
    assert np.array_equal(merged["score"].to_numpy(), whole["score"].to_numpy())
    tok = tokenize_records(ctx.model().tokenizer, pool, ctx.max_len)
    assert len({len(x) for x in tok.input_ids}) > 10  # lengths vary: batches are padded differently
