"""Feature-Resonant Score (IGDS step 3).

FRS(x) = the pooled activation (max or mean over x's tokens) of the chosen causal
features. With k > 1 features, each feature's pooled activation is divided by its typical
activation on the prior set (so no single loud feature dominates) and the k values are
averaged; with k = 1 (the paper's default) this is a monotone rescaling of the raw score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from igds.activations import SCOPES, FeatureActivations, pooled_feature_activations
from igds.artifacts import read_json
from igds.data import Record
from igds.selection import ScoringContext, register

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


@dataclass(frozen=True)
class IgdsParams:
    k: int = 1  # top-k causal features (the paper's default is 1)
    pooling: str = "max"  # over an example's tokens: max | mean
    scope: str = "all"  # tokens that count: response | all

    def __post_init__(self) -> None:
        from igds.config import _check  # noqa: PLC0415

        _check(self.k > 0, "k", self.k, "a positive integer")
        _check(self.pooling in POOLING, "pooling", self.pooling, f"one of {POOLING}")
        _check(self.scope in SCOPES, "scope", self.scope, f"one of {SCOPES}")


@register("igds", IgdsParams)
class IgdsSelector:
    """Feature-Resonant Score with the SAE (ctx.artifacts['sae']) and the ranked causal
    features (ctx.artifacts['features']/features.json); the forward pass stops at layer L."""

    shardable = True  # an example's score depends only on it and its batch (igds.scoring)

    def __init__(self, params: IgdsParams):
        self.params = params
        self.info: dict = {}
        self.detail: pd.DataFrame | None = None

    def score(self, pool: list[Record], ctx: ScoringContext) -> np.ndarray:
        from igds.config import ConfigError  # noqa: PLC0415
        from igds.sae import load_sae  # noqa: PLC0415

        p = self.params
        features = read_json(Path(ctx.artifacts["features"]) / "features.json")
        ranking = features["ranking"]
        if len(ranking) < p.k:
            raise ConfigError(f"params.yaml: methods.igds.k = {p.k} but identification kept {len(ranking)} "
                              "feature(s); lower k, or relax identify.min_effect / identify.min_contrast")
        chosen = ranking[:p.k]
        by_id = {f["feature"]: f for f in features["features"]}
        loaded = ctx.model()
        sae = load_sae(ctx.artifacts["sae"], ctx.device)
        tok = ctx.tokenized(pool)
        acts = pooled_feature_activations(loaded.model, sae, tok, features["layer"], ctx.batch_size,
                                          loaded.tokenizer.pad_token_id, p.scope, features=chosen, desc="scoring")
        self.detail = pd.DataFrame({"id": [r.id for r in pool]})
        for j, f in enumerate(chosen):
            self.detail[f"f{f}_max"] = acts.max_act[:, j].numpy()
            self.detail[f"f{f}_mean"] = acts.mean_act[:, j].numpy()
        self.info = {"chosen_features": chosen, "k": p.k, "pooling": p.pooling, "scope": p.scope,
                     "n_tokens": int(tok.n_tokens)}
        return resonant_score(acts, [by_id[f]["mean_when_active"] for f in chosen], p.pooling)
