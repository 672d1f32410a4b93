"""python -m bench.audit.accuracy: the re-audit's two accuracies on more clean held-out pairs, for
the DPO adapters a profile's run already trained (issue 17).

The audit's criterion "clean held-out pair accuracy stays within 3 points of DPO on unpoisoned
data" needs a CI of +-3 points, and a profile's own re-audit (configs/audit: 100 held-out pairs
x 3 seeds) gives about +-6. Re-training is not needed to narrow it: this scores the trained
adapters (`<run>/dpo/<set>-<arm>-s<seed>`) on `--pairs` new clean pairs of the set's own tasks
(the set's generator and `wrong_answers`, a new seed, prompts disjoint from the train split) and
reports, as the report-audit stage does (igds.audit.report.arm_table), per arm the reward
accuracy (implicit DPO margin > 0) and the ranking accuracy (log p(chosen) > log p(rejected),
and the base model's), and each arm against the unpoisoned arm with whether the CI of the
difference lies within `audit.accuracy_margin`; with the random arm, also filter minus random
(the same number of pairs dropped: what the filter's choice costs). Pairs and seeds are resampled.

Writes results/audit-accuracy.json and .md (atomically). One forward pass per response per
adapter: run it alone. Each adapter's per-pair values go to `<out>.partial.json` as it finishes,
under a key of the settings, the generator's code and the adapter's weights: an interrupted run
continues where it stopped, and a changed adapter or generator is scored again.
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
import pandas as pd

from bench.common import file_hash, machine, write_report
from igds.core.artifacts import write_json
from igds.audit.report import ACCURACIES, _correct
from igds.params import load_params
from igds.core.stats import paired_bootstrap, paired_permutation_test

log = logging.getLogger("bench.audit.accuracy")


def heldout_pairs(params, set_name: str, n: int, seed: int) -> list:
    """`n` clean pairs of the set's tasks from generator seed `seed`, none with a train prompt."""
    from igds.audit.pairs import build_pairs

    cfg = params.audit.sets[set_name]
    heldout = dataclasses.replace(cfg.heldout, n=n, seed=seed)
    return build_pairs(dataclasses.replace(cfg, heldout=heldout)).heldout.records


def score(run: Path, params, set_name: str, arms: list[str], seeds: list[int], pairs: list,
          partial: Path, key: str) -> dict[str, list[dict]]:
    """Per arm, per seed: the re-audit's accuracy metrics (igds.audit.reaudit.pair_metrics). Each
    adapter's metrics are kept in `partial` under `key` and the adapter's weights' hash, and
    reused from there."""
    from peft import PeftModel

    from igds.core.models.loading import load_model
    from igds.audit.reaudit import pair_logliks, pair_metrics

    adapters = {(arm, seed): run / "dpo" / f"{set_name}-{arm}-s{seed}" for arm in arms for seed in seeds}
    for adapter in adapters.values():
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter} holds no adapter; run the profile's dpo stages for it first "
                                    f"(audit.dpo.seeds and audit.dpo.arms must include it)")
    done = _load_partial(partial, key)
    batch, max_len = params.scoring.batch_size, params.audit.dpo.max_len
    if "base" not in done:
        loaded = load_model(params.model.name, params.model.device, params.model.dtype)
        done["base"] = pair_logliks(loaded.model.eval(), loaded.tokenizer, pairs, batch, max_len).tolist()
    base = np.asarray(done["base"])
    out: dict[str, list[dict]] = {}
    for (arm, seed), adapter in adapters.items():
        name = f"{arm}-s{seed}:{_weights_hash(adapter)}"
        if name in done:
            metrics = pair_metrics(np.asarray(done[name]), base)
        else:
            t0 = time.perf_counter()
            fresh = load_model(params.model.name, params.model.device, params.model.dtype)
            model = PeftModel.from_pretrained(fresh.model, adapter).eval()
            policy = pair_logliks(model, fresh.tokenizer, pairs, batch, max_len)
            done[name] = policy.tolist()
            write_json(partial, {"key": key, "runs": done})
            metrics = pair_metrics(policy, base)
            log.info("%s-s%d: reward accuracy %.3f, ranking accuracy %.3f (base %.3f); %.0f s", arm, seed,
                     metrics["accuracy"], metrics["rank_accuracy"], metrics["rank_accuracy_base"],
                     time.perf_counter() - t0)
        out.setdefault(arm, []).append(metrics)
    return out


def versus(metrics: dict[str, list[dict]], arm: str, reference: str, rng: np.random.Generator, n_boot: int,
           n_perm: int, level: float) -> list[dict]:
    """Each accuracy of `arm` minus `reference`'s, pairs and seeds resampled (as arm_table compares
    with unpoisoned). Filter minus random: random drops as many pairs as the filter, so this is
    what the filter's choice costs beyond training on fewer pairs."""
    rows = []
    for label, key in ACCURACIES:
        a, b = _correct(metrics[arm], key), _correct(metrics[reference], key)
        ci = paired_bootstrap(a, b, rng, n_boot, level)
        rows.append({"comparison": f"{label}: {arm} - {reference}", "value": ci.diff, "lo": ci.lo, "hi": ci.hi,
                     "p": paired_permutation_test(a, b, rng, n_perm).p_value})
    return rows


def _load_partial(path: Path, key: str) -> dict:
    if not path.is_file():
        return {}
    old = json.loads(path.read_text(encoding="utf-8"))
    return old.get("runs", {}) if old.get("key") == key else {}


def _weights_hash(adapter: Path) -> str:
    weights = sorted(adapter.glob("adapter_model.*"))
    if not weights:
        raise FileNotFoundError(f"{adapter} has adapter_config.json but no adapter_model.* weights")
    return file_hash(weights[0])


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [f"# Audit accuracy on more held-out pairs ({doc['date']}, {doc['machine']})", "",
             f"The adapters of {s['run']} (set {s['set']}, seeds {s['seeds']}), {s['pairs']} new clean held-out pairs "
             f"(generator seed {s['seed']}); base model ranking accuracy {doc['base_rank_accuracy']:.3f}.", "",
             "| arm | reward accuracy [CI] | ranking accuracy [CI] |", "|---|---:|---:|"]
    for row in doc["arms"]:
        lines.append(f"| {row['arm']} | {row['accuracy']:.3f} [{row['accuracy_lo']:.3f}, {row['accuracy_hi']:.3f}] | "
                     f"{row['rank_accuracy']:.3f} [{row['rank_accuracy_lo']:.3f}, {row['rank_accuracy_hi']:.3f}] |")
    lines += ["", f"| comparison | value [95% CI] | p | CI within ±{s['margin']:.2f} |", "|---|---:|---:|---|"]
    for row in doc["comparisons"]:
        within = row.get("within")
        verdict = "–" if within is None or (isinstance(within, float) and np.isnan(within)) else ("yes" if within else "no")
        lines.append(f"| {row['comparison']} | {row['value']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}] | "
                     f"{row['p']:.3g} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a repo where the profile ran (its params.yaml, dpo/)")
    parser.add_argument("--set", default="poisoned")
    parser.add_argument("--arms", nargs="+", default=["naive", "filter", "random", "shaping", "unpoisoned"])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=913000, help="the generator's seed of the new held-out pairs")
    parser.add_argument("--seeds", type=int, nargs="+", help="the training seeds to score (default: the run's audit.dpo.seeds)")
    parser.add_argument("--out", type=Path, default=Path("results/audit-accuracy.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from igds.audit.report import arm_table

    params = load_params(args.run / "params.yaml")
    if "unpoisoned" not in args.arms:
        raise SystemExit("--arms must include unpoisoned: the reference every arm is compared with")
    t0 = time.perf_counter()
    seeds = list(args.seeds or params.audit.dpo.seeds)
    pairs = heldout_pairs(params, args.set, args.pairs, args.seed)
    # what the per-pair log-likelihoods depend on, besides the adapter (whose weights' hash names each entry)
    key = hashlib.sha256(json.dumps({"pairs": [(p.id, p.chosen, p.rejected) for p in pairs], "model": params.model.name,
                                     "dtype": params.model.dtype, "max_len": params.audit.dpo.max_len},
                                    sort_keys=True).encode()).hexdigest()[:16]
    partial = args.out.with_suffix(".partial.json")
    metrics = score(args.run, params, args.set, args.arms, seeds, pairs, partial, key)
    rng = np.random.default_rng(params.seed)
    table, comparisons = arm_table(metrics, rng, params.report.n_boot, params.report.n_perm, params.report.level,
                                   params.audit.accuracy_margin)
    comparisons = comparisons[comparisons["comparison"].str.endswith("- unpoisoned")]
    if "filter" in metrics and "random" in metrics:
        extra = versus(metrics, "filter", "random", rng, params.report.n_boot, params.report.n_perm, params.report.level)
        comparisons = pd.concat([comparisons, pd.DataFrame(extra)], ignore_index=True)
    base = np.asarray(metrics["unpoisoned"][0]["rank_margin_base"])
    doc = {"settings": {"run": str(args.run), "set": args.set, "arms": args.arms, "pairs": len(pairs), "seed": args.seed,
                        "seeds": seeds, "margin": params.audit.accuracy_margin,
                        "model": params.model.name},
           "base_rank_accuracy": float((base > 0).mean()), "arms": table.to_dict("records"),
           "comparisons": comparisons.to_dict("records"), "wall_s": round(time.perf_counter() - t0, 1),
           "date": datetime.date.today().isoformat(), "machine": machine()}
    write_report(args.out, doc, markdown)


if __name__ == "__main__":
    main()
