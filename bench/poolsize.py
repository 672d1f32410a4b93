"""python -m bench.poolsize: every selector as its pool grows, training-free (issue 34.10).

As pools grow, most published selectors fall toward or below random. This bench scores pools of
about 100, 1,000 and 10,000 candidates with each selector and reports, per size:
- the mixed pool (half the target task, half distractors in its own form): each selector's on-task
  AUROC and its on-task recall at ratio 0.5, beside the best length-only rule's AUROC
  (data/report.json's form_auroc: what the responses' form alone gives);
- the within pool (the target task only, a share damaged with no form of its own: wrong answers
  drawn like the audit's matched ones, a dropped step, truncation): the share of the
  damaged examples each selection keeps (0.5 is blind; lower is better);
- each selector's scoring wall time and the scoring process's peak memory.

How: the profile's own pipeline runs once (`dvc repro identify` in a project copy: prepare, the SAE,
identification), so every size is scored with the same SAE and features. Then per size the
profile's params with the pool's n set to the size (and the pool's and distractors' options
set by --options at every size alike: chain_sum with three one-digit terms has ~4,000 distinct
problems, fewer than a 10,000 pool needs; four one-digit terms have ~80,000, and products of four
one-digit numbers stay near the sums' length, length-only AUROC ~0.67, where two-digit terms
reach 0.85) are prepared, and every selector is scored by
the score stage itself (`python -m pipelines.score`, one process per selector: its own wall_s and
peak_rss_bytes) and selected by the select stage's own function. LESS is scored up to --less-max
candidates (its per-example gradients cost ~0.1-0.3 s each here); the table says where it stops.

Writes results/bench-poolsize.{json,md}. A rerun continues: each score already written is reused.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from bench.common import ROOT, machine, project_copy, subprocess_env, write_report
from igds.core.artifacts import atomic_file, read_json
from igds.core.selection_metrics import selection_summary
from igds.params import dump_params, load_params, read_params

log = logging.getLogger("bench.poolsize")

DAMAGE = {"share": 0.3, "kinds": ["wrong_answer", "dropped_step", "truncated"], "seed": 0}  # shuffled_steps cannot move two equal lines


def size_params(whole: dict, n: int, options: dict | None) -> dict:
    """The profile's params with both pools at n candidates (the within pool damaged as DAMAGE) and
    the pool's and distractors' options updated by `options`."""
    out = copy.deepcopy(whole)
    data = out["data"]
    data["pools"] = ["mixed", "within"]
    data["splits"]["pool"]["n"] = n
    if options:
        data["splits"]["pool"]["options"] = {**data["splits"]["pool"].get("options", {}), **options}
        data["mix"]["distractors"]["options"] = {**data["mix"]["distractors"].get("options", {}), **options}
    data["degrade"] = dict(DAMAGE)
    return out


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")


def score_size(project: Path, work: Path, n: int, whole: dict, options: dict | None, methods: list[str],
               less_max: int) -> dict:
    """Prepare pools of n and score + select every method on both; the rows of the table."""
    params_path = work / "params.yaml"
    params_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(params_path) as f:
        f.write(dump_params(size_params(whole, n, options)))
    params = load_params(params_path)
    data = work / "data"
    if not (data / "report.json").is_file():
        log.info("size %d: preparing", n)
        _run([sys.executable, "-m", "pipelines.prepare", "--params", str(params_path), "--out", str(data)], project,
             f"prepare at size {n}")
    report = read_json(data / "report.json")
    from pipelines.io import read_pool  # noqa: PLC0415
    from pipelines.select import selection  # noqa: PLC0415

    out = {"n": n, "form_auroc": report["splits"]["pools/mixed"].get("form_auroc", {}), "pools": {}}
    for pool_name in ("mixed", "within"):
        pool = read_pool(data, pool_name)
        rows = {}
        for method in methods:
            if method == "less" and len(pool) > less_max:
                rows[method] = {"skipped": f"LESS stops above {less_max} candidates here (--less-max)"}
                continue
            scores, metrics = work / "scores" / pool_name, work / "metrics" / pool_name
            if not (metrics / f"score-{method}.json").is_file():
                log.info("size %d, %s: scoring %s", n, pool_name, method)
                _run([sys.executable, "-m", "pipelines.score", "--params", str(params_path), "--method", method,
                      "--pool", pool_name, "--data", str(data), "--sae", str(project / "sae"),
                      "--features", str(project / "features"), "--out", str(scores), "--metrics", str(metrics),
                      "--resume", str(work / ".resume")], project, f"score {method} on {pool_name} at size {n}")
            info = read_json(metrics / f"score-{method}.json")
            kept, _ = selection(params, method, scores, pool_name, pool, 0.5, params.seed)
            summary = selection_summary(pool, kept, params.data.target_task)
            rows[method] = {"auroc_on_task": info.get("auroc_on_task"), "on_task_recall": summary["on_task_recall"],
                            "degraded_kept": summary.get("degraded_kept"), "wall_s": info.get("wall_s"),
                            "peak_rss_mb": round(info["peak_rss_bytes"] / 2**20) if info.get("peak_rss_bytes") else None,
                            "n_pool": len(pool)}
        out["pools"][pool_name] = rows
    return out


def markdown(doc: dict) -> str:
    lines = [f"# Selectors as the pool grows ({doc['profile']}, {doc['date']}, {doc['machine']}, commit {doc['commit']})", "",
             "Mixed pool (half the target task, half distractors in its form): on-task AUROC / on-task recall at ratio "
             "0.5; within pool (30% damaged): the damaged share kept at ratio 0.5 (0.5 = blind, lower is better); "
             "scoring wall time (s) and the scoring process's peak memory (MB) on the mixed pool.", ""]
    sizes = doc["sizes"]
    head = "| method | " + " | ".join(f"AUROC / recall @{s['n']}" for s in sizes) + " | " + \
        " | ".join(f"damaged kept @{s['n']}" for s in sizes) + " | " + " | ".join(f"s / MB @{s['n']}" for s in sizes) + " |"
    lines += [head, "|---|" + "---:|" * (3 * len(sizes))]
    methods = list(sizes[0]["pools"]["mixed"])
    for m in methods:
        cells = []
        for s in sizes:
            r = s["pools"]["mixed"].get(m, {})
            cells.append("–" if "skipped" in r or not r else f"{r['auroc_on_task']:.3f} / {r['on_task_recall']:.2f}")
        for s in sizes:
            r = s["pools"]["within"].get(m, {})
            cells.append("–" if "skipped" in r or not r or r.get("degraded_kept") is None else f"{r['degraded_kept']:.2f}")
        for s in sizes:
            r = s["pools"]["mixed"].get(m, {})
            cells.append("skipped" if "skipped" in r else f"{r['wall_s']:.1f} / {r['peak_rss_mb']}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| length-only rule | " + " | ".join(
        f"{s['form_auroc'].get('response_chars', float('nan')):.3f} / –" for s in sizes) + " | "
        + " | ".join("–" for _ in sizes) + " | " + " | ".join("–" for _ in sizes) + " |")
    skipped = [f"{m} at {s['n']}" for s in sizes for m, r in s["pools"]["mixed"].items() if "skipped" in r]
    lines += ["", f"Options of the pool and distractors at every size: {doc['options']}. The SAE and IGDS's features come "
              "from the profile's own run (prepare, sae, identify once). " + (f"Not scored: {', '.join(skipped)} "
              f"(--less-max {doc['less_max']})." if skipped else ""), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.poolsize", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--profile", type=Path, default=ROOT / "configs" / "steps-mixed.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: every method of the profile's methods: but full (its variants are rows)")
    parser.add_argument("--options", type=yaml.safe_load, default={"min_terms": 4, "max_terms": 4},
                        help="options set on the pool and its distractors at every size (YAML)")
    parser.add_argument("--less-max", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-poolsize"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-poolsize.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    project = args.work / "project"
    if not (project / "features" / "features.json").is_file():
        if project.exists():
            raise SystemExit(f"{project} exists without features/; remove it (rm -rf {project}) and rerun")
        project_copy(project, args.profile, env=subprocess_env())
        log.info("the profile's pipeline up to identify (prepare, sae, identify) in %s", project)
        _run(["dvc", "repro", "identify"], project, "dvc repro identify")
    whole = read_params(args.profile)
    if args.methods is None:
        profile = load_params(args.profile)
        args.methods = [m for m in profile.methods if not profile.methods.selector_class(m).keeps_all]
    sizes = [score_size(project, args.work / f"size-{n}", n, whole, args.options, args.methods, args.less_max)
             for n in args.sizes]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {"profile": str(args.profile.relative_to(ROOT) if args.profile.is_relative_to(ROOT) else args.profile),
           "date": datetime.date.today().isoformat(), "machine": machine(), "commit": commit,
           "options": args.options, "less_max": args.less_max, "sizes": sizes,
           "identify": read_json(project / "results" / "metrics" / "identify.json")}
    write_report(args.out, doc, markdown)


if __name__ == "__main__":
    main()
