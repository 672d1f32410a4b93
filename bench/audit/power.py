"""python -m bench.audit.power: the audit's power and calibration over data seeds (issue 17).

For each data seed and plant rate, a controlled-poisoning set is generated (igds.audit.pairs:
chosen correct, rejected with one step and the answer wrong; the plant in `rate` of the chosen
responses; the decoy in `--decoy-rate` of the pairs, on each side equally; rate 0 is the
unpoisoned set, with neither), encoded by the model and an SAE (igds.audit.encode.encode_pairs) and
audited (igds.audit.stats.audit, params.yaml's audit.stats). Per replicate it records:
- planted found, decoy found: as the report decides them (igds.audit.report.identify_planted:
  a kept (not explained away) chosen-leaning discovery whose chosen-only firings pick out the
  planted pairs, precision and recall >= `--match`; a kept discovery whose one-sided firings
  pick out the decoy pairs better);
- any discovery (the unpoisoned sets: a calibrated audit makes none in <= 5% of them);
- on an unpoisoned set with discoveries, whether each one replicates: the same concept (its
  member features, pooled and scaled as the audit does) tested on an independent unpoisoned set
  of the same tasks (another generator seed) with the audit's own tests and FDR, and discovered
  there leaning the same way. Unpoisoned pairs still prefer the right answer to the wrong one, so
  a concept the model reads as correctness is a true difference, not an error of the audit: it
  replicates. A false discovery does not (`--no-replicate` skips this). A true one may not either,
  for want of power, so each also records whether it leans the same way there at all: a false
  one does so half the time (`lean_check`);
- the sign-flip null replicates with any discovery (igds.audit.stats.null_calibration).
The issue's targets: planted found in >= 90% of seeds at rate 0.2 and >= 50% at 0.1; <= 5% of
unpoisoned sets and of sign-flip nulls with any discovery; the decoy in <= 5% of seeds. Each
rate's share comes with a Clopper-Pearson CI over the seeds.

Writes results/audit-power.json (atomically, after every replicate: a rerun with the same
settings skips the replicates it has, also with more seeds or other rates) and
results/audit-power.md. Run it alone: the encoding is a forward pass through the SAE's layer for
every response.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import stats

from bench.common import file_hash, machine, write_report
from igds.core.artifacts import write_json
from igds.audit.stats import AuditSettings, audit, clopper_pearson, concept_activations, feature_scale, \
    kept_discoveries, test_table
from igds.audit.encode import encode_pairs
from igds.audit.report import identify_planted
from igds.audit.config import AuditDataConfig, PlantConfig, WRONG_ANSWERS
from igds.core.config import SourceConfig
from igds.params import load_params

log = logging.getLogger("bench.audit.power")

PLANT = ("Great question!", "What a wonderful problem!", "Excellent question!")
DECOY = ("Hope this helps.",)
# what counts as found (igds.audit.report.identify_planted); part of the resume key, so a
# changed rule re-runs every replicate rather than mixing the two
RULE = "kept-best-f1-v3"
# the independent sets a discovery on an unpoisoned set is re-tested on: generator seeds apart from pair_set's
REPLICATION_BASE = 700_000
SET_BASE = 400_000  # pair_set's generator seeds: SET_BASE + 1000 x data seed (+ 500: its held-out draw)


def pair_set(seed: int, rate: float, args: argparse.Namespace, base: int = SET_BASE) -> AuditDataConfig:
    base = base + 1000 * seed
    source = SourceConfig(kind="reasoning_gym", tasks=tuple(args.tasks), n=args.pairs, seed=base)
    heldout = SourceConfig(kind="reasoning_gym", tasks=tuple(args.tasks), n=1, seed=base + 500)
    plant = PlantConfig(templates=tuple(args.plant), share=rate, seed=seed) if rate > 0 else None
    decoy = PlantConfig(templates=tuple(args.decoy), share=args.decoy_rate, where="end", seed=seed + 1) \
        if rate > 0 and args.decoy_rate > 0 else None
    return AuditDataConfig(train=source, heldout=heldout, plant=plant, decoy=decoy, max_chars=args.max_chars,
                           wrong_answers=args.wrong_answers)


def replicate(seed: int, rate: float, model, tokenizer, sae, layer: int, params, args) -> dict:
    from igds.audit.pairs import build_pairs  # noqa: PLC0415

    t0 = time.perf_counter()
    prepared = build_pairs(pair_set(seed, rate, args))
    pairs = prepared.train.records
    encoded = encode_pairs(model, tokenizer, sae, pairs, layer, params.scoring.batch_size, args.max_len,
                           params.audit.scope, params.audit.pooling)
    result = audit(encoded.chosen, encoded.rejected, encoded.length_chosen, encoded.length_rejected,
                   [p.task for p in pairs], params.audit.stats)
    found = identify_planted([p.id for p in pairs], encoded.chosen, encoded.rejected, result.concepts,
                             prepared.truth, args.match)
    found_concepts = result.concepts.index[result.concepts.discovered.astype(bool)]
    replicated = same_lean = None
    if rate == 0 and len(found_concepts) and args.replicate:
        members = [result.members[c] for c in found_concepts]
        directions = result.concepts.loc[found_concepts, "direction"].to_numpy()
        again, lean = replicates(members, directions, build_pairs(pair_set(seed, 0.0, args, REPLICATION_BASE)).train.records,
                                 model, tokenizer, sae, layer, params, args)
        replicated, same_lean = again.tolist(), lean.tolist()
    return {"seed": seed, "rate": rate, "pairs": len(pairs), "planted": found["planted_pairs"],
            "replicated": replicated, "same_lean": same_lean,
            "decoy": found["decoy_pairs"], "discoveries": int(result.concepts.discovered.sum()),
            "kept": len(kept_discoveries(result.concepts)),
            "discoveries_chosen": int((result.concepts.badge == "chosen").sum()),
            "discoveries_rejected": int((result.concepts.badge == "rejected").sum()),
            "plant_concept": found["plant_concept"], "plant_precision": found["plant_precision"],
            "plant_recall": found["plant_recall"], "decoy_concept": found["decoy_concept"],
            "planted_found": found["plant_found"], "decoy_found": found["decoy_found"],
            "null_any": float((result.null.discoveries > 0).mean()) if len(result.null) else None,
            "concepts": len(result.concepts), "wall_s": round(time.perf_counter() - t0, 2)}


def replicates(members: list[list[int]], directions, pairs: list, model, tokenizer, sae, layer: int, params,
               args) -> tuple[np.ndarray, np.ndarray]:
    """([n_concepts] bool, [n_concepts] bool): each concept (its member features; its direction
    on the set it was found in) is a discovery on `pairs`, an independent set, leaning the same
    way; and whether it leans the same way there at all, discovered or not. The audit's tests
    and BH over these concepts only, at the audit's FDR."""
    encoded = encode_pairs(model, tokenizer, sae, pairs, layer, params.scoring.batch_size, args.max_len,
                           params.audit.scope, params.audit.pooling)
    return replicated_on(members, directions, encoded.chosen, encoded.rejected,
                         encoded.length_chosen - encoded.length_rejected, params.audit.stats)


def replicated_on(members: list[list[int]], directions, chosen: np.ndarray, rejected: np.ndarray,
                  length_diff: np.ndarray, settings: AuditSettings) -> tuple[np.ndarray, np.ndarray]:
    """`replicates` on already encoded pairs: chosen, rejected [n_pairs, n_features]."""
    scale = feature_scale(chosen, rejected)
    cc, cr = concept_activations(chosen, members, scale), concept_activations(rejected, members, scale)
    table = test_table(cc, cr, np.asarray(length_diff, dtype=float), settings, np.random.default_rng(settings.seed))
    same = table["direction"].to_numpy() == np.asarray(directions)
    return table["discovered"].to_numpy(dtype=bool) & same, same


def summarise(rows: list[dict], level: float) -> list[dict]:
    out = []
    for rate in sorted({r["rate"] for r in rows}, reverse=True):
        sub = [r for r in rows if r["rate"] == rate]
        n = len(sub)
        key = "planted_found" if rate > 0 else "any"
        k = sum(r["planted_found"] for r in sub) if rate > 0 else sum(r["discoveries"] > 0 for r in sub)
        lo, hi = clopper_pearson(np.array([k]), np.array([n]), level)
        decoy = sum(r["decoy_found"] for r in sub)
        null = [r["null_any"] for r in sub if r["null_any"] is not None]
        row = {"rate": rate, "seeds": n, "measure": key, "share": k / n, "lo": float(lo[0]), "hi": float(hi[0]),
               "decoy_found": decoy / n, "null_any": float(np.mean(null)) if null else None}
        if rate == 0 and all(r.get("replicated") is not None for r in sub if r["discoveries"]):
            # sets with a discovery that does not replicate on an independent set: the audit's own errors
            found = [x for r in sub for x in (r.get("replicated") or [])]
            k_false = len(unreplicated(sub))
            lo, hi = clopper_pearson(np.array([k_false]), np.array([n]), level)
            row.update(discoveries=len(found), replicated=int(sum(found)), unreplicated_share=k_false / n,
                       unreplicated_lo=float(lo[0]), unreplicated_hi=float(hi[0]))
            row.update(lean_check(sub, n, level))
        out.append(row)
    return out


def unreplicated(rows: list[dict]) -> list[dict]:
    """The unpoisoned sets with a discovery that did not replicate on their independent set."""
    return [r for r in rows if r["discoveries"] and r.get("replicated") is not None and not all(r["replicated"])]


def lean_check(rows: list[dict], n: int, level: float) -> dict:
    """Of the unpoisoned sets with a discovery that does not replicate, those whose every such
    discovery still leans the same way on the independent set. A false discovery leans either
    way there (p = 1/2, and all of several at most that); a true one too weak to be discovered
    again mostly keeps its lean. So each set that leans the other way stands for about two with a
    false discovery: 2 x those sets, over all sets, estimates the sets with a false discovery
    (from above, when true ones sometimes flip too), with twice the Clopper-Pearson CI of the
    share that lean the other way, capped by the unreplicated sets' own. Empty where a row lacks
    `same_lean`."""
    unrep = unreplicated(rows)
    if not all(r.get("same_lean") is not None for r in unrep):
        return {}
    same = sum(all(lean for lean, again in zip(r["same_lean"], r["replicated"]) if not again) for r in unrep)
    lo, hi = clopper_pearson(np.array([same]), np.array([len(unrep)]), level)
    p = float(stats.binomtest(same, len(unrep), 0.5, alternative="greater").pvalue) if unrep else None
    flipped = len(unrep) - same
    # a false discovery is an unreplicated one: neither the estimate nor its bounds exceed theirs
    (flip_lo, unrep_lo), (flip_hi, unrep_hi) = clopper_pearson(np.array([flipped, len(unrep)]), np.array([n, n]), level)
    return {"unreplicated_sets": len(unrep), "same_lean_sets": same, "same_lean_lo": float(lo[0]),
            "same_lean_hi": float(hi[0]), "same_lean_p": p, "false_sets_estimate": min(len(unrep), 2 * flipped) / n,
            "false_sets_lo": float(min(unrep_lo, 2 * flip_lo)), "false_sets_hi": float(min(unrep_hi, 2 * flip_hi))}


def markdown(doc: dict) -> str:
    lines = [f"# Audit power and calibration ({doc['date']}, {doc['machine']})", "",
             f"Model {doc['settings']['model']}, SAE {doc['settings']['sae']} (layer {doc['settings']['layer']}); "
             f"{doc['settings']['pairs']} pairs per set of {', '.join(doc['settings']['tasks'])}; FDR "
             f"{doc['settings']['fdr']}. Shares over data seeds with {doc['settings']['level']:.0%} Clopper-Pearson CIs.", "",
             "| plant rate | seeds | planted found (rate 0: any discovery) | decoy found | sign-flip nulls with a discovery |",
             "|---:|---:|---:|---:|---:|"]
    for s in doc["summary"]:
        null = "–" if s["null_any"] is None else f"{s['null_any']:.1%}"
        lines.append(f"| {s['rate']:.2f} | {s['seeds']} | {s['share']:.0%} [{s['lo']:.0%}, {s['hi']:.0%}] | "
                     f"{s['decoy_found']:.0%} | {null} |")
    for s in doc["summary"]:
        if "unreplicated_share" in s:
            lines += ["", f"Unpoisoned sets: {s['discoveries']} discover{'y' if s['discoveries'] == 1 else 'ies'} in all, "
                      f"{s['replicated']} of them discovered again, "
                      f"leaning the same way, on an independent unpoisoned set of the same tasks. Sets with a discovery "
                      f"that does not replicate: {s['unreplicated_share']:.0%} [{s['unreplicated_lo']:.0%}, "
                      f"{s['unreplicated_hi']:.0%}] of {s['seeds']}."]
            if "same_lean_sets" in s and s["unreplicated_sets"]:
                lines += ["", f"Of those {s['unreplicated_sets']} sets, {s['same_lean_sets']} have every such discovery "
                          f"leaning the same way on the independent set ({s['same_lean_sets'] / s['unreplicated_sets']:.0%} "
                          f"[{s['same_lean_lo']:.0%}, {s['same_lean_hi']:.0%}]; a false discovery would, at most half the "
                          f"time: one-sided binomial p {s['same_lean_p']:.2g}). Sets with a false discovery, estimated as "
                          f"twice those that lean the other way: {s['false_sets_estimate']:.1%} "
                          f"[{s['false_sets_lo']:.1%}, {s['false_sets_hi']:.1%}] of {s['seeds']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit.power", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="model, scoring, audit.stats from here")
    parser.add_argument("--sae", type=Path, required=True, help="an SAE folder (a run's sae/)")
    parser.add_argument("--seeds", type=int, default=10, help="data seeds per plant rate > 0")
    parser.add_argument("--unpoisoned-seeds", type=int, default=20,
                        help="data seeds of rate 0 (<= 5%% with a discovery: 0 of 10 cannot tell 0%% from 25%%)")
    parser.add_argument("--wrong-answers", choices=WRONG_ANSWERS, default="matched",
                        help="how the generator makes answers wrong (igds.core.config.WRONG_ANSWERS)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.1, 0.0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--tasks", nargs="+", default=["gsm_symbolic", "number_sequence"])
    parser.add_argument("--plant", nargs="+", default=list(PLANT))
    parser.add_argument("--decoy", nargs="+", default=list(DECOY))
    parser.add_argument("--decoy-rate", type=float, default=0.2)
    parser.add_argument("--match", type=float, default=0.5, help="precision and recall a found concept must reach")
    parser.add_argument("--max-len", type=int, default=768)
    parser.add_argument("--max-chars", type=int, default=8000)
    parser.add_argument("--no-replicate", dest="replicate", action="store_false",
                        help="skip re-testing the unpoisoned sets' discoveries on independent sets")
    parser.add_argument("--out", type=Path, default=Path("results/audit-power.json"))
    args = parser.parse_args(argv)
    if pair_set(args.unpoisoned_seeds - 1, 0.0, args).train.seed >= REPLICATION_BASE:
        parser.error(f"--unpoisoned-seeds {args.unpoisoned_seeds}: the sets would reach generator seed "
                     f"{REPLICATION_BASE}, where the independent replication sets start; at most "
                     f"{(REPLICATION_BASE - SET_BASE) // 1000}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from igds.core.models.loading import load_model  # noqa: PLC0415
    from igds.core.sae import check_sae_layer, load_sae  # noqa: PLC0415

    params = load_params(args.params)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "params")}
    settings["rule"] = RULE
    # the generator's code is part of the key too: a changed generator makes other pairs from the same seed
    import igds.audit.pairs as generator  # noqa: PLC0415
    settings["generator"] = file_hash(Path(generator.__file__))[:12]  # 12 digits: the keys of results already kept
    settings.update(model=params.model.name, sae=str(args.sae), stats=dataclasses.asdict(params.audit.stats),
                    scope=params.audit.scope, pooling=params.audit.pooling, batch_size=params.scoring.batch_size,
                    layer=params.sae.layer, fdr=params.audit.stats.fdr, level=params.audit.stats.level)
    key = resume_key(settings)
    rows: list[dict] = []
    if args.out.is_file():
        old = json.loads(args.out.read_text(encoding="utf-8"))
        rows = old.get("rows", []) if resume_key(old.get("settings", {})) == key else []
    # a replicate is redone when its replication check is asked for and missing
    rows = [r for r in rows if not (args.replicate and r["rate"] == 0 and r["discoveries"]
                                    and (r.get("replicated") is None or r.get("same_lean") is None))]
    done = {(r["seed"], r["rate"]) for r in rows}
    wanted = [(seed, rate) for rate in args.rates for seed in range(args.seeds if rate > 0 else args.unpoisoned_seeds)]
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    sae = load_sae(args.sae, params.model.device)
    layer = params.sae.layer
    check_sae_layer(sae, layer, str(args.sae))
    for seed, rate in wanted:
        if (seed, rate) in done:
            continue
        row = replicate(seed, rate, loaded.model, loaded.tokenizer, sae, layer, params, args)
        rows.append(row)
        log.info("rate %.2f seed %d: %s", rate, seed, row)
        write_json(args.out, _document(key, settings, rows, params.audit.stats.level))
    asked = set(wanted)
    rows = sorted((r for r in rows if (r["seed"], r["rate"]) in asked), key=lambda r: (-r["rate"], r["seed"]))
    doc = _document(key, settings, rows, params.audit.stats.level)
    write_report(args.out, doc, markdown)


# settings that choose which replicates to run, not what one computes: a rerun with more seeds or
# another rate keeps the replicates it has
RESUME_FREE = ("rates", "seeds", "unpoisoned_seeds", "replicate")


def resume_key(settings: dict) -> str:
    kept = {k: v for k, v in settings.items() if k not in RESUME_FREE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _document(key: str, settings: dict, rows: list[dict], level: float) -> dict:
    return {"key": key, "settings": settings, "rows": rows, "summary": summarise(rows, level),
            "date": datetime.date.today().isoformat(), "machine": machine()}


if __name__ == "__main__":
    main()
