"""The IGDS method's params: identify.* (steps 1-2: frequency recall, interventional filtering)."""

from __future__ import annotations

from dataclasses import dataclass

from igds.core.config import SCOPES, check

@dataclass(frozen=True)
class IdentifyConfig:
    """IGDS steps 1-2: frequency recall and interventional filtering."""

    scope: str = "response_content"  # tokens whose activations count: response | response_content | content | all
    top_n: int = 16  # features recalled by frequency
    contrast: str = "diff"  # diff: freq_prior - freq_general; ratio: freq_prior / freq_general
    min_contrast: float = 0.2
    min_freq_prior: float = 0.0
    interventional: bool = True  # false: the frequency-only ablation
    alphas: tuple[float, ...] = (2.0, 4.0)  # steering strengths, in units of the feature's typical size
    allow_suppression: bool = False  # allow alphas < 0 (steering against the feature)
    min_effect: float = 0.0  # nats per answer token the best alpha must gain
    # holm | bh: a one-sided test of effect > min_effect per feature x alpha, adjusted over the family
    # (Holm: family-wise error; BH: false discovery rate) at 1 - level; ci: the best alpha's CI lower
    # bound clears min_effect; mean: its mean does (the paper; neither of the last two controls the error)
    keep_rule: str = "holm"
    # when keep_rule keeps no feature (a draw can): mean, the paper's rule decides, and features.json and
    # the identify metrics say so (fallback); stop, IGDS has no feature to score with and its score stage stops
    none_kept: str = "mean"
    level: float = 0.95  # the effect's CI (percentile bootstrap over the held-out examples)
    n_boot: int = 2000
    heldout_examples: int = 32  # prior examples held out of recall, for the intervention metric
    batch_size: int = 8
    max_len: int = 384
    card_examples: int = 5  # top activating pool snippets per chosen feature in cards.md
    card_features: int = 5  # features that get a card
    stability: bool = True  # also recall from two disjoint halves of the prior: Jaccard

    def __post_init__(self) -> None:
        check(self.scope in SCOPES, "scope", self.scope, f"one of {SCOPES}")
        check(self.contrast in ("diff", "ratio"), "contrast", self.contrast, "diff or ratio")
        check(len(self.alphas) > 0 and all(a != 0 for a in self.alphas), "alphas", self.alphas,
              "a non-empty list of non-zero numbers")
        check(self.allow_suppression or all(a > 0 for a in self.alphas), "alphas", self.alphas,
              "positive numbers (amplifying the feature); set identify.allow_suppression: true to steer against it")
        check(self.keep_rule in ("holm", "bh", "ci", "mean"), "keep_rule", self.keep_rule, "holm, bh, ci or mean")
        check(self.none_kept in ("mean", "stop"), "none_kept", self.none_kept, "mean or stop")
        check(0.0 < self.level < 1.0, "level", self.level, "a number in (0, 1)")
        for key in ("top_n", "heldout_examples", "batch_size", "max_len", "card_examples", "n_boot"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
