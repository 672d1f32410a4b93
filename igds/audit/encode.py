"""The audit's encoding (issue 17): each pair's chosen and rejected response through the model
and the run's SAE, pooled per response (what igds.audit.stats tests), and the per-token activations
of the concepts a viewer shows. The model-touching half of the audit; igds.audit.stats is the
statistics alone, so the stages that only read its outputs do not depend on the model code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from igds.audit.stats import concept_activations, feature_scale


@dataclass
class EncodedPairs:
    chosen: np.ndarray  # [n_pairs, d_sae] pooled activation on the chosen response
    rejected: np.ndarray  # [n_pairs, d_sae]
    length_chosen: np.ndarray  # [n_pairs] in-scope tokens of the chosen response
    length_rejected: np.ndarray


def encode_pairs(model, tokenizer, sae, pairs: Sequence, layer: int, batch_size: int, max_len: int, scope: str,
                 pooling: str) -> EncodedPairs:
    """Each pair's chosen and rejected response in the chat template after its prompt,
    through the model to `layer` and the SAE, pooled over the `scope` tokens."""
    from igds.core.data.schema import make_record  # noqa: PLC0415
    from igds.core.pooling import pooled_feature_activations  # noqa: PLC0415
    from igds.core.tokens import tokenize_records  # noqa: PLC0415

    records = [make_record(p.prompt, "", response, p.task, p.source) for p in pairs for response in (p.chosen, p.rejected)]
    tok = tokenize_records(tokenizer, records, max_len)
    acts = pooled_feature_activations(model, sae, tok, layer, batch_size, tokenizer.pad_token_id, scope,
                                      desc="encoding pairs")
    pooled = acts.pooled(pooling).double().numpy()
    return EncodedPairs(pooled[0::2], pooled[1::2], acts.n_tokens[0::2].copy(), acts.n_tokens[1::2].copy())


def concept_examples(model, tokenizer, sae, pairs: Sequence, layer: int, max_len: int, scope: str,
                     chosen: np.ndarray, rejected: np.ndarray, concepts: pd.DataFrame, shown: Sequence[int],
                     n_examples: int) -> dict[int, list[dict]]:
    """Per shown concept, the n_examples pairs it separates most (its leaning side's activation
    minus the other side's, largest first; for a concept without a lean the absolute
    difference), each side's response tokens in `scope` and the concept's activation on each
    (its largest member activation, members scaled as in the tests: feature_scale)."""
    from igds.core.cards import token_feature_activations  # noqa: PLC0415
    from igds.core.data.schema import make_record  # noqa: PLC0415
    from igds.core.tokens import collate, tokenize_records  # noqa: PLC0415

    scale = feature_scale(chosen, rejected)
    members = {c: [int(f) for f in str(concepts.loc[c, "members"]).split(",")] for c in shown}
    picks: dict[int, list[int]] = {}
    for c in shown:
        cc = concept_activations(chosen, [members[c]], scale)[:, 0]
        cr = concept_activations(rejected, [members[c]], scale)[:, 0]
        lean = concepts.loc[c, "direction"]
        gap = cc - cr if lean == "chosen" else cr - cc if lean == "rejected" else np.abs(cc - cr)
        order = np.argsort(-gap, kind="stable")
        picks[c] = [int(i) for i in order[:n_examples] if gap[i] > 0]
    needed = sorted({i for rows in picks.values() for i in rows})
    features = sorted({f for c in shown for f in members[c]})
    column = {f: j for j, f in enumerate(features)}
    records = [make_record(pairs[i].prompt, "", response, pairs[i].task, pairs[i].source)
               for i in needed for response in (pairs[i].chosen, pairs[i].rejected)]
    tok = tokenize_records(tokenizer, records, max_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sides: dict[tuple[int, str], tuple[list[str], np.ndarray]] = {}
    for k in range(len(records)):
        ids = tok.input_ids[k]
        mask = collate(tok, [k], pad, scope).scope_mask[0].numpy().astype(bool)[: len(ids)]
        acts = token_feature_activations(model, sae, ids, layer, features).numpy() if features else np.zeros((len(ids), 0))
        keep = np.flatnonzero(mask)
        text = [tokenizer.decode([ids[t]]) for t in keep]
        sides[(needed[k // 2], ("chosen", "rejected")[k % 2])] = (text, acts[keep])
    out: dict[int, list[dict]] = {}
    for c in shown:
        cols = [column[f] for f in members[c]]
        rows = []
        for i in picks[c]:
            row = {"pair": pairs[i].id, "topic": pairs[i].task, "prompt": pairs[i].prompt}
            for side in ("chosen", "rejected"):
                text, acts = sides[(i, side)]
                per_token = (acts[:, cols] / scale[members[c]]).max(axis=1) if len(text) else np.zeros(0)
                row[side] = {"tokens": text, "acts": [round(float(a), 4) for a in per_token]}
            rows.append(row)
        out[c] = rows
    return out
