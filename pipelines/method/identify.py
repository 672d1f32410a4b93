"""identify stage: features/features.json, features/cards.md and cards.html, results/metrics/identify.json."""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from igds.core.artifacts import atomic_dir, atomic_file, write_json
from igds.core.cards import card_entries, cards_html, cards_markdown
from igds.params import Params
from igds.method.features import Identification, identify
from igds.core.models.loading import load_model
from igds.core.pooling import pooled_feature_activations
from igds.core.sae import load_sae
from igds.core.tokens import tokenize_records
from pipelines.common import main
from pipelines.io import peak_rss_bytes, read_pools, read_split, timed

log = logging.getLogger("identify")


def features_document(result: Identification, layer: int, sae_sha256: str, interventional: bool) -> dict:
    """features/features.json: every recalled feature, the ranking IGDS scores with, stability."""
    return {
        "layer": layer,
        "sae_sha256": sae_sha256,
        "ranking": result.ranking,
        "baseline_loglik": result.baseline_loglik,
        "n_prior_recall": result.n_prior_recall,
        "n_prior_heldout": result.n_prior_heldout,
        "n_general": result.n_general,
        "interventional": interventional,
        "features": [r.to_dict() for r in result.records],
        "stability": result.stability,
        "fallback": result.fallback,
    }


def identify_metrics(result: Identification, interventional: bool) -> dict:
    """results/metrics/identify.json, without the timing."""
    top = result.records_by_id().get(result.ranking[0]) if result.ranking else None
    return {
        "n_recalled": len(result.records),
        "n_causal": len(result.ranking) if interventional else None,
        "top_feature": result.ranking[0] if result.ranking else None,
        "top_causal_effect": top.causal_effect if top is not None else None,
        "top_causal_effect_lo": top.causal_effect_lo if top is not None else None,
        "top_causal_effect_hi": top.causal_effect_hi if top is not None else None,
        "top_p_adjusted": top.p_adjusted if top is not None else None,
        "fallback": result.fallback,  # the rule that chose the features when keep_rule kept none (none_kept)
        "n_prior_heldout": result.n_prior_heldout,
        "baseline_loglik": result.baseline_loglik,
        "stability_jaccard_top_n": result.stability["jaccard_top_n"] if result.stability else None,
        "stability_jaccard_eligible": result.stability["jaccard_eligible"] if result.stability else None,
    }


def cards(params: Params, loaded, sae, pool: list, result: Identification) -> tuple[str, str]:
    """features/cards.md and cards.html: the top activating pool snippets of the first
    card_features chosen features."""
    chosen = result.ranking[:params.identify.card_features]
    scope = params.identify.scope
    if not chosen:
        return cards_markdown([], scope) + "No feature was chosen.\n", cards_html([], scope)
    model, tokenizer, layer = loaded.model, loaded.tokenizer, params.sae.layer
    tok_pool = tokenize_records(tokenizer, pool, params.scoring.max_len)
    acts = pooled_feature_activations(model, sae, tok_pool, layer, params.scoring.batch_size,
                                      tokenizer.pad_token_id, scope, features=chosen, desc="cards")
    info = {r.feature: r.to_dict() for r in result.records}
    entries = card_entries(model, tokenizer, sae, layer, pool, tok_pool, acts, chosen, info,
                           params.identify.card_examples, scope, tokenizer.pad_token_id)
    return cards_markdown(entries, scope), cards_html(entries, scope)


def run(params: Params, args: argparse.Namespace) -> None:
    cfg, layer = params.identify, params.sae.layer
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    sae = load_sae(args.sae, params.model.device)
    prior, general = read_split(args.data / "prior.jsonl"), read_split(args.data / "general.jsonl")
    timing: dict = {}
    with timed(timing):
        result = identify(loaded.model, loaded.tokenizer, sae, prior, general, cfg, layer, seed=params.seed)
    cards_md, cards_page = cards(params, loaded, sae, read_pools(args.data, params), result)
    features = features_document(result, layer, sae_digest(args.sae), cfg.interventional)
    metrics = {**identify_metrics(result, cfg.interventional), "wall_s": timing["wall_s"],
               "peak_rss_bytes": peak_rss_bytes()}
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "features.json", features)
        with atomic_file(tmp / "cards.md") as f:
            f.write(cards_md)
        with atomic_file(tmp / "cards.html") as f:
            f.write(cards_page)
    write_json(args.metrics, metrics)
    log.info("recalled %d features, %s causal; ranking %s; stability Jaccard %s; %.0f s",
             metrics["n_recalled"], metrics["n_causal"], result.ranking[:10],
             metrics["stability_jaccard_top_n"], timing["wall_s"])


def sae_digest(path: Path) -> str:
    """Hash of the SAE's files: features.json changes whenever the SAE does."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file() and p.name != "metrics.json"):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--sae", type=Path, default=Path("sae"))
    parser.add_argument("--out", type=Path, default=Path("features"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics/identify.json"))


if __name__ == "__main__":
    main("identify", run, _args, reads=lambda params, args: {"sae": args.sae})
