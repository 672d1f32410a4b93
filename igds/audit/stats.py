"""The preference-data audit's statistics (issue 17): which SAE features, and which concepts
(features that co-fire), separate chosen from rejected responses.

Input: per pair, each feature's pooled activation on the chosen and on the rejected response
([n_pairs, n_features] each; a TopK SAE's activation is exactly 0 where the feature does not
fire), the responses' token counts, and each prompt's topic. Pure numpy and scipy; no io.

Per feature and per concept, two paired tests, both two-sided:
- an exact sign test on the pairs where it fires on one side only (chosen-only vs
  rejected-only counts, binomial with p = 1/2);
- Wilcoxon's signed-rank test on the pooled magnitudes (chosen - rejected; zero
  differences dropped).
Benjamini-Hochberg (`scipy.stats.false_discovery_control`) runs over both tests of every
unit at once, so the discoveries (q <= fdr) have their false-discovery rate controlled
whichever test found them. Beside them: effect sizes with CIs (the share of one-sided
firings that are on the chosen side, Clopper-Pearson; the mean magnitude difference,
percentile bootstrap over pairs), a length-controlled Wilcoxon (the differences with their
least-squares dependence on the token-count difference removed), and split-half agreement
(the direction in two random halves of the pairs).

Concepts: features that fire on at least `min_fires` responses are grouped by average-
linkage clustering on the Jaccard distance of their firing sets (cut at 1 - min_jaccard); a
concept fires where any member does, and its magnitude is its members' largest activation,
each scaled by the member's mean non-zero activation. Views of the paper's two pipelines:
feature-conditioned (per concept a badge, chosen / rejected / both / neither, with each
side's firing rate and CI) and prompt-conditioned (topic x concept: the chosen share of
one-sided firings per topic, with CI and BH-adjusted p over the cells).

Explained away: one habit in the data lights up many concepts (a flattering opener moves
dozens of features downstream of it), and a concept that mixes the habit with something
balanced (a sign-off on both sides) leans only because of the habit. In order of q, each
discovered concept is re-tested on the pairs that no stronger kept concept carries (fires on
the side it leans to only); it stays when a test still has p <= fdr (Bonferroni over its two
tests), else it is explained by the kept concept that carries most of its one-sided pairs.
The interventions act on the kept discoveries. The null-calibration
check flips the sides of a random half of the pairs (no preference can survive it) and
counts the replicates with any discovery.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from igds.audit.config import AuditStatsConfig as AuditSettings

BADGES = ("chosen", "rejected", "both", "neither")


# --- tests ------------------------------------------------------------------------------------------

def sign_test(fires_chosen: np.ndarray, fires_rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen-only counts, rejected-only counts, exact two-sided p) per column."""
    only_c = (fires_chosen & ~fires_rejected).sum(axis=0)
    only_r = (fires_rejected & ~fires_chosen).sum(axis=0)
    n = only_c + only_r
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(only_c, only_r), n, 0.5))
    return only_c, only_r, np.where(n > 0, p, 1.0)


_EXACT_MAX = 50  # Wilcoxon: the exact null up to this many non-zero differences, the normal one above


@functools.lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0..n(n+1)/2 under the null, n non-zero differences without ties:
    the number of subsets of {1..n} with each sum, over 2**n."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts) / 2.0 ** n


def wilcoxon(d: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p per column of paired differences `d` [n, k], zero
    differences dropped (a column of zeros: p = 1); vectorised over columns. The null is
    exact up to _EXACT_MAX non-zero differences (a tied rank is rounded outwards, which can
    only raise p) and normal above, with a continuity correction and no tie correction:
    pooled activations are continuous, so ties other than zeros have probability ~0."""
    d = np.asarray(d, dtype=float)
    zeros = (d == 0).sum(axis=0)
    ranks = stats.rankdata(np.abs(d), axis=0) - zeros  # a non-zero difference's rank among the non-zero ones
    w = np.where(d > 0, ranks, 0.0).sum(axis=0)
    n = d.shape[0] - zeros
    p = np.ones(d.shape[1])
    for m in np.unique(n[(n > 0) & (n <= _EXACT_MAX)]):
        cols = np.flatnonzero(n == m)
        cdf = _signed_rank_cdf(int(m))
        lower = cdf[np.floor(w[cols]).astype(int)]
        upper = 1.0 - np.where(np.ceil(w[cols]) >= 1, cdf[np.maximum(np.ceil(w[cols]).astype(int) - 1, 0)], 0.0)
        p[cols] = np.minimum(1.0, 2.0 * np.minimum(lower, upper))
    big = np.flatnonzero(n > _EXACT_MAX)
    if big.size:
        m = n[big].astype(float)
        mean, sd = m * (m + 1) / 4, np.sqrt(m * (m + 1) * (2 * m + 1) / 24)
        z = np.maximum(np.abs(w[big] - mean) - 0.5, 0.0) / sd
        p[big] = np.minimum(1.0, 2.0 * stats.norm.sf(z))
    return p


def length_controlled(d: np.ndarray, length_diff: np.ndarray) -> np.ndarray:
    """Wilcoxon p of the differences with their least-squares dependence on the token-count
    difference (with an intercept) removed: what separates the sides at equal length."""
    x = np.asarray(length_diff, dtype=float)
    xc = x - x.mean()
    var = float(xc @ xc)
    if var == 0.0:
        return wilcoxon(d)
    slope = (xc @ (d - d.mean(axis=0))) / var
    residual = d - np.outer(x, slope)
    # what is left of a difference the length explains exactly is rounding error, not a sign
    residual[np.abs(residual) <= 1e-9 * np.abs(d).max(axis=0, initial=0.0)] = 0.0
    return wilcoxon(residual)


def bh(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return stats.false_discovery_control(p, method="bh") if p.size else p


def clopper_pearson(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - level
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def mean_diff_ci(d: np.ndarray, rng: np.random.Generator, n_boot: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of each column's mean difference, the pairs resampled."""
    n = d.shape[0]
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(float)
    draws = counts @ d / n
    alpha = 1.0 - level
    return np.quantile(draws, alpha / 2, axis=0), np.quantile(draws, 1 - alpha / 2, axis=0)


def split_half_agreement(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per column, whether the mean difference has the same sign in two random halves of the pairs."""
    order = rng.permutation(d.shape[0])
    a, b = order[: len(order) // 2], order[len(order) // 2:]
    return np.sign(d[a].mean(axis=0)) == np.sign(d[b].mean(axis=0))


def test_table(chosen: np.ndarray, rejected: np.ndarray, length_diff: np.ndarray, settings: AuditSettings,
               rng: np.random.Generator) -> pd.DataFrame:
    """Both tests per column, BH over all 2k p-values, effect sizes and checks."""
    fires_c, fires_r = chosen > 0, rejected > 0
    d = chosen - rejected
    only_c, only_r, p_sign = sign_test(fires_c, fires_r)
    p_rank = wilcoxon(d)
    q = bh(np.concatenate([p_sign, p_rank]))
    k = chosen.shape[1]
    share_lo, share_hi = clopper_pearson(only_c, only_c + only_r, settings.level)
    diff_lo, diff_hi = mean_diff_ci(d, rng, settings.n_boot, settings.level)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(only_c + only_r > 0, only_c / np.maximum(only_c + only_r, 1), np.nan)
    table = pd.DataFrame({
        "rate_chosen": fires_c.mean(axis=0), "rate_rejected": fires_r.mean(axis=0),
        "chosen_only": only_c, "rejected_only": only_r,
        "chosen_share": share, "chosen_share_lo": share_lo, "chosen_share_hi": share_hi,
        "mean_diff": d.mean(axis=0), "mean_diff_lo": diff_lo, "mean_diff_hi": diff_hi,
        "p_sign": p_sign, "p_wilcoxon": p_rank, "q_sign": q[:k], "q_wilcoxon": q[k:],
        "p_wilcoxon_length": length_controlled(d, length_diff),
        "split_half_agree": split_half_agreement(d, rng),
    })
    table["q"] = table[["q_sign", "q_wilcoxon"]].min(axis=1)
    table["discovered"] = table["q"] <= settings.fdr
    # the direction: of the one-sided firings when there are any, else of the magnitudes
    lean = np.where(only_c != only_r, np.sign(only_c - only_r), np.sign(d.mean(axis=0)))
    table["direction"] = np.select([lean > 0, lean < 0], ["chosen", "rejected"], "none")
    return table


# --- concepts --------------------------------------------------------------------------------------

def cluster_features(fires: np.ndarray, min_fires: int, min_jaccard: float) -> list[list[int]]:
    """Concepts: the features firing on >= min_fires of the responses `fires` [n_responses,
    n_features], grouped by average linkage on Jaccard distance, cut at 1 - min_jaccard;
    sorted by their first feature."""
    live = np.flatnonzero(fires.sum(axis=0) >= min_fires)
    if live.size == 0:
        return []
    if live.size == 1:
        return [[int(live[0])]]
    f = fires[:, live].astype(np.float32)
    inter = f.T @ f
    count = np.diag(inter)
    union = count[:, None] + count[None, :] - inter
    dist = 1.0 - inter / np.maximum(union, 1.0)
    np.fill_diagonal(dist, 0.0)
    labels = hierarchy.fcluster(hierarchy.linkage(squareform(np.clip(dist, 0, 1), checks=False), "average"),
                                t=1.0 - min_jaccard, criterion="distance")
    groups: dict[int, list[int]] = {}
    for feature, label in zip(live, labels):
        groups.setdefault(int(label), []).append(int(feature))
    return sorted(groups.values())


def concept_activations(acts: np.ndarray, concepts: Sequence[Sequence[int]], scale: np.ndarray) -> np.ndarray:
    """[n, n_concepts]: each concept's largest member activation, members scaled by `scale`."""
    out = np.zeros((acts.shape[0], len(concepts)))
    for j, members in enumerate(concepts):
        out[:, j] = (acts[:, members] / scale[members]).max(axis=1)
    return out


def feature_scale(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Each feature's mean non-zero pooled activation over both sides (1 where it never fires)."""
    both = np.concatenate([chosen, rejected])
    fires = (both > 0).sum(axis=0)
    return np.where(fires > 0, both.sum(axis=0) / np.maximum(fires, 1), 1.0)


def badges(table: pd.DataFrame, both_rate: float) -> list[str]:
    """chosen / rejected: a discovery leaning that way; both: no discovery, and it fires on >=
    both_rate of each side; neither: the rest."""
    out = []
    for row in table.itertuples():
        if row.discovered and row.direction in ("chosen", "rejected"):
            out.append(row.direction)
        elif row.rate_chosen >= both_rate and row.rate_rejected >= both_rate:
            out.append("both")
        else:
            out.append("neither")
    return out


def topic_table(fires_c: np.ndarray, fires_r: np.ndarray, topics: Sequence[str], level: float) -> pd.DataFrame:
    """Prompt-conditioned view: per topic and concept, one-sided firings, the chosen share with
    its CI, the sign test's p and its BH q over every cell."""
    topics = np.asarray(topics)
    rows = []
    for topic in sorted(set(topics.tolist())):
        mask = topics == topic
        only_c, only_r, p = sign_test(fires_c[mask], fires_r[mask])
        lo, hi = clopper_pearson(only_c, only_c + only_r, level)
        for j in range(fires_c.shape[1]):
            n = int(only_c[j] + only_r[j])
            rows.append({"topic": topic, "concept": j, "pairs": int(mask.sum()), "chosen_only": int(only_c[j]),
                         "rejected_only": int(only_r[j]), "chosen_share": only_c[j] / n if n else np.nan,
                         "chosen_share_lo": lo[j], "chosen_share_hi": hi[j], "p_sign": p[j]})
    table = pd.DataFrame(rows)
    if len(table):
        table["q_sign"] = bh(table["p_sign"].to_numpy())
    return table


@dataclass
class AuditResult:
    features: pd.DataFrame  # one row per feature (index: feature id)
    concepts: pd.DataFrame  # one row per concept: members, tests, badge
    members: list[list[int]]
    topics: pd.DataFrame  # topic x concept
    null: pd.DataFrame  # sign-flip replicates: discoveries and the smallest q of each
    n_pairs: int


def audit(chosen: np.ndarray, rejected: np.ndarray, length_chosen: np.ndarray, length_rejected: np.ndarray,
          topics: Sequence[str], settings: AuditSettings | None = None) -> AuditResult:
    """The whole audit of one set of pairs (see the module doc)."""
    settings = settings or AuditSettings()
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    if chosen.shape != rejected.shape or chosen.ndim != 2:
        raise ValueError(f"chosen {chosen.shape} and rejected {rejected.shape}: expected two [n_pairs, n_features] arrays")
    n = chosen.shape[0]
    if not (len(length_chosen) == len(length_rejected) == len(topics) == n):
        raise ValueError(f"{n} pairs, but {len(length_chosen)} / {len(length_rejected)} lengths and {len(topics)} topics")
    rng = np.random.default_rng(settings.seed)
    length_diff = np.asarray(length_chosen, dtype=float) - np.asarray(length_rejected, dtype=float)
    live = np.flatnonzero(((chosen > 0).sum(axis=0) + (rejected > 0).sum(axis=0)) >= settings.min_fires)
    features = test_table(chosen[:, live], rejected[:, live], length_diff, settings, rng)
    features.index = pd.Index(live, name="feature")

    members = cluster_features(np.concatenate([chosen, rejected]) > 0, settings.min_fires, settings.min_jaccard)
    scale = feature_scale(chosen, rejected)
    cc, cr = concept_activations(chosen, members, scale), concept_activations(rejected, members, scale)
    concepts = test_table(cc, cr, length_diff, settings, rng)
    concepts.insert(0, "members", [",".join(map(str, m)) for m in members])
    concepts.insert(1, "size", [len(m) for m in members])
    concepts["badge"] = badges(concepts, settings.both_rate)
    concepts.index = pd.Index(range(len(members)), name="concept")
    concepts["explained_by"], concepts["p_conditional"] = explain_away(cc, cr, concepts, settings.fdr)
    return AuditResult(features, concepts, members, topic_table(cc > 0, cr > 0, topics, settings.level),
                       null_calibration(cc, cr, settings), n)


def leaning_only(fires_c: np.ndarray, fires_r: np.ndarray, direction: str) -> np.ndarray:
    """[n_pairs] bool: the unit fires on the side it leans to and not on the other."""
    if direction == "chosen":
        return fires_c & ~fires_r
    if direction == "rejected":
        return fires_r & ~fires_c
    return np.zeros(len(fires_c), dtype=bool)


def explain_away(cc: np.ndarray, cr: np.ndarray, concepts: pd.DataFrame, fdr: float) -> tuple[np.ndarray, np.ndarray]:
    """(explained_by: per concept the stronger kept concept that explains it, -1 if kept or not
    discovered; p_conditional: its re-test's p, Bonferroni over its two tests, NaN if not
    discovered). `cc`, `cr` [n_pairs, n_concepts] are the concept activations the tests used;
    see the module doc."""
    k = len(concepts)
    explained, p_cond = np.full(k, -1), np.full(k, np.nan)
    fires_c, fires_r = cc > 0, cr > 0
    carried = np.zeros(cc.shape[0], dtype=bool)
    kept: list[tuple[int, np.ndarray]] = []
    found = concepts[concepts["discovered"].astype(bool)].sort_values("q", kind="stable")
    for c, row in found.iterrows():
        j = int(c)
        free = ~carried
        _, _, p_sign = sign_test(fires_c[free][:, [j]], fires_r[free][:, [j]])
        p_rank = wilcoxon((cc[free][:, [j]] - cr[free][:, [j]])) if free.any() else np.ones(1)
        p_cond[j] = min(1.0, 2.0 * min(float(p_sign[0]), float(p_rank[0])))
        own = leaning_only(fires_c[:, j], fires_r[:, j], row["direction"])
        if p_cond[j] <= fdr:
            kept.append((j, own))
            carried |= own
        else:
            one_sided = fires_c[:, j] ^ fires_r[:, j]
            explained[j] = max(kept, key=lambda kv: int((kv[1] & one_sided).sum()))[0] if kept else -1
    return explained, p_cond


def null_calibration(chosen: np.ndarray, rejected: np.ndarray, settings: AuditSettings) -> pd.DataFrame:
    """Sign-flipped nulls: each replicate swaps the sides of a random half of the pairs and
    re-runs the concept tests; a calibrated audit discovers something in <= fdr of them."""
    rng = np.random.default_rng([settings.seed, 1])
    rows = []
    for r in range(settings.null_replicates):
        flip = rng.random(chosen.shape[0]) < 0.5
        c = np.where(flip[:, None], rejected, chosen)
        x = np.where(flip[:, None], chosen, rejected)
        if chosen.shape[1]:
            fires_c, fires_r = c > 0, x > 0
            _, _, p_sign = sign_test(fires_c, fires_r)
            q = bh(np.concatenate([p_sign, wilcoxon(c - x)]))
            k = len(p_sign)
            found = (q[:k] <= settings.fdr) | (q[k:] <= settings.fdr)
            rows.append({"replicate": r, "discoveries": int(found.sum()), "min_q": float(q.min())})
        else:
            rows.append({"replicate": r, "discoveries": 0, "min_q": 1.0})
    return pd.DataFrame(rows)


# --- what a person reads first ----------------------------------------------------------------------

def kept_discoveries(concepts: pd.DataFrame) -> pd.Index:
    """The discovered concepts no stronger one explains away (what the interventions act on)."""
    return concepts.index[concepts["discovered"].astype(bool) & (concepts["explained_by"] < 0)]


def reading_order(concepts: pd.DataFrame) -> pd.DataFrame:
    """Kept discoveries by q, then the explained-away ones, then the rest by q."""
    rank = np.where(~concepts["discovered"].astype(bool), 2, np.where(concepts["explained_by"] < 0, 0, 1))
    return concepts.assign(_rank=rank).sort_values(["_rank", "q"], kind="stable").drop(columns="_rank")


def shown_concepts(concepts: pd.DataFrame, n: int) -> list[int]:
    """The concepts a viewer shows with examples: the first n in reading order."""
    return [int(c) for c in reading_order(concepts).index[:n]]
