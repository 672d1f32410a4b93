"""Task-feature identification (IGDS steps 1-2): frequency recall, interventional filtering.

1. Frequency recall: freq_prior(f) / freq_general(f) = share of examples of the prior /
   general set in which feature f fires (on the scoped tokens). Keep the top N features by
   freq_prior among those whose freq_prior - freq_general (or the ratio) clears a threshold.
2. Interventional filtering: add alpha * scale_f * d_f / ||d_f|| to the residual stream at
   layer L on every token, where scale_f is the feature's typical contribution (mean
   activation when active times ||d_f||, in residual-stream units), and measure the mean
   log-likelihood of the reference answers of held-out prior examples. Each alpha's effect
   is the mean of the paired per-example differences (steered - unsteered) with a percentile
   bootstrap CI over the held-out examples. With keep_rule holm (the default) or bh, each
   (feature, alpha) of the grid fixed in params is also tested, one-sided, for an effect above
   `min_effect` (a sign-flip permutation test on the paired differences), and the p-values are
   adjusted over the whole family of features x alphas: Holm's step-down (the family-wise error
   rate) or Benjamini-Hochberg (the false discovery rate) at 1 - `level`; a feature is kept when
   one of its alphas' adjusted p is below it, and its best alpha is the significant one with
   the largest mean. keep_rule ci keeps a feature when its best alpha's (largest mean) CI lower
   bound clears `min_effect`, and mean, as in the paper, when its mean does: neither controls
   the error across the family (picking the best of alphas, then checking it, is optimistic).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import bootstrap, false_discovery_control, permutation_test
from tqdm.auto import tqdm

from igds.core.loglik import steered_logliks
from igds.core.pooling import FeatureActivations, pooled_feature_activations
from igds.core.stats import holm
from igds.core.tokens import Tokenized, tokenize_records

log = logging.getLogger(__name__)

CONTRAST = ("diff", "ratio")
# a feature is kept when: one of its alphas' p, adjusted over features x alphas (Holm; Benjamini-Hochberg), is
# below 1 - level; its best alpha's CI lower bound clears min_effect; its best alpha's mean does (the paper)
KEEP_RULES = ("holm", "bh", "ci", "mean")
ADJUSTED = ("holm", "bh")


@dataclass
class FeatureRecord:
    """Everything features.json says about one recalled feature."""

    feature: int
    freq_prior: float
    freq_general: float
    contrast: float
    mean_when_active: float  # on the prior set, in the SAE's activation units
    scale: float  # typical contribution to the residual: mean_when_active * ||d_f||
    effect_by_alpha: dict[str, float] = field(default_factory=dict)  # alpha -> mean metric change
    effect_ci_by_alpha: dict[str, list[float]] = field(default_factory=dict)  # alpha -> [lo, hi]
    causal_effect: float | None = None  # the best alpha's mean effect
    causal_effect_lo: float | None = None  # its CI over the held-out examples
    causal_effect_hi: float | None = None
    best_alpha: float | None = None
    p_by_alpha: dict[str, float] = field(default_factory=dict)  # alpha -> one-sided p of effect > min_effect
    p_adjusted_by_alpha: dict[str, float] = field(default_factory=dict)  # adjusted over features x alphas (holm, bh)
    p_adjusted: float | None = None  # the best alpha's adjusted p (holm, bh)
    kept: bool = False
    reason: str = ""
    rank: int | None = None  # 1 = strongest chosen feature

    def to_dict(self) -> dict:
        return asdict(self)


def feature_frequencies(acts: FeatureActivations) -> np.ndarray:
    """Share of examples in which each feature fires: [d_sae]."""
    return acts.fired.float().mean(0).numpy()


def frequency_recall(freq_prior: np.ndarray, freq_general: np.ndarray, *, top_n: int, min_contrast: float,
                     contrast: str = "diff", min_freq_prior: float = 0.0, eps: float = 1e-3) -> list[int]:
    """Top `top_n` features by freq_prior among those whose contrast with the general set
    clears `min_contrast` (diff: freq_P - freq_G; ratio: freq_P / (freq_G + eps))."""
    values = contrast_values(freq_prior, freq_general, contrast, eps)
    eligible = eligible_features(freq_prior, freq_general, min_contrast=min_contrast, contrast=contrast,
                                 min_freq_prior=min_freq_prior, eps=eps)
    # sort by freq_prior, then contrast, then index: deterministic
    order = sorted(eligible, key=lambda f: (-freq_prior[f], -values[f], f))
    return [int(f) for f in order[:top_n]]


def eligible_features(freq_prior: np.ndarray, freq_general: np.ndarray, *, min_contrast: float,
                      contrast: str = "diff", min_freq_prior: float = 0.0, eps: float = 1e-3) -> np.ndarray:
    """Indices of the features whose contrast clears `min_contrast` and that fire on the prior
    set more often than `min_freq_prior` (and at all): the candidates of frequency recall."""
    values = contrast_values(freq_prior, freq_general, contrast, eps)
    return np.flatnonzero((values >= min_contrast) & (freq_prior > max(min_freq_prior, 0.0)))


def contrast_values(freq_prior: np.ndarray, freq_general: np.ndarray, contrast: str, eps: float = 1e-3) -> np.ndarray:
    if contrast not in CONTRAST:
        raise ValueError(f"contrast '{contrast}' is not one of {CONTRAST}")
    return freq_prior - freq_general if contrast == "diff" else freq_prior / (freq_general + eps)


def steering_vector(sae, feature: int, scale: float, alpha: float) -> torch.Tensor:
    """alpha * scale * d_f / ||d_f||: the feature's unit decoder direction at `alpha` times its typical size."""
    direction = sae.W_dec[feature].detach().float()
    return alpha * scale * direction / direction.norm()


def interventional_filter(model, sae, records: list[FeatureRecord], tok: Tokenized, *, layer: int,
                          alphas: Sequence[float], min_effect: float, batch_size: int, pad_id: int,
                          keep_rule: str = "holm", level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                          n_perm: int = 10000) -> float:
    """Fill effect_by_alpha (with CIs and, under holm or bh, p-values adjusted over features x
    alphas), causal_effect (with its CI), best_alpha, kept and reason in place.

    Returns the unsteered baseline metric. Effects are paired differences in answer
    log-likelihood (nats per token) against the unsteered model on the same examples.
    """
    if keep_rule not in KEEP_RULES:
        raise ValueError(f"keep_rule '{keep_rule}' is not one of {KEEP_RULES}")
    vectors = [steering_vector(sae, r.feature, r.scale, a) for r in records for a in alphas]
    with tqdm(total=len(vectors) * -(-len(tok) // batch_size), desc="intervening", leave=False) as bar:
        base, steered = steered_logliks(model, tok, batch_size, pad_id, layer, vectors, progress=bar.update)
    baseline = float(base.mean())
    log.info("interventional filtering: baseline answer log-likelihood %.4f on %d examples", baseline, len(tok))
    rng = np.random.default_rng([seed, 0x494E5456])  # "INTV"
    for i, rec in enumerate(records):
        for j, alpha in enumerate(alphas):
            effect = steered[i * len(alphas) + j] - base  # paired: the same examples, steered and not
            ci = bootstrap((effect,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                           vectorized=True, random_state=rng).confidence_interval
            rec.effect_by_alpha[f"{alpha:g}"] = float(effect.mean())
            rec.effect_ci_by_alpha[f"{alpha:g}"] = [float(ci.low), float(ci.high)]
            if keep_rule in ADJUSTED:
                rec.p_by_alpha[f"{alpha:g}"] = float(permutation_test(
                    (effect - min_effect,), np.mean, permutation_type="samples", alternative="greater",
                    n_resamples=n_perm, vectorized=True, random_state=rng).pvalue)
    if keep_rule in ADJUSTED:
        _adjust(records, keep_rule)
    for rec in records:
        _decide(rec, keep_rule, level, min_effect, len(tok))
    return baseline


def _adjust(records: list[FeatureRecord], rule: str) -> None:
    """Each record's p_adjusted_by_alpha: its p-values adjusted over every feature x alpha."""
    keys = [(rec, alpha) for rec in records for alpha in rec.p_by_alpha]
    p = np.array([rec.p_by_alpha[alpha] for rec, alpha in keys])
    adjusted = holm(p) if rule == "holm" else false_discovery_control(p, method="bh")
    for (rec, alpha), q in zip(keys, adjusted):
        rec.p_adjusted_by_alpha[alpha] = float(q)


def _decide(rec: FeatureRecord, rule: str, level: float, min_effect: float, n: int) -> None:
    """best_alpha, causal_effect (its CI), kept and reason of one record under `rule`."""
    alpha_level = 1.0 - level
    significant = [a for a, q in rec.p_adjusted_by_alpha.items() if q < alpha_level]
    best = max(significant or rec.effect_by_alpha, key=rec.effect_by_alpha.get)
    rec.best_alpha = float(best)
    rec.causal_effect = rec.effect_by_alpha[best]
    rec.causal_effect_lo, rec.causal_effect_hi = rec.effect_ci_by_alpha[best]
    effect = (f"best alpha {best}: effect {rec.causal_effect:+.4f} [{rec.causal_effect_lo:+.4f}, "
              f"{rec.causal_effect_hi:+.4f}] nats/token on {n} held-out examples")
    if rule in ADJUSTED:
        rec.p_adjusted = rec.p_adjusted_by_alpha[best]
        rec.kept = bool(significant)
        name = "Holm" if rule == "holm" else "BH"
        rec.reason = (f"{effect}; {name}-adjusted p {rec.p_adjusted:.3g} (over features x alphas) "
                      f"{'<' if rec.kept else '>='} {alpha_level:g} for an effect above min_effect {min_effect}")
        return
    statistic = rec.causal_effect_lo if rule == "ci" else rec.causal_effect
    rec.kept = statistic > min_effect
    what = f"{level:.0%} CI lower bound" if rule == "ci" else "mean"
    rec.reason = f"{effect}; {what} {statistic:+.4f} {'>' if rec.kept else '<='} min_effect {min_effect}"


def rank_features(records: list[FeatureRecord], k: int, interventional: bool) -> list[int]:
    """Choose the top-k features: by causal effect among kept ones, or (ablation: no
    interventional filter) by recall order. Sets rank; returns the chosen feature ids."""
    if interventional:
        candidates = sorted((r for r in records if r.kept), key=lambda r: (-r.causal_effect, r.feature))
    else:
        candidates = list(records)
        for r in candidates:
            r.kept, r.reason = True, "frequency recall only (interventional filtering off)"
    for i, r in enumerate(candidates[:k], start=1):
        r.rank = i
    return [r.feature for r in candidates[:k]]


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class Identification:
    """The outcome of IGDS steps 1-2, as features.json stores it."""

    records: list[FeatureRecord]  # every recalled feature
    ranking: list[int]  # chosen order: causal effect (or recall order in the ablation)
    baseline_loglik: float | None
    n_prior_recall: int
    n_prior_heldout: int
    n_general: int
    stability: dict | None  # recall on two disjoint prior halves: their top features and Jaccard
    # the rule that chose the ranking when keep_rule kept no feature (identify.none_kept: mean), else None
    fallback: str | None = None

    def records_by_id(self) -> dict[int, FeatureRecord]:
        return {r.feature: r for r in self.records}


def fall_back(records: list[FeatureRecord], cfg, n_heldout: int) -> list[int]:
    """identify.none_kept: mean, declared before the run: when keep_rule kept no feature, the
    paper's rule (the best alpha's mean effect above min_effect) decides; each record's reason
    says so. The new ranking."""
    log.warning("identify: keep_rule %s kept none of %d features; identify.none_kept: mean falls back to the "
                "paper's rule (the best alpha's mean effect above min_effect)", cfg.keep_rule, len(records))
    for rec in records:
        rec.p_adjusted = None
        _decide(rec, "mean", cfg.level, cfg.min_effect, n_heldout)
        rec.reason = f"fallback (keep_rule {cfg.keep_rule} kept none): {rec.reason}"
    return rank_features(records, len(records), interventional=True)


def identify(model, tokenizer, sae, prior: list, general: list, cfg, layer: int, seed: int = 0) -> Identification:
    """Run frequency recall on prior vs general, then (unless disabled) interventional
    filtering on held-out prior examples; `cfg` is an IdentifyConfig."""
    n_heldout = cfg.heldout_examples if cfg.interventional else 0
    if len(prior) - n_heldout < 2:
        raise ValueError(f"the prior set has {len(prior)} examples; identification needs more than "
                         f"identify.heldout_examples = {n_heldout} + 2")
    recall_set, heldout = prior[:len(prior) - n_heldout], prior[len(prior) - n_heldout:]
    pad = tokenizer.pad_token_id
    encode = lambda recs, desc: pooled_feature_activations(  # noqa: E731
        model, sae, tokenize_records(tokenizer, recs, cfg.max_len), layer, cfg.batch_size, pad, cfg.scope, desc=desc)
    acts_prior = encode(recall_set, "prior")
    acts_general = encode(general, "general")
    freq_prior, freq_general = feature_frequencies(acts_prior), feature_frequencies(acts_general)
    recall = lambda fp: frequency_recall(  # noqa: E731
        fp, freq_general, top_n=cfg.top_n, min_contrast=cfg.min_contrast, contrast=cfg.contrast,
        min_freq_prior=cfg.min_freq_prior)
    recalled = recall(freq_prior)
    values = contrast_values(freq_prior, freq_general, cfg.contrast)
    typical = acts_prior.mean_when_active
    records = [
        FeatureRecord(
            feature=f, freq_prior=float(freq_prior[f]), freq_general=float(freq_general[f]),
            contrast=float(values[f]), mean_when_active=float(typical[f]),
            scale=float(typical[f] * sae.W_dec[f].detach().float().norm()),
        )
        for f in recalled
    ]
    log.info("frequency recall: %d features (of %d) clear %s >= %g", len(records), len(freq_prior),
             cfg.contrast, cfg.min_contrast)
    baseline = None
    if cfg.interventional and records:
        tok_heldout = tokenize_records(tokenizer, heldout, cfg.max_len)
        baseline = interventional_filter(model, sae, records, tok_heldout, layer=layer, alphas=cfg.alphas,
                                         min_effect=cfg.min_effect, batch_size=cfg.batch_size, pad_id=pad,
                                         keep_rule=cfg.keep_rule, level=cfg.level, n_boot=cfg.n_boot, seed=seed)
    ranking = rank_features(records, len(records), cfg.interventional)
    fallback = None
    if cfg.interventional and records and not ranking and cfg.none_kept == "mean":
        ranking, fallback = fall_back(records, cfg, len(heldout)), "mean"
    stability = None
    if cfg.stability:
        fired = acts_prior.fired.float().numpy()
        half_freqs = [fired[i::2].mean(0) for i in (0, 1)]
        halves = [recall(fp) for fp in half_freqs]
        # the top N is often decided among ties (many features fire on every prior
        # example), so also compare the whole sets that clear the contrast threshold
        eligible = [eligible_features(fp, freq_general, min_contrast=cfg.min_contrast, contrast=cfg.contrast,
                                      min_freq_prior=cfg.min_freq_prior) for fp in half_freqs]
        stability = {"top_n_half_a": halves[0], "top_n_half_b": halves[1],
                     "jaccard_top_n": jaccard(*halves),
                     "n_eligible_per_half": [len(e) for e in eligible],
                     "jaccard_eligible": jaccard(eligible[0].tolist(), eligible[1].tolist()),
                     "n_examples_per_half": [len(fired[0::2]), len(fired[1::2])]}
    return Identification(records, ranking, baseline, len(recall_set), len(heldout), len(general), stability,
                          fallback)
