"""Feature cards mark the tokens on which the planted task feature fires."""

from __future__ import annotations

from igds.core.pooling import pooled_feature_activations
from igds.core.tokens import tokenize_records
from igds.core.cards import feature_cards, render_snippet, scoped_token_activations, token_activations
from igds.core.data import make_record
from tests.conftest import LAYER, general, recall_sae, task


def test_cards_show_the_top_examples_with_firing_tokens_marked(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    pool = [general(i) for i in range(3)] + [task(i) for i in range(3)]
    tokens = tokenize_records(tok, pool, 256)
    acts = pooled_feature_activations(model, sae, tokens, LAYER, 4, tok.pad_token_id, "all", features=[0])
    info = {0: {"rank": 1, "freq_prior": 1.0, "freq_general": 0.0, "causal_effect": 0.01, "best_alpha": 2.0,
                "mean_when_active": 3.0}}
    text = feature_cards(model, tok, sae, LAYER, pool, tokens, acts, [0], info, n_examples=5)
    assert "## Feature 0 (rank 1)" in text
    lines = [line for line in text.splitlines() if line.startswith("- `")]
    assert len(lines) == 3 and all("(task," in line for line in lines)  # general examples never fire
    assert all("⟦#|" in line for line in lines)  # the '#' tokens are the marked ones
    per_token = token_activations(model, sae, tokens.input_ids[3], LAYER, 0)
    assert per_token[0] == 0.0 and max(per_token) > 0
    assert "⟦" not in render_snippet(tok, tokens.input_ids[0], token_activations(model, sae, tokens.input_ids[0], LAYER, 0))


def test_cards_mark_only_the_tokens_of_the_features_scope(planted, tok):
    """A feature recalled on the response's own tokens is shown there: a '#' in the prompt fires
    too, but the card (ranking and marks) reads the identify scope only."""
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    pool = [make_record("Is # a sign? Answer 4.", "", "#### 4", "task", "test")]
    tokens = tokenize_records(tok, pool, 256)
    start = tokens.response_start[0]
    everywhere = token_activations(model, sae, tokens.input_ids[0], LAYER, 0)
    assert max(everywhere[:start]) > 0  # the prompt's '#' fires
    scoped = scoped_token_activations(model, sae, tokens, 0, LAYER, 0, "response_content", tok.pad_token_id)
    assert max(scoped[:start]) == 0 and max(scoped[start:]) > 0
    acts = pooled_feature_activations(model, sae, tokens, LAYER, 4, tok.pad_token_id, "response_content", features=[0])
    info = {0: {"rank": 1, "freq_prior": 1.0, "freq_general": 0.0, "causal_effect": 0.01, "best_alpha": 2.0,
                "mean_when_active": 3.0}}
    text = feature_cards(model, tok, sae, LAYER, pool, tokens, acts, [0], info, 5, "response_content",
                         tok.pad_token_id)
    assert "on the `response_content` tokens" in text
