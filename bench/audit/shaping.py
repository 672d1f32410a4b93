"""python -m bench.audit.shaping: the shaping arm at other scales (issue 17).

The shaping arm adds `audit.shaping` x the flagged concepts' score difference to each pair's DPO
margin (igds.audit.intervene). At the profiles' 1.0 a flagged pair's margin starts near +0.8 (configs/audit),
which scales its gradient by sigmoid(-0.8) = 0.31 rather than removing it, and configs/audit
measured a 15% cut of the marker's rise. This runs the arm again at each `--scales` value on a
profile's finished run (`--run`: its params.yaml, pairs/, audit/, reaudit-base/ and the naive
arm's reaudit/), with the stages' own code (pipelines.audit.intervene, pipelines.audit.dpo and
pipelines.audit.reaudit, `audit.shaping` replaced), for the run's `audit.dpo.seeds` (or `--seeds`),
and reports per scale the rise, shaping minus naive and shaping / naive, with the report's
statistics (igds.audit.report.arm_table: prompts and seeds resampled, paired permutation p).

Everything it trains goes under `--work` (default bench/.work/shaping/<scale>/), each piece
written atomically by its stage function: a rerun skips what exists. Writes
results/audit-shaping.json and .md. It trains `len(scales) x seeds` DPO runs (~2.7 min each on 2
CPU cores, ~1 min more to re-audit): run it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import time
from pathlib import Path

import numpy as np

from bench.common import file_hash, machine, write_report
from igds.core.artifacts import read_json, write_json
from igds.params import load_params

log = logging.getLogger("bench.audit.shaping")


def train_scale(run: Path, params, set_name: str, scale: float, seeds: list[int], work: Path) -> list[dict]:
    """The shaping arm at `scale`: its pairs, one DPO adapter and one re-audit per seed, under
    `work`; the re-audits' metrics, in seed order."""
    from pipelines.audit import dpo, intervene, reaudit  # noqa: PLC0415

    scaled = dataclasses.replace(params, audit=dataclasses.replace(params.audit, shaping=scale))
    _check_work(work, run, params, set_name)
    arm = work / f"arms/{set_name}-shaping"
    if not (arm / "pairs.jsonl").is_file():
        intervene.run(scaled, argparse.Namespace(set=set_name, arm="shaping", truth=None, unpoisoned=None,
                                                 pairs=run / "pairs" / set_name, audit=run / "audit" / set_name, out=arm))
    out = []
    for seed in seeds:
        adapter = work / f"dpo/{set_name}-shaping-s{seed}"
        if not (adapter / "adapter_config.json").is_file():
            dpo.run(scaled, argparse.Namespace(set=set_name, arm="shaping", seed=seed, pairs=arm, out=adapter))
        metrics = work / f"reaudit/{set_name}-shaping-s{seed}"
        if not (metrics / "metrics.json").is_file():
            reaudit.run(scaled, argparse.Namespace(set=set_name, pairs=run / "pairs" / set_name, adapter=adapter,
                                                   base=run / "reaudit-base" / set_name, out=metrics))
        out.append(read_json(metrics / "metrics.json"))
    return out


def _check_work(work: Path, run: Path, params, set_name: str) -> None:
    """What `work` was trained from (the run's pairs and audit, the DPO settings but the seeds):
    recorded on first use; a later use from anything else is refused, never mixed."""
    import json  # noqa: PLC0415

    source = {"pairs": file_hash(run / "pairs" / set_name / "train.jsonl"),
              "concepts": file_hash(run / "audit" / set_name / "concepts.csv"),
              "heldout": file_hash(run / "pairs" / set_name / "heldout.jsonl"), "model": params.model.name,
              "dpo": {k: v for k, v in dataclasses.asdict(params.audit.dpo).items() if k not in ("seeds", "arms")}}
    record = work / "source.json"
    if record.is_file():
        old = read_json(record)
        if json.loads(json.dumps(source, default=str)) != old:
            raise SystemExit(f"{work} was trained from another run or other settings ({record}); remove it or give "
                             f"another --work")
    else:
        write_json(record, source)


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [f"# The shaping arm's scale ({doc['date']}, {doc['machine']})", "",
             f"Run {s['run']}, set {s['set']}, DPO seeds {s['seeds']}; the marker's teacher-forced log-prob per "
             "token on the held-out prompts, trained minus base, with 95% CIs (prompts and seeds resampled).", "",
             "| arm | shaping scale | marker rise [CI] | shaping - naive [CI] | p | shaping / naive | "
             "reward accuracy | ranking accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc["rows"]:
        diff = "–" if row.get("minus_naive") is None else \
            f"{row['minus_naive']:+.2f} [{row['minus_naive_lo']:+.2f}, {row['minus_naive_hi']:+.2f}]"
        p = "–" if row.get("p") is None else f"{row['p']:.3g}"
        ratio = "–" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['arm']} | {row['scale'] if row['scale'] is not None else '–'} | "
                     f"{row['rise']:+.2f} [{row['rise_lo']:+.2f}, {row['rise_hi']:+.2f}] | {diff} | {p} | {ratio} | "
                     f"{row['accuracy']:.3f} | {row['rank_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def summarise(naive: list[dict], by_scale: dict[float, list[dict]], rng: np.random.Generator, n_boot: int,
              n_perm: int, level: float) -> list[dict]:
    """One row for naive and one per scale, from igds.audit.report.arm_table on naive and that scale."""
    from igds.audit.report import arm_table  # noqa: PLC0415

    rows = []
    for scale, runs in by_scale.items():
        table, comparisons = arm_table({"naive": naive, "shaping": runs}, rng, n_boot, n_perm, level)
        table = table.set_index("arm")
        if not rows:
            rows.append({"arm": "naive", "scale": None, **_arm(table.loc["naive"])})
        diff = comparisons.set_index("comparison").loc["rise: shaping - naive"]
        rise_naive = float(table.loc["naive", "rise"])
        rows.append({"arm": "shaping", "scale": scale, **_arm(table.loc["shaping"]),
                     "minus_naive": float(diff["value"]), "minus_naive_lo": float(diff["lo"]),
                     "minus_naive_hi": float(diff["hi"]), "p": float(diff["p"]),
                     "ratio": float(table.loc["shaping", "rise"]) / rise_naive})
    return rows


def _arm(row) -> dict:
    return {k: float(row[k]) for k in ("rise", "rise_lo", "rise_hi", "accuracy", "rank_accuracy")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit.shaping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a repo where configs/audit (or a like profile) ran")
    parser.add_argument("--set", default="poisoned")
    parser.add_argument("--scales", type=float, nargs="+", default=[4.0, 16.0])
    parser.add_argument("--seeds", type=int, nargs="+", help="DPO seeds (default: the run's audit.dpo.seeds)")
    parser.add_argument("--work", type=Path, default=Path("bench/.work/shaping"))
    parser.add_argument("--out", type=Path, default=Path("results/audit-shaping.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    params = load_params(args.run / "params.yaml")
    seeds = list(args.seeds or params.audit.dpo.seeds)
    naive = []
    for seed in seeds:
        path = args.run / "reaudit" / f"{args.set}-naive-s{seed}" / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"{path} not found: run the profile's reaudit@{args.set}-naive-{seed} stage first")
        naive.append(read_json(path))
    t0 = time.perf_counter()
    by_scale = {}
    for scale in args.scales:
        by_scale[scale] = train_scale(args.run, params, args.set, scale, seeds, args.work / f"{scale:g}")
        log.info("scale %g: marker rise per seed %s", scale,
                 [round(float(np.mean(m["marker_logprob"]) - np.mean(m["marker_logprob_base"])), 3) for m in by_scale[scale]])
    rows = summarise(naive, by_scale, np.random.default_rng(params.seed), params.report.n_boot, params.report.n_perm,
                     params.report.level)
    doc = {"settings": {"run": str(args.run), "set": args.set, "scales": args.scales, "seeds": seeds,
                        "model": params.model.name},
           "rows": rows, "wall_s": round(time.perf_counter() - t0, 1),
           "date": datetime.date.today().isoformat(), "machine": machine()}
    write_report(args.out, doc, markdown)


if __name__ == "__main__":
    main()
