"""The audit's interventions on a set of preference pairs (issue 17), from the audit's own
output (audit/<set>/: pooled activations and concepts), never from what was planted:

- naive: every pair;
- filter: the pairs whose preference a flagged concept carries dropped (flagged: `audit.flag`,
  a person's list, or every discovery not explained away by a stronger one). A concept that leans
  to the chosen side carries a pair when it fires on its chosen response and not on its
  rejected one (the other way round for a concept leaning to the rejected side);
- random: as many pairs dropped, drawn uniformly (the control: is it the concept or the count?);
- shaping: every pair, each with an offset, `shaping` x the sum over flagged concepts of the
  concept's scaled score on the chosen response minus on the rejected one (signed by the
  concept's lean), for the DPO margin: the preference the concept explains is explained by
  the offset, so the policy need not learn the concept.
The oracle arm (the planted pairs dropped) is `oracle_pairs`, for the oracle@<set> stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from igds.audit.stats import concept_activations, feature_scale, kept_discoveries, leaning_only


_SALT_RANDOM = 0x52414E44  # "RAND": the random arm's own stream


@dataclass
class Arm:
    rows: list[dict]  # the pairs kept, as dicts (shaping: with "offset")
    summary: dict


def flagged(concepts: pd.DataFrame, flag: Sequence[int] | None) -> list[int]:
    """The concept ids intervened on: `flag`, or every discovery no stronger one explains away."""
    if flag is None:
        return [int(c) for c in kept_discoveries(concepts)]
    unknown = sorted(set(flag) - set(int(c) for c in concepts.index))
    if unknown:
        raise ValueError(f"audit.flag names concepts {unknown}, not in concepts.csv (ids 0..{len(concepts) - 1})")
    return [int(c) for c in flag]


def members_of(concepts: pd.DataFrame, ids: Sequence[int]) -> list[list[int]]:
    return [[int(f) for f in str(concepts.loc[c, "members"]).split(",")] for c in ids]


def concept_scores(chosen: np.ndarray, rejected: np.ndarray, concepts: pd.DataFrame,
                   ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scaled concept score on chosen, on rejected [n_pairs, len(ids)], each concept's lean: +1
    chosen, -1 rejected, 0 none), computed as the audit computed them."""
    members = members_of(concepts, ids)
    scale = feature_scale(chosen, rejected)
    lean = np.array([{"chosen": 1.0, "rejected": -1.0}.get(concepts.loc[c, "direction"], 0.0) for c in ids])
    return concept_activations(chosen, members, scale), concept_activations(rejected, members, scale), lean


def carried(score_c: np.ndarray, score_r: np.ndarray, lean: np.ndarray) -> np.ndarray:
    """[n_pairs] bool: some flagged concept fires on the side it leans to and not on the other
    (igds.audit.stats.leaning_only, the audit's own rule for what a concept carries)."""
    out = np.zeros(score_c.shape[0], dtype=bool)
    for j, sign in enumerate(lean):
        direction = "chosen" if sign > 0 else "rejected" if sign < 0 else "none"
        out |= leaning_only(score_c[:, j] > 0, score_r[:, j] > 0, direction)
    return out


def arm_pairs(arm: str, pairs: Sequence[dict], chosen: np.ndarray, rejected: np.ndarray, concepts: pd.DataFrame,
              flag: Sequence[int] | None, shaping: float, drop_seed: int) -> Arm:
    """One arm's pairs from the train pairs (in activations order) and the audit's concepts."""
    ids = flagged(concepts, flag)
    score_c, score_r, lean = concept_scores(chosen, rejected, concepts, ids)
    carry = carried(score_c, score_r, lean)
    n = len(pairs)
    summary = {"arm": arm, "pairs": n, "flagged": ids, "carried": int(carry.sum())}
    if arm == "naive":
        keep, rows = np.ones(n, dtype=bool), [dict(p) for p in pairs]
    elif arm == "filter":
        keep = ~carry
    elif arm == "random":
        keep = np.ones(n, dtype=bool)
        # salted: unsalted, drop_seed 0 drew the very permutation the generator plants with (plant
        # seed 0), so the "random" arm dropped exactly the planted pairs
        keep[np.random.default_rng([drop_seed, _SALT_RANDOM]).permutation(n)[:int(carry.sum())]] = False
    elif arm == "shaping":
        keep = np.ones(n, dtype=bool)
        offset = shaping * ((score_c - score_r) * lean).sum(axis=1)
        rows = [{**p, "offset": float(o)} for p, o in zip(pairs, offset)]
        summary["offset_mean"], summary["offset_nonzero"] = float(offset.mean()), int((offset != 0).sum())
    else:
        raise ValueError(f"arm {arm!r} is not one of naive, filter, random, shaping")
    if arm in ("filter", "random"):
        rows = [dict(p) for p, k in zip(pairs, keep) if k]
    summary["kept"], summary["dropped"] = int(keep.sum()), int(n - keep.sum())
    return Arm(rows, summary)


def unpoisoned_pairs(pairs: Sequence[dict], truth: dict) -> Arm:
    """The same pairs as they were before anything was planted (truth['unpoisoned']; a set read
    from a file had nothing planted: its pairs as read). DPO on them is the reference a clean
    data set gives."""
    rows = [dict(p) for p in truth.get("unpoisoned", pairs)]
    if len(rows) != len(pairs):
        raise ValueError(f"the truth holds {len(rows)} unpoisoned pairs for {len(pairs)} train pairs; re-run prepare-pairs")
    return Arm(rows, {"arm": "unpoisoned", "pairs": len(pairs), "kept": len(rows), "dropped": 0})


def oracle_pairs(pairs: Sequence[dict], truth: dict) -> Arm:
    """The planted pairs dropped: what a perfect audit's filter would do."""
    planted = set((truth.get("plant") or {}).get("ids", []))
    rows = [dict(p) for p in pairs if p["id"] not in planted]
    return Arm(rows, {"arm": "oracle", "pairs": len(pairs), "kept": len(rows), "dropped": len(pairs) - len(rows)})
