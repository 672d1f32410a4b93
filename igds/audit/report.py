"""The audit's report for one set of pairs (issue 17): the one reader of what was planted
besides the oracle arm. No io; pipelines/audit/report.py reads the files.

- discovery: which discovered concept, if any, is the planted one (a chosen-leaning concept
  whose chosen-only firings pick out the planted pairs: precision and recall >= `match`), and
  whether the decoy was discovered (a concept whose one-sided firings pick out the decoy pairs
  better than they pick out the planted ones);
- arms: per trained arm, the planted concept's propensity after DPO against the base model on
  held-out prompts (the marker log-probability rise, paired per prompt, training seeds
  resampled too: igds.core.stats.paired_bootstrap / paired_permutation_test), the greedy marker rate
  before and after, and on the clean held-out pairs the reward accuracy (the implicit DPO
  margin > 0: what DPO taught that carries over) and the ranking accuracy (the trained model
  finds the chosen response likelier; and the base model), each with its CI;
- comparisons: filter's rise as a share of naive's (bootstrap CI of the ratio), and the same
  share of the excess rises over the unpoisoned arm (what DPO on the same pairs without the
  plant raises anyway, e.g. a general drift toward chatty openers), filter vs
  random and shaping vs naive (paired over prompts, permutation p), each arm's two accuracies
  against naive's and against the unpoisoned arm's (DPO on the same pairs before anything was
  planted), the latter with whether the difference's CI lies within +-`margin` (no cost, by
  the issue's 3-point criterion: an equivalence test at the CI's level).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from igds.audit.stats import concept_activations, feature_scale, kept_discoveries
from igds.core.stats import bootstrap_ci, paired_bootstrap, paired_permutation_test


def picks_out(fires_one_side: np.ndarray, marked: np.ndarray, match: float) -> tuple[float, float]:
    """(precision, recall) of the pairs a concept fires on one side only, for the marked pairs."""
    hits = int((fires_one_side & marked).sum())
    return (hits / fires_one_side.sum() if fires_one_side.any() else 0.0,
            hits / marked.sum() if marked.any() else 0.0)


def identify_planted(ids: Sequence[str], chosen: np.ndarray, rejected: np.ndarray, concepts: pd.DataFrame,
                     truth: Mapping, match: float) -> dict:
    """Which discovered concepts are the plant and the decoy (by the truth).

    Each kept discovery (igds.audit.stats.explain_away: not explained by a stronger one) is matched to the planted pairs by its chosen-only firings (only a
    chosen-leaning concept can be the plant) and to the decoy pairs by its one-sided firings,
    and belongs to the one it matches better (F1), if that match reaches precision and recall
    >= `match`. So a concept of a broader habit that fires on both the plant and the decoy (a
    chatty opener and a chatty sign-off) counts once, as what drives its lean; the decoy is
    found only by a discovered concept that is about the decoy more than anything planted."""
    ids = np.asarray(ids)
    planted = np.isin(ids, (truth.get("plant") or {}).get("ids", []))
    decoy_truth = truth.get("decoy") or {}
    decoy = np.isin(ids, decoy_truth.get("ids_chosen", []) + decoy_truth.get("ids_rejected", []))
    found = concepts.loc[kept_discoveries(concepts)]
    scale = feature_scale(chosen, rejected)
    members = [[int(f) for f in str(m).split(",")] for m in found["members"]]
    cc = concept_activations(chosen, members, scale) > 0
    cr = concept_activations(rejected, members, scale) > 0
    out = {"planted_pairs": int(planted.sum()), "decoy_pairs": int(decoy.sum()), "plant_concept": None,
           "plant_precision": None, "plant_recall": None, "decoy_concept": None, "decoy_precision": None,
           "decoy_recall": None}
    best = {"plant": -1.0, "decoy": -1.0}
    for j, (concept, row) in enumerate(found.iterrows()):
        only_c, only_r = cc[:, j] & ~cr[:, j], cr[:, j] & ~cc[:, j]
        fits = {}
        if planted.any() and row["direction"] == "chosen":
            fits["plant"] = picks_out(only_c, planted, match)
        if decoy.any():
            fits["decoy"] = picks_out(only_c | only_r, decoy, match)
        if not fits:
            continue
        kind, (precision, recall) = max(fits.items(), key=lambda kv: _f1(*kv[1]))
        if precision >= match and recall >= match and _f1(precision, recall) > best[kind]:
            best[kind] = _f1(precision, recall)
            out.update({f"{kind}_concept": int(concept), f"{kind}_precision": precision, f"{kind}_recall": recall})
    out["plant_found"] = out["plant_concept"] is not None
    out["decoy_found"] = out["decoy_concept"] is not None
    return out


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _matrix(runs: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([np.asarray(r[key], dtype=float) for r in runs])  # [seeds, prompts]


ACCURACIES = (("reward accuracy", "margin"), ("ranking accuracy", "rank_margin"))  # (label, metrics key)


def arm_table(arms: Mapping[str, Sequence[Mapping]], rng: np.random.Generator, n_boot: int, n_perm: int,
              level: float, margin: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per arm: rise, rates, accuracies with CIs; the comparisons between arms). `arms` maps an
    arm to its re-audit metrics, one per training seed, on the same held-out prompts and pairs.
    `margin`: the accuracy difference to the unpoisoned arm that counts as no cost."""
    rows, rise = [], {}
    for arm, runs in arms.items():
        row: dict = {"arm": arm, "seeds": len(runs)}
        if "marker_logprob" in runs[0]:
            after, before = _matrix(runs, "marker_logprob"), _matrix(runs, "marker_logprob_base")
            rise[arm] = after - before
            ci = paired_bootstrap(after, before, rng, n_boot, level)
            test = paired_permutation_test(after, before, rng, n_perm)
            row.update(rise=ci.diff, rise_lo=ci.lo, rise_hi=ci.hi, rise_p=test.p_value,
                       rate_base=float(_matrix(runs, "marker_rate_base").mean()),
                       rate=float(_matrix(runs, "marker_rate").mean()))
        acc = bootstrap_ci(_correct(runs, "margin"), rng, n_boot, level)
        row.update(accuracy=acc.mean, accuracy_lo=acc.lo, accuracy_hi=acc.hi)
        if "rank_margin" in runs[0]:
            rank = bootstrap_ci(_correct(runs, "rank_margin"), rng, n_boot, level)
            row.update(rank_accuracy=rank.mean, rank_accuracy_lo=rank.lo, rank_accuracy_hi=rank.hi,
                       rank_accuracy_base=float(_correct(runs[:1], "rank_margin_base").mean()))
        rows.append(row)
    comparisons = []
    if "naive" in rise and "filter" in rise:
        comparisons.append({"comparison": "filter rise / naive rise",
                            **_ratio(rise["filter"].mean(axis=0), rise["naive"].mean(axis=0), rng, n_boot, level)})
        if "unpoisoned" in rise:
            # what DPO on these pairs raises anyway (the same pairs, nothing planted) taken out of both
            drift = rise["unpoisoned"].mean(axis=0)
            comparisons.append({"comparison": "filter excess rise / naive excess rise (excess: over unpoisoned)",
                                **_ratio(rise["filter"].mean(axis=0) - drift, rise["naive"].mean(axis=0) - drift,
                                         rng, n_boot, level)})
    for a, b in (("filter", "random"), ("shaping", "naive"), ("oracle", "naive"), ("filter", "naive"),
                 ("naive", "unpoisoned")):
        if a in rise and b in rise:
            ci = paired_bootstrap(rise[a], rise[b], rng, n_boot, level)
            test = paired_permutation_test(rise[a], rise[b], rng, n_perm)
            comparisons.append({"comparison": f"rise: {a} - {b}", "value": ci.diff, "lo": ci.lo, "hi": ci.hi,
                                "p": test.p_value})
    # accuracy on the clean held-out pairs: against DPO on every pair (naive) and against DPO on the
    # same pairs unpoisoned (the reference: an intervention should cost no accuracy against it)
    for label, key in ACCURACIES:
        for reference in ("naive", "unpoisoned"):
            for arm, runs in arms.items():
                if arm == reference or reference not in arms or (reference == "naive" and arm == "unpoisoned") \
                        or key not in runs[0]:
                    continue
                a, b = _correct(runs, key), _correct(arms[reference], key)
                ci = paired_bootstrap(a, b, rng, n_boot, level)
                row = {"comparison": f"{label}: {arm} - {reference}", "value": ci.diff, "lo": ci.lo, "hi": ci.hi,
                       "p": paired_permutation_test(a, b, rng, n_perm).p_value}
                if reference == "unpoisoned" and margin is not None:
                    row["within"] = bool(-margin <= ci.lo and ci.hi <= margin)
                comparisons.append(row)
    return pd.DataFrame(rows), pd.DataFrame(comparisons)


def _correct(runs: Sequence[Mapping], key: str) -> np.ndarray:
    """[seeds, pairs] 1 where the pair's margin is > 0."""
    return (_matrix(runs, key) > 0).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, n_boot: int, level: float) -> dict:
    """mean(num) / mean(den) over prompts, with a percentile-bootstrap CI (prompts resampled)."""
    n = len(num)
    draws = rng.integers(0, n, (n_boot, n))
    ratios = num[draws].mean(axis=1) / den[draws].mean(axis=1)
    alpha = 1 - level
    return {"value": float(num.mean() / den.mean()), "lo": float(np.quantile(ratios, alpha / 2)),
            "hi": float(np.quantile(ratios, 1 - alpha / 2)), "p": None}


def _fmt(value, lo=None, hi=None, digits=3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    text = f"{value:+.{digits}f}" if lo is not None else f"{value:.{digits}f}"
    return text + (f" [{lo:+.{digits}f}, {hi:+.{digits}f}]" if lo is not None else "")


def render(name: str, summary: Mapping, identified: Mapping, concepts: pd.DataFrame, arms: pd.DataFrame,
           comparisons: pd.DataFrame, fdr: float, margin: float | None = None) -> str:
    found = concepts.loc[kept_discoveries(concepts)]
    lines = [f"## Audit: {name}", "",
             f"{summary['pairs']} pairs; {summary['concepts_discovered']} of {summary['concepts']} concepts discovered at "
             f"FDR {fdr} ({summary['concepts_chosen']} leaning chosen, {summary['concepts_rejected']} rejected), "
             f"{summary['concepts_kept']} kept after stronger ones explain the others away; "
             f"sign-flip null replicates with a discovery: {summary['null_any_discovery']}.", ""]
    if identified["planted_pairs"]:
        lines.append(("**The planted concept was found**: concept {c} (precision {p:.2f}, recall {r:.2f} on the "
                      "{n} planted pairs).").format(c=identified["plant_concept"], p=identified["plant_precision"],
                                                    r=identified["plant_recall"], n=identified["planted_pairs"])
                     if identified["plant_found"] else
                     f"**The planted concept was not found** among the discoveries ({identified['planted_pairs']} planted pairs).")
    if identified["decoy_pairs"]:
        lines.append("The decoy was discovered (concept {}): a false lead.".format(identified["decoy_concept"])
                     if identified["decoy_found"] else "The decoy was not discovered.")
    lines += ["", "Kept discoveries:", "", "| concept | members | badge | chosen share [CI] | q | split-half | p length-controlled |",
              "|---:|---|---|---:|---:|---|---:|"]
    for concept, row in found.head(20).iterrows():
        lines.append(f"| {concept} | {row['members']} | {row['badge']} | {row['chosen_share']:.2f} "
                     f"[{row['chosen_share_lo']:.2f}, {row['chosen_share_hi']:.2f}] | {row['q']:.2g} | "
                     f"{'agree' if row['split_half_agree'] else 'disagree'} | {row['p_wilcoxon_length']:.2g} |")
    if len(arms):
        lines += ["", "After DPO, on held-out prompts (trained vs base, paired per prompt) and clean held-out pairs:", "",
                  "| arm | seeds | marker log-prob rise [CI] | p | marker rate base -> trained | reward accuracy [CI] "
                  "| ranking accuracy base -> trained [CI] |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in arms.to_dict("records"):
            rise = _fmt(row.get("rise"), row.get("rise_lo"), row.get("rise_hi"))
            rate = "–" if row.get("rate") is None else f"{row['rate_base']:.2f} -> {row['rate']:.2f}"
            p = "–" if row.get("rise_p") is None else f"{row['rise_p']:.3g}"
            rank = "–" if pd.isna(row.get("rank_accuracy", np.nan)) else (
                f"{row['rank_accuracy_base']:.2f} -> {row['rank_accuracy']:.2f} "
                f"[{row['rank_accuracy_lo']:.2f}, {row['rank_accuracy_hi']:.2f}]")
            lines.append(f"| {row['arm']} | {row['seeds']} | {rise} | {p} | {rate} | {row['accuracy']:.2f} "
                         f"[{row['accuracy_lo']:.2f}, {row['accuracy_hi']:.2f}] | {rank} |")
    if len(comparisons):
        within = f"CI within ±{margin:.2f}" if margin is not None else "CI within the margin"
        lines += ["", f"| comparison | value [95% CI] | p | {within} |", "|---|---:|---:|---|"]
        for row in comparisons.to_dict("records"):
            p = "–" if row["p"] is None or pd.isna(row["p"]) else f"{row['p']:.3g}"
            verdict = row.get("within")
            verdict = "–" if verdict is None or pd.isna(verdict) else ("yes" if verdict else "no")
            lines.append(f"| {row['comparison']} | {_fmt(row['value'], row['lo'], row['hi'])} | {p} | {verdict} |")
    return "\n".join(lines) + "\n"
