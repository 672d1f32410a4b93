"""Feature-Resonant Score: examples carrying the planted task feature rank first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from igds.core.pooling import pooled_feature_activations
from igds.core.tokens import tokenize_records
from igds.method.resonance import resonant_score
from igds.core.selection import select_top
from igds.core.selection_metrics import auroc, on_task_recall
from tests.conftest import LAYER, general, other, recall_sae, task


def test_frs_ranks_examples_with_the_feature_above_those_without(planted, tok):
    model, u, w, basis = planted
    sae = recall_sae(u, w, basis)
    pool = [task(i) for i in range(6)] + [general(i) for i in range(5)] + [other(i) for i in range(5)]
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    labels = np.array([r.task == "task" for r in pool])
    tokens = tokenize_records(tok, pool, 256)
    acts = pooled_feature_activations(model, sae, tokens, LAYER, 4, tok.pad_token_id, "all", features=[0])
    assert acts.max_act.shape == (len(pool), 1)
    for pooling in ("max", "mean"):
        scores = resonant_score(acts, typical=[1.0], pooling=pooling)
        assert scores[labels].min() > scores[~labels].max(), pooling
        assert auroc(scores, labels) == 1.0
        kept = select_top([r.id for r in pool], scores, ratio=6 / 16, seed=0)
        assert on_task_recall(kept, {r.id for r in pool if r.task == "task"}) == 1.0
    # the "fires everywhere" feature cannot tell them apart: its columns are all positive
    everywhere = pooled_feature_activations(model, sae, tokens, LAYER, 4, tok.pad_token_id, "all", features=[1])
    assert (everywhere.max_act > 0).all()


def test_frs_with_k_features_normalises_each_by_its_typical_activation():
    from igds.core.pooling import FeatureActivations

    max_act = torch.tensor([[10.0, 0.0], [0.0, 1.0], [5.0, 0.5]])
    acts = FeatureActivations(max_act, max_act / 2, np.array([1, 1, 1]), torch.zeros(2), torch.zeros(2))
    np.testing.assert_allclose(resonant_score(acts, typical=[10.0, 1.0]), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(resonant_score(acts, typical=[10.0, 1.0], pooling="mean"), [0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="pooling 'sum'"):
        resonant_score(acts, typical=[1.0, 1.0], pooling="sum")
