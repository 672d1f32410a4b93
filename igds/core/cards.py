"""Feature cards: for each chosen feature, its top activating pool snippets, with the
tokens on which it fires marked, so a reader can see what the feature is about."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from igds.core.data import Record
from igds.core.models.residual import run_to_layer
from igds.core.pooling import FeatureActivations
from igds.core.tokens import Tokenized, collate


def token_activations(model, sae, ids: list[int], layer: int, feature: int) -> list[float]:
    """The feature's activation on each token of one example (position 0 reads 0)."""
    return token_feature_activations(model, sae, ids, layer, [feature])[:, 0].tolist()


def token_feature_activations(model, sae, ids: list[int], layer: int, features: Sequence[int]) -> torch.Tensor:
    """[seq, len(features)]: the features' activations on each token of one example (position 0 reads 0)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        resid = run_to_layer(model, torch.tensor([ids], device=device), None, layer)[0]  # [seq, d]
        acts = sae.encode(resid.to(sae.W_enc.dtype))[:, list(features)].float().cpu()
    acts = acts.clone()  # out of inference mode: callers may write into it
    acts[0] = 0.0
    return acts


def scoped_token_activations(model, sae, tok: Tokenized, i: int, layer: int, feature: int, scope: str,
                             pad_id: int = 0) -> list[float]:
    """token_activations of example `i` of `tok`, 0 outside `scope` (the tokens the feature was
    recalled on and is scored on: a card shows where it counts, not where else it fires)."""
    acts = token_activations(model, sae, tok.input_ids[i], layer, feature)
    mask = collate(tok, [i], pad_id, scope).scope_mask[0].tolist()
    return [a if m else 0.0 for a, m in zip(acts, mask)]


def snippet_window(acts: Sequence[float], n: int, window: int = 24) -> tuple[int, int]:
    """[lo, hi): the tokens within `window` of the strongest one."""
    peak = max(range(len(acts)), key=acts.__getitem__)
    return max(0, peak - window), min(n, peak + window + 1)


def render_snippet(tokenizer, ids: list[int], acts: list[float], window: int = 24) -> str:
    """Text around the strongest token; firing tokens as ⟦token|activation⟧."""
    lo, hi = snippet_window(acts, len(ids), window)
    parts = []
    for i in range(lo, hi):
        text = tokenizer.decode([ids[i]]).replace("\n", "⏎").replace("|", "¦")
        parts.append(f"⟦{text}|{acts[i]:.1f}⟧" if acts[i] > 0 else text)
    return ("…" if lo > 0 else "") + "".join(parts) + ("…" if hi < len(ids) else "")


def card_entries(model, tokenizer, sae, layer: int, pool: Sequence[Record], tok: Tokenized,
                 acts: FeatureActivations, features: Sequence[int], feature_info: dict[int, dict],
                 n_examples: int, scope: str = "all", pad_id: int = 0) -> list[dict]:
    """Per feature (in order): its info and its top activating pool examples, each with the
    token window around its peak and the feature's activation on each token in `scope`.
    `acts` holds the pool's pooled activations of `features` (in that order)."""
    out = []
    for col, feature in enumerate(features):
        examples = []
        top = torch.argsort(acts.max_act[:, col], descending=True, stable=True)[:n_examples].tolist()
        for i in top:
            if acts.max_act[i, col] <= 0:
                break
            ids = tok.input_ids[i]
            token_acts = scoped_token_activations(model, sae, tok, i, layer, feature, scope, pad_id)
            lo, hi = snippet_window(token_acts, len(ids))
            examples.append({"id": pool[i].id, "task": pool[i].task, "max": float(acts.max_act[i, col]),
                             "snippet": render_snippet(tokenizer, ids, token_acts),
                             "tokens": [tokenizer.decode([t]) for t in ids[lo:hi]],
                             "acts": [round(a, 4) for a in token_acts[lo:hi]], "cut_left": lo > 0,
                             "cut_right": hi < len(ids)})
        out.append({"feature": int(feature), "info": feature_info[feature], "examples": examples})
    return out


def cards_markdown(entries: Sequence[dict], scope: str) -> str:
    """cards.md: one section per feature, firing tokens marked ⟦token|activation⟧."""
    lines = ["# Feature cards", "",
             f"Top activating pool examples for each chosen feature, on the `{scope}` tokens (identify.scope). "
             "Firing tokens in that scope are marked ⟦token|activation⟧; ⏎ is a newline.", ""]
    for entry in entries:
        feature, info = entry["feature"], entry["info"]
        lines += [f"## Feature {feature} (rank {info.get('rank')})", "", _stats(info), ""]
        for ex in entry["examples"]:
            lines.append(f"- `{ex['id']}` ({ex['task']}, max {ex['max']:.2f}): {ex['snippet']}")
        lines.append("")
    return "\n".join(lines)


def cards_html(entries: Sequence[dict], scope: str) -> str:
    """cards.html: the same cards as one self-contained page (igds.core.pages), each example's tokens
    shaded by the feature's activation."""
    from igds.core.pages import esc, highlight, page, section  # noqa: PLC0415

    sections = [f'<p class="note">Top activating pool examples for each chosen feature, on the <code>{esc(scope)}</code> '
                "tokens (identify.scope); hover a shaded token for its activation.</p>"]
    for entry in entries:
        feature, info = entry["feature"], entry["info"]
        parts = [f'<p class="note">{esc(_stats(info))}</p>']
        for ex in entry["examples"]:
            text = highlight(ex["tokens"], ex["acts"])
            parts.append(f'<p><code>{esc(ex["id"])}</code> ({esc(ex["task"])}, max {ex["max"]:.2f})</p>'
                         f'<div class="side card">{"…" if ex["cut_left"] else ""}{text}{"…" if ex["cut_right"] else ""}</div>')
        if not entry["examples"]:
            parts.append('<p class="note">It fires on no pool example.</p>')
        sections.append(section(f"Feature {feature} (rank {info.get('rank')})", *parts, anchor=f"f{feature}"))
    if not entries:
        sections.append('<p class="note">No feature was chosen.</p>')
    return page("Feature cards", sections, {"scope": scope, "cards": list(entries)}, plots=False)


def feature_cards(model, tokenizer, sae, layer: int, pool: Sequence[Record], tok: Tokenized,
                  acts: FeatureActivations, features: Sequence[int], feature_info: dict[int, dict],
                  n_examples: int, scope: str = "all", pad_id: int = 0) -> str:
    """cards.md of card_entries."""
    return cards_markdown(card_entries(model, tokenizer, sae, layer, pool, tok, acts, features, feature_info,
                                       n_examples, scope, pad_id), scope)


def _stats(info: dict) -> str:
    return (f"freq_prior {info['freq_prior']:.3f} · freq_general {info['freq_general']:.3f} · "
            f"causal effect {_fmt(info.get('causal_effect'))} {_ci(info)}(alpha {info.get('best_alpha')}) · "
            + (f"adjusted p {info['p_adjusted']:.3g} (over features x alphas) · " if info.get("p_adjusted") is not None
               else "")
            + f"mean activation when active {info['mean_when_active']:.2f}")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _ci(info: dict) -> str:
    lo, hi = info.get("causal_effect_lo"), info.get("causal_effect_hi")
    return f"[{_fmt(lo)}, {_fmt(hi)}] " if lo is not None and hi is not None else ""
