"""Feature-Resonant Score (IGDS step 3), and feature amplification (the paper's Fig. 3).

FRS(x) = the pooled activation (max or mean over x's tokens) of the chosen causal
features. With k > 1 features, each feature's pooled activation is divided by its typical
activation on the prior set (so no single loud feature dominates) and the k values are
averaged; with k = 1 (the paper's default) this is a monotone rescaling of the raw score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from igds.core.config import POOLING, SCOPE_INCLUDES, SCOPES, ConfigError, check, fail
from igds.core.data import Record
from igds.core.registry import SelectorResult, register


FEATURE_ORDERS = ("causal", "recall")


def ranked_features(features: dict, order: str = "causal") -> list[int]:
    """A features.json document's features in IGDS's order: `causal` is the ranking after the
    interventional filter (steps 1-2); `recall` is frequency recall's contrast order over every
    recalled feature, no causal filter (the paper's no-filter ablation)."""
    if order == "recall":
        return [f["feature"] for f in features["features"]]
    return list(features["ranking"])


def chosen_features(features: dict, k: int, order: str = "causal") -> list[int]:
    """The top-k features of a features.json document in `order` (ranked_features)."""
    return ranked_features(features, order)[:k]


def resonant_score(acts, typical: Sequence[float], pooling: str = "max") -> np.ndarray:
    """FRS per example, from activations pooled over the chosen features only: [n_examples].

    `acts` (igds.core.pooling.FeatureActivations) holds just the chosen features' columns (in
    chosen order); `typical` is each one's mean activation when active on the prior set.
    """
    import torch  # noqa: PLC0415

    pooled = acts.pooled(pooling)  # [n, k]
    scale = torch.as_tensor(list(typical), dtype=pooled.dtype).clamp(min=1e-8)
    return (pooled / scale).mean(1).double().numpy()


@dataclass(frozen=True)
class IgdsParams:
    k: int = 1  # top-k causal features (the paper's default is 1)
    pooling: str = "max"  # over an example's tokens: max | mean
    scope: str = "response_content"  # tokens that count: response | response_content | content | all
    features: str = "causal"  # causal: the interventional filter's ranking | recall: contrast order, no filter (ablation)

    def __post_init__(self) -> None:
        check(self.k > 0, "k", self.k, "a positive integer")
        check(self.features in FEATURE_ORDERS, "features", self.features, f"one of {FEATURE_ORDERS}")
        check(self.pooling in POOLING, "pooling", self.pooling, f"one of {POOLING}")
        check(self.scope in SCOPES, "scope", self.scope, f"one of {SCOPES}")

    def check_with(self, params) -> None:
        top_n = params.identify.top_n
        check(self.k <= top_n, "k", self.k, f"at most identify.top_n = {top_n} (features are ranked among the "
              "recalled ones)")
        found = params.identify.scope
        # a feature recalled on tokens this scope does not read (the template's end-of-turn marker,
        # say) can be 0 on every scored token: every score ties and the selection is the tie-break
        check(found in SCOPE_INCLUDES[self.scope], "scope", self.scope,
              f"a scope that includes identify.scope = '{found}' (the tokens the features were found on): "
              f"{', '.join(s for s in SCOPES if found in SCOPE_INCLUDES[s])}")

    def check_features(self, features: dict, source: str) -> None:
        n = len(ranked_features({"ranking": [], "features": [], **features}, self.features))
        if self.k > n:
            kept = "kept" if self.features == "causal" else "recalled"
            fail("k", self.k, f"at most the {n} feature(s) identification {kept} ({source}); "
                 "or relax identify.min_effect / identify.min_contrast")


@register("igds", IgdsParams)
class IgdsSelector:
    """Feature-Resonant Score with the SAE and the ranked causal features (features.json);
    the forward pass stops at layer L."""

    needs = ("model", "sae", "features")
    shardable = True  # an example's score depends only on it and its batch (igds.core.scoring)

    def __init__(self, params: IgdsParams):
        self.params = params

    def score(self, pool: list[Record], ctx) -> SelectorResult:
        from igds.core.artifacts import read_json  # noqa: PLC0415
        from igds.core.pooling import pooled_feature_activations  # noqa: PLC0415
        from igds.core.sae import load_sae  # noqa: PLC0415

        p = self.params
        features = read_json(ctx.artifact("features") / "features.json")
        ranked = ranked_features(features, p.features)
        if len(ranked) < p.k:
            raise ConfigError(f"params.yaml: methods.igds.k = {p.k} but identification kept {len(ranked)} "
                              f"feature(s) in {p.features} order; lower k, or relax identify.min_effect / "
                              "identify.min_contrast")
        chosen = ranked[:p.k]
        # every recalled feature in the same pass (the chosen ones first): their pooled
        # activations are the recipes' `features` space (igds.recipes.recipe); the chosen columns are
        # the same numbers either way (the SAE encodes every feature of a token it encodes)
        recalled = [f["feature"] for f in features["features"]]
        columns = chosen + [f for f in recalled if f not in chosen]
        by_id = {f["feature"]: f for f in features["features"]}
        loaded = ctx.model()
        sae = load_sae(ctx.artifact("sae"), ctx.device)
        tok = ctx.tokenized(pool)
        everything = pooled_feature_activations(loaded.model, sae, tok, features["layer"], ctx.batch_size,
                                                loaded.tokenizer.pad_token_id, p.scope, features=columns,
                                                desc="scoring")
        acts = everything.columns(range(len(chosen)))
        extras = {}
        for j, f in enumerate(chosen):
            extras[f"f{f}_max"] = acts.max_act[:, j].numpy()
            extras[f"f{f}_mean"] = acts.mean_act[:, j].numpy()
        recalled_pooled = everything.pooled(p.pooling)
        for j, f in enumerate(columns):
            extras[f"a{f}"] = recalled_pooled[:, j].numpy()
        info = {"chosen_features": chosen, "k": p.k, "features": p.features, "pooling": p.pooling, "scope": p.scope,
                "n_tokens": int(tok.n_tokens)}
        return SelectorResult(resonant_score(acts, [by_id[f]["mean_when_active"] for f in chosen], p.pooling),
                              info, extras)


def feature_activation(model, tokenizer, sae, records: Sequence[Record], layer: int, features: Sequence[int],
                       batch_size: int, max_len: int, scope: str = "all", pooling: str = "max") -> float:
    """Mean over `records` of the chosen task features' pooled activation (the Feature-Resonant
    Score's pooling, unnormalised), from `model`'s residual stream at `layer`: how strongly a
    (fine-tuned) model activates the task features on the eval set. The report divides it
    by the base model's value (feature amplification, the paper's Fig. 3)."""
    from igds.core.pooling import pooled_feature_activations  # noqa: PLC0415
    from igds.core.tokens import tokenize_records  # noqa: PLC0415

    tok = tokenize_records(tokenizer, records, max_len)
    acts = pooled_feature_activations(model, sae, tok, layer, batch_size, tokenizer.pad_token_id, scope,
                                      features=list(features), desc="feature activation")
    return float(np.mean(acts.pooled(pooling).double().numpy()))
