"""identify stage: features/features.json, features/cards.md, results/metrics/identify.json."""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from igds.activations import pooled_feature_activations, tokenize_records
from igds.artifacts import atomic_dir, atomic_file, write_json
from igds.cards import feature_cards
from igds.config import Params
from igds.features import identify
from igds.models import load_model
from igds.sae import load_sae
from pipelines.common import main
from pipelines.io import peak_rss_bytes, read_split, timed

log = logging.getLogger("identify")


def run(params: Params, args: argparse.Namespace) -> None:
    cfg, layer = params.identify, params.sae.layer
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    sae = load_sae(args.sae, params.model.device)
    prior, general = read_split(args.data / "prior.jsonl"), read_split(args.data / "general.jsonl")
    timing: dict = {}
    with timed(timing):
        result = identify(model, tokenizer, sae, prior, general, cfg, layer)
    info = {r.feature: r.to_dict() for r in result.records}
    card_features = result.ranking[:cfg.card_features]
    pool = read_split(args.data / "pool.jsonl")
    tok_pool = tokenize_records(tokenizer, pool, params.scoring.max_len)
    cards = "# Feature cards\n\nNo feature was chosen.\n"
    if card_features:
        acts = pooled_feature_activations(model, sae, tok_pool, layer, params.scoring.batch_size,
                                          tokenizer.pad_token_id, "all", features=card_features, desc="cards")
        cards = feature_cards(model, tokenizer, sae, layer, pool, tok_pool, acts, card_features, info, cfg.card_examples)
    features = {
        "layer": layer,
        "sae_sha256": sae_digest(args.sae),
        "ranking": result.ranking,
        "baseline_loglik": result.baseline_loglik,
        "n_prior_recall": result.n_prior_recall,
        "n_prior_heldout": result.n_prior_heldout,
        "n_general": result.n_general,
        "interventional": cfg.interventional,
        "features": [r.to_dict() for r in result.records],
        "stability": result.stability,
    }
    metrics = {
        "n_recalled": len(result.records),
        "n_causal": len(result.ranking) if cfg.interventional else None,
        "top_feature": result.ranking[0] if result.ranking else None,
        "top_causal_effect": info[result.ranking[0]]["causal_effect"] if result.ranking else None,
        "baseline_loglik": result.baseline_loglik,
        "stability_jaccard_top_n": result.stability["jaccard_top_n"] if result.stability else None,
        "stability_jaccard_eligible": result.stability["jaccard_eligible"] if result.stability else None,
        "wall_s": timing["wall_s"],
        "peak_rss_bytes": peak_rss_bytes(),
    }
    with atomic_dir(args.out) as tmp:
        write_json(tmp / "features.json", features)
        with atomic_file(tmp / "cards.md") as f:
            f.write(cards)
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
    main("identify", run, _args)
