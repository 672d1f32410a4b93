"""audit@<set> stage: audit/<set>/ with the pairs' pooled SAE activations (activations.npz),
the per-feature and per-concept tests (features.csv, concepts.csv), the topic x concept view
(topics.csv), the sign-flip null replicates (null.csv), the shown concepts' example pairs with
per-token activations (examples.json, for the viewer) and summary.json; the summary also
goes to results/metrics/audit-<set>.json. Reads pairs/<set>/train.jsonl and sae/, never the
truth file."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from igds.core.artifacts import atomic_dir, write_json
from igds.audit.stats import audit, kept_discoveries, shown_concepts
from igds.audit.encode import concept_examples, encode_pairs
from igds.params import Params
from igds.core.models.loading import load_model
from pipelines.audit.common import read_pairs, set_arg
from pipelines.common import main

log = logging.getLogger("audit")


def summary(result, n_features: int, wall_s: float) -> dict:
    found = result.concepts[result.concepts.discovered]
    return {
        "pairs": result.n_pairs, "features": n_features, "features_tested": len(result.features),
        "features_discovered": int(result.features.discovered.sum()), "concepts": len(result.concepts),
        "concepts_discovered": len(found), "concepts_kept": len(kept_discoveries(result.concepts)),
        "concepts_chosen": int((found.badge == "chosen").sum()), "concepts_rejected": int((found.badge == "rejected").sum()),
        "null_any_discovery": float((result.null.discoveries > 0).mean()) if len(result.null) else None,
        "null_replicates": len(result.null), "wall_s": round(wall_s, 3),
    }


def run(params: Params, args: argparse.Namespace) -> None:
    from igds.core.sae import load_sae  # noqa: PLC0415

    set_arg(params, args.set)
    cfg = params.audit
    pairs = read_pairs(args.pairs / "train.jsonl")
    t0 = time.perf_counter()
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    sae = load_sae(args.sae, params.model.device)
    encoded = encode_pairs(loaded.model, loaded.tokenizer, sae, pairs, params.sae.layer, params.scoring.batch_size,
                           params.scoring.max_len, cfg.scope, cfg.pooling)
    result = audit(encoded.chosen, encoded.rejected, encoded.length_chosen, encoded.length_rejected,
                   [p.task for p in pairs], cfg.stats)
    shown = shown_concepts(result.concepts, cfg.view_concepts)
    examples = concept_examples(loaded.model, loaded.tokenizer, sae, pairs, params.sae.layer, params.scoring.max_len,
                                cfg.scope, encoded.chosen, encoded.rejected, result.concepts, shown, cfg.view_examples)
    info = summary(result, encoded.chosen.shape[1], time.perf_counter() - t0)
    with atomic_dir(args.out) as tmp:
        np.savez_compressed(tmp / "activations.npz", ids=np.array([p.id for p in pairs]), chosen=encoded.chosen.astype(np.float32),
                            rejected=encoded.rejected.astype(np.float32), length_chosen=encoded.length_chosen,
                            length_rejected=encoded.length_rejected)
        result.features.to_csv(tmp / "features.csv")
        result.concepts.to_csv(tmp / "concepts.csv")
        result.topics.to_csv(tmp / "topics.csv", index=False)
        result.null.to_csv(tmp / "null.csv", index=False)
        write_json(tmp / "summary.json", info)
        write_json(tmp / "examples.json", {"concepts": [{"concept": c, "pairs": examples[c]} for c in shown]})
    write_json(args.metrics, info)
    log.info("%s: %d pairs; %d of %d concepts discovered at FDR %.2f (%d chosen, %d rejected); null replicates with "
             "a discovery %s; %.0f s", args.set, info["pairs"], info["concepts_discovered"], info["concepts"],
             cfg.stats.fdr, info["concepts_chosen"], info["concepts_rejected"], info["null_any_discovery"], info["wall_s"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", required=True, help="a name under audit.sets in params.yaml")
    parser.add_argument("--pairs", type=Path, required=True, help="pairs/<set>")
    parser.add_argument("--sae", type=Path, default=Path("sae"))
    parser.add_argument("--out", type=Path, required=True, help="audit/<set>")
    parser.add_argument("--metrics", type=Path, required=True, help="results/metrics/audit-<set>.json")


if __name__ == "__main__":
    main("audit", run, _args, reads=lambda params, args: {"sae": args.sae})
