"""Feature-Resonant Score (IGDS step 3).

FRS(x) = the pooled activation (max or mean over x's tokens) of the chosen causal
features. With k > 1 features, each feature's pooled activation is divided by its typical
activation on the prior set (so no single loud feature dominates) and the k values are
averaged; with k = 1 (the paper's default) this is a monotone rescaling of the raw score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from igds.activations import FeatureActivations

POOLING = ("max", "mean")


def resonant_score(acts: FeatureActivations, typical: Sequence[float], pooling: str = "max") -> np.ndarray:
    """FRS per example, from activations pooled over the chosen features only: [n_examples].

    `acts` holds just the chosen features' columns (in chosen order); `typical` is each
    one's mean activation when active on the prior set.
    """
    if pooling not in POOLING:
        raise ValueError(f"pooling '{pooling}' is not one of {POOLING}")
    pooled = acts.max_act if pooling == "max" else acts.mean_act  # [n, k]
    scale = torch.as_tensor(list(typical), dtype=pooled.dtype).clamp(min=1e-8)
    return (pooled / scale).mean(1).double().numpy()
