"""Feature cards: for each chosen feature, its top activating pool snippets, with the
tokens on which it fires marked, so a reader can see what the feature is about."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from igds.data import Record
from igds.models.residual import run_to_layer
from igds.pooling import FeatureActivations
from igds.tokens import Tokenized, collate


def token_activations(model, sae, ids: list[int], layer: int, feature: int) -> list[float]:
    """The feature's activation on each token of one example (position 0 reads 0)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        resid = run_to_layer(model, torch.tensor([ids], device=device), None, layer)[0]  # [seq, d]
        acts = sae.encode(resid.to(sae.W_enc.dtype))[:, feature].float().cpu().tolist()
    acts[0] = 0.0
    return acts


def scoped_token_activations(model, sae, tok: Tokenized, i: int, layer: int, feature: int, scope: str,
                             pad_id: int = 0) -> list[float]:
    """token_activations of example `i` of `tok`, 0 outside `scope` (the tokens the feature was
    recalled on and is scored on: a card shows where it counts, not where else it fires)."""
    acts = token_activations(model, sae, tok.input_ids[i], layer, feature)
    mask = collate(tok, [i], pad_id, scope).scope_mask[0].tolist()
    return [a if m else 0.0 for a, m in zip(acts, mask)]


def render_snippet(tokenizer, ids: list[int], acts: list[float], window: int = 24) -> str:
    """Text around the strongest token; firing tokens as ⟦token|activation⟧."""
    peak = max(range(len(acts)), key=acts.__getitem__)
    lo, hi = max(0, peak - window), min(len(ids), peak + window + 1)
    parts = []
    for i in range(lo, hi):
        text = tokenizer.decode([ids[i]]).replace("\n", "⏎").replace("|", "¦")
        parts.append(f"⟦{text}|{acts[i]:.1f}⟧" if acts[i] > 0 else text)
    return ("…" if lo > 0 else "") + "".join(parts) + ("…" if hi < len(ids) else "")


def feature_cards(model, tokenizer, sae, layer: int, pool: Sequence[Record], tok: Tokenized,
                  acts: FeatureActivations, features: Sequence[int], feature_info: dict[int, dict],
                  n_examples: int, scope: str = "all", pad_id: int = 0) -> str:
    """cards.md: one section per feature; `acts` holds the pool's pooled activations of
    `features` (in that order) over the `scope` tokens, and only those are marked."""
    lines = ["# Feature cards", "",
             f"Top activating pool examples for each chosen feature, on the `{scope}` tokens (identify.scope). "
             "Firing tokens in that scope are marked ⟦token|activation⟧; ⏎ is a newline.", ""]
    for col, feature in enumerate(features):
        info = feature_info[feature]
        lines += [f"## Feature {feature} (rank {info.get('rank')})", "",
                  f"freq_prior {info['freq_prior']:.3f} · freq_general {info['freq_general']:.3f} · "
                  f"causal effect {_fmt(info.get('causal_effect'))} {_ci(info)}(alpha {info.get('best_alpha')}) · "
                  f"mean activation when active {info['mean_when_active']:.2f}", ""]
        top = torch.argsort(acts.max_act[:, col], descending=True, stable=True)[:n_examples].tolist()
        for i in top:
            if acts.max_act[i, col] <= 0:
                break
            token_acts = scoped_token_activations(model, sae, tok, i, layer, feature, scope, pad_id)
            lines.append(f"- `{pool[i].id}` ({pool[i].task}, max {acts.max_act[i, col]:.2f}): "
                         f"{render_snippet(tokenizer, tok.input_ids[i], token_acts)}")
        lines.append("")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _ci(info: dict) -> str:
    lo, hi = info.get("causal_effect_lo"), info.get("causal_effect_hi")
    return f"[{_fmt(lo)}, {_fmt(hi)}] " if lo is not None and hi is not None else ""
