"""python -m pipelines.study: a profile's redraws (issue 34): the whole procedure drawn again D times,
each draw one DVC experiment of the profile, and the table whose intervals carry the draws.

    python -m pipelines.study configs/steps-study.yaml --draws 5            # run the draws not yet run, then the table
    python -m pipelines.study configs/steps-study.yaml --draws 5 --queue    # queue them: `dvc queue start -j N` runs them side by side
    python -m pipelines.study configs/steps-study.yaml --draws 5 --collect  # the table only, from the draws already run

What a draw redraws: the prior and the pool (their reasoning-gym seeds move by draw x --stride; the
mixed pool's distractors too), and the global `seed`, which seeds the SAE (its initialisation and
its text's split), identification's held-out examples and bootstrap, and random's selection; so
identification and every selection are redone. What stays: the eval and probe splits (every draw
is measured on the same problems, so draws and arms are paired by example), the general reference
text, the model, and the training seeds (finetune.seeds, crossed with the draws). Draw 0 is the
profile itself.

Why DVC experiments: a draw is the one pipeline with other params values, which is what `dvc exp
run` is for. Each draw is recorded as an experiment (named <profile>-d<draw>, its params, lock,
metrics and outputs in the cache: `dvc exp show`), reruns only what its params change (the eval
split, the general text and the base model's stages are shared), and `--queue` hands the draws to
DVC's queue, whose workers run them side by side on a larger machine. The table reads each draw's
per-example results from its experiment (dvc.api, rev = the experiment), never from the workspace.

Writes results/study/<profile>/: table.md, study.json (every number in the table, per draw too)
and draws.json (each draw's experiment, commit and wall time), atomically.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from igds.core.artifacts import atomic_file, read_json, write_json
from igds.core.config import ConfigError, from_dict
from igds.core.data import DataError
from igds.core.runs import FULL, RunId, ratio_text
from igds.core.stats import (draw_t_test, draws_permutation_test, holm, minimal_detectable_difference, nested_ci,
                             nested_paired_ci, variance_split)
from igds.params import Params, read_params
from pipelines.io import pools
from pipelines.profile import exp_flags

log = logging.getLogger("study")

STRIDE = 100_000  # a draw's reasoning-gym seeds move by draw x this: far from every split's own range
OUT = Path("results/study")


def redraw(whole: dict, draw: int, stride: int = STRIDE) -> dict:
    """Params `whole` for draw `draw` (0: `whole` itself): the prior's and the pool's seeds (and the
    mixed pool's distractors') moved by draw x stride, the global seed and the degradation's by draw.
    A ConfigError when a redrawn split has no seed to move (a file source cannot be redrawn)."""
    if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
        raise ConfigError(f"draw {draw!r}: a draw is an integer >= 0")
    out = copy.deepcopy(whole)
    out["seed"] = int(whole["seed"]) + draw
    data = out.get("data") or {}
    splits = data.get("splits") or {}
    for name in ("prior", "pool"):
        split = splits.get(name)
        if not isinstance(split, dict) or not isinstance(split.get("seed"), int):
            raise ConfigError(f"data.splits.{name}: a draw moves its seed, and it has none (kind "
                              f"{(split or {}).get('kind')!r}); redraws need generated splits (kind: reasoning_gym)")
        split["seed"] += draw * stride
    distractors = (data.get("mix") or {}).get("distractors")
    if isinstance(distractors, dict) and isinstance(distractors.get("seed"), int):
        distractors["seed"] += draw * stride
    degrade = data.get("degrade")
    if isinstance(degrade, dict) and isinstance(degrade.get("seed"), int):
        degrade["seed"] += draw
    return out


def exp_name(profile: Path, draw: int) -> str:
    return f"{profile.stem}-d{draw}"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def experiments(baseline: str) -> dict[str, str]:
    """{name: commit} of the DVC experiments whose baseline is the commit `baseline`."""
    from dvc.repo.experiments.refs import ExpRefInfo

    out = {}
    for line in _git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/").splitlines():
        ref, sha = line.split()
        try:
            info = ExpRefInfo.from_ref(ref)
        except Exception:  # DVC's own refs (stash, celery queue) are no experiments
            continue
        if info.baseline_sha == baseline and info.name:
            out[info.name] = sha
    return out


def run_draws(profile: Path, draws: int, stride: int, queue: bool, params_path: Path, out: Path) -> None:
    """Run (or queue) every draw not yet recorded as an experiment of HEAD, one after another;
    each draw's wall time goes to out/draws.json as it ends (a killed study reruns only what is
    left: DVC's run cache and the experiments already recorded)."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if dirty:
        raise ConfigError(f"the workspace has uncommitted changes ({dirty.splitlines()[0]} ...): a draw runs the "
                          "committed code of HEAD plus them, unrecorded; commit first")
    head = _git("rev-parse", "HEAD")
    whole = read_params(profile)
    from_dict(Params, whole, "")
    record_path = out / "draws.json"
    record = read_json(record_path) if record_path.is_file() else {}
    for draw in range(draws):
        name = exp_name(profile, draw)
        if name in experiments(head):
            log.info("%s: already run (experiment %s of %s)", name, name, head[:7])
            continue
        params = redraw(whole, draw, stride)
        flags = exp_flags(params_path, params, from_dict(Params, params, ""))
        cmd = ["dvc", "exp", "run", "--queue" if queue else "--temp", "--name", name]
        cmd += [arg for flag in flags for arg in ("-S", flag)]
        log.info("%s: dvc exp run %s with %d overrides", name, "--queue" if queue else "--temp", len(flags))
        start = time.time()
        if subprocess.run(cmd, check=False).returncode != 0:
            raise DataError(f"{name}: `dvc exp run` failed (its log above); fix it and rerun the study: the draws "
                            "already run are kept")
        if not queue:
            record[name] = {"draw": draw, "baseline": head, "wall_s": round(time.time() - start, 1)}
            out.mkdir(parents=True, exist_ok=True)
            write_json(record_path, record)


def _read(path: str, rev: str) -> dict:
    """A JSON output of experiment `rev`: git's copy for a cache: false output, DVC's cache for the rest."""
    import dvc.api

    try:
        return json.loads(dvc.api.read(path, rev=rev, repo="."))
    except Exception as e:  # noqa: BLE001 - DVC raises many kinds; each means the same here
        raise DataError(f"{path} at experiment {rev[:7]}: not readable ({type(e).__name__}: {e}); run the draw "
                        "again (`python -m pipelines.study ... --draws N`) or `dvc exp show` to see what it holds") from None


def _per_example(metrics: dict, metric: str, ids: list[str] | None, where: str) -> tuple[list[str], np.ndarray]:
    values = (metrics.get("per_example") or {}).get(metric)
    if not isinstance(values, dict) or not values:
        raise DataError(f"{where}: no per-example {metric}; rerun its evaluate stage")
    order = sorted(values) if ids is None else ids
    if set(order) != set(values):
        raise DataError(f"{where}: its eval examples differ from the first draw's ({len(set(order) ^ set(values))} ids "
                        "differ): draws must share data.splits.eval")
    return order, np.array([float(values[i]) for i in order])


def collect(profile: Path, draws: int, baseline: str | None = None) -> dict:
    """Every draw's per-example results and identification, from its experiment: {'params',
    'draws': [{name, commit, identify}], 'values': {pool: {run stem: [D, S, N]}}, 'base': [D, 1, N],
    'ids'}. A ConfigError names the draws not yet run."""
    head = baseline or _git("rev-parse", "HEAD")
    found = experiments(head)
    names = [exp_name(profile, d) for d in range(draws)]
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"draws not run on {head[:7]}: {', '.join(missing)}; run `python -m pipelines.study "
                          f"{profile} --draws {draws}` (or `dvc queue start` when they were queued)")
    params = from_dict(Params, read_params(profile), "")
    metric = params.report.task_metric
    ids: list[str] | None = None
    base, values, info = [], {}, []
    for name in names:
        rev = found[name]
        ids, b = _per_example(_read("results/eval/base/metrics.json", rev), metric, ids, f"{name}: base")
        base.append(b[None])
        info.append({"name": name, "commit": rev, "identify": _read("results/metrics/identify.json", rev)})
        for pool in pools(params):
            arms = values.setdefault(pool, {})
            for method in [FULL, *params.finetuned_methods]:
                ratio = None if method == FULL else ratio_text(params.select.ratios[0])
                seeds = []
                for s in params.finetune.seeds:
                    run = RunId(pool, method, ratio, s)
                    path = str(run.evaluation()) + "/metrics.json"
                    seeds.append(_per_example(_read(path, rev), metric, ids, f"{name}: {path}")[1])
                arms.setdefault(run.stem.rsplit("-s", 1)[0], []).append(np.stack(seeds))
    return {"params": params, "draws": info, "ids": ids, "base": np.stack(base),
            "values": {pool: {arm: np.stack(v) for arm, v in arms.items()} for pool, arms in values.items()}}


def summarise(data: dict, rng: np.random.Generator) -> dict:
    """The study's numbers: per pool, each arm's mean with its CI over draws x seeds x examples, and
    each fine-tuned method against random and against full: the difference, its CI, the
    draw-respecting permutation p (Holm across the comparisons of a pool), the draws-only t-test p,
    the MDD, the per-draw differences and the variance split."""
    params: Params = data["params"]
    n_boot, level, n_perm = params.report.n_boot, params.report.level, params.report.n_perm
    out = {"metric": params.report.task_metric, "n_draws": len(data["draws"]), "n_examples": len(data["ids"]),
           "seeds": list(params.finetune.seeds), "level": level, "pools": {}}
    base = data["base"][:1]
    for pool, arms in data["values"].items():
        rows = {"base": _ci(nested_ci(base, rng, n_boot, level))}
        rows.update({arm: _ci(nested_ci(v, rng, n_boot, level)) for arm, v in arms.items()})
        random_arm = next((a for a in arms if a.startswith("random-")), None)
        comparisons = []
        for arm, v in arms.items():
            for ref in (random_arm, FULL):
                if ref is None or arm == ref or arm.startswith("random-") and ref == random_arm or arm == FULL:
                    continue
                ci = nested_paired_ci(v, arms[ref], rng, n_boot, level)
                test = draws_permutation_test(v, arms[ref], rng, n_perm)
                per_draw, t_p = draw_t_test(v, arms[ref])
                split = variance_split(v, arms[ref], rng, n_boot)
                comparisons.append({"method": arm, "reference": ref, "diff": ci.diff, "lo": ci.lo, "hi": ci.hi,
                                    "p": test.p_value, "p_floor": test.p_value <= 2.0 / (test.n_perm + 1),
                                    "t_p": t_p, "per_draw": [float(x) for x in per_draw],
                                    "mdd": float(minimal_detectable_difference(ci.lo, ci.hi, level)),
                                    "sd": {"draws": split.draws, "seeds": split.seeds, "examples": split.examples,
                                           "total": split.total}})
        for c, adj in zip(comparisons, holm([c["p"] for c in comparisons])):
            c["p_holm"] = float(adj)
        per_draw_means = {arm: [float(x) for x in v.mean(axis=(1, 2))] for arm, v in arms.items()}
        out["pools"][pool] = {"rows": rows, "comparisons": comparisons, "per_draw_means": per_draw_means}
    ident = [d["identify"] for d in data["draws"]]
    out["identify"] = [{"draw": d["name"], **{k: i.get(k) for k in ("n_recalled", "n_causal", "fallback", "top_feature",
                                                                     "top_causal_effect", "top_p_adjusted",
                                                                     "stability_jaccard_top_n")}}
                       for d, i in zip(data["draws"], ident)]
    out["none_kept"] = params.identify.none_kept
    return out


def _ci(ci) -> dict:
    return {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "runs": ci.n_seeds}


def _p(p: float, floor: bool) -> str:
    return "–" if p != p else (f"≤{p:.1e}" if floor else (f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"))


def render(summary: dict, profile: Path, walls: dict) -> str:
    """table.md."""
    m, level = summary["metric"], summary["level"]
    pct = round(100 * level)
    lines = [f"# Study: {profile} ({summary['n_draws']} draws x training seeds {summary['seeds']}, "
             f"{summary['n_examples']} eval problems)", ""]
    for pool, s in summary["pools"].items():
        lines += [f"## Pool: {pool}", "", f"{m}, mean with {pct}% CI over draws x seeds x eval examples; then per draw:", "",
                  "| arm | runs | " + m + " | per draw |", "|---|---:|---:|---|"]
        for arm, r in s["rows"].items():
            per = s["per_draw_means"].get(arm)
            lines.append(f"| {arm} | {r['runs']} | {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] | "
                         + (", ".join(f"{x:.3f}" for x in per) if per else "(one model)") + " |")
        lines += ["", f"Differences, {pct}% CI (hierarchical bootstrap: draws, seeds, examples), p (draw-respecting "
                  "permutation; Holm), the draws-only t-test p, MDD at 80% power, and the bootstrap SD from each level alone:", "",
                  "| comparison | Δ [CI] | p (Holm) | draws t p | MDD | per-draw Δ | SD draws / seeds / examples (all) |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for c in s["comparisons"]:
            sd = c["sd"]
            lines.append(f"| {c['method']} − {c['reference']} | {c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] | "
                         f"{_p(c['p'], c['p_floor'])} ({_p(c['p_holm'], c['p_floor'])}) | {_p(c['t_p'], False)} | "
                         f"{c['mdd']:.3f} | {', '.join(f'{x:+.3f}' for x in c['per_draw'])} | "
                         f"{sd['draws']:.3f} / {sd['seeds']:.3f} / {sd['examples']:.3f} ({sd['total']:.3f}) |")
        lines.append("")
    lines += ["## Identification per draw", "", "| draw | recalled | kept | fallback | top feature | effect | adj. p | stability |",
              "|---|---:|---:|---|---:|---:|---:|---:|"]
    for i in summary["identify"]:
        eff, adj, stab = i["top_causal_effect"], i["top_p_adjusted"], i["stability_jaccard_top_n"]
        lines.append(f"| {i['draw']} | {i['n_recalled']} | {i['n_causal']} | {i['fallback'] or '–'} | {i['top_feature']} | "
                     + ("–" if eff is None else f"{eff:+.3f}") + " | "
                     + _p(float("nan") if adj is None else adj, False) + " | "
                     + ("–" if stab is None else f"{stab:.2f}") + " |")
    none = sum(1 for i in summary["identify"] if i["fallback"])
    lines += ["", f"Draws in which the causal filter kept no feature: {none} of {summary['n_draws']}; IGDS then selected by "
              f"`identify.none_kept: {summary['none_kept']}` (declared in params before the run).", ""]
    if walls:
        total = sum(w["wall_s"] for w in walls.values())
        lines += [f"Wall time: {total / 60:.0f} min for the draws run here (" + ", ".join(
            f"{n} {w['wall_s'] / 60:.0f}" for n, w in walls.items()) + " min).", ""]
    lines += ["How to read: each draw redraws the prior, the pool, the SAE's seed, identification and selection "
              "(pipelines.study); the eval problems are the same in every draw. A CI: the estimate ± t on D − 1 "
              "degrees of freedom × the SD of a hierarchical bootstrap that resamples the draws (paired between "
              "arms), the training seeds within each draw (per arm) and the eval examples (shared); conservative "
              "(98% coverage at 95% in simulated studies with 5 draws); with one draw, the percentile interval. "
              "p: a sign flip per example plus a draw term (the ANOVA draw variance component × Student t on "
              "D − 1 degrees of freedom), Holm across a pool's comparisons; the draws-only t-test uses the per-draw "
              "differences as the only unit. MDD: the smallest true difference detected with 80% power at 0.05 "
              "two-sided, with the standard error the CI's width gives. The SD columns: the bootstrap SD of the "
              "difference with only that level resampled (0 where the level has one member)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.study", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("profile", type=Path, help="configs/<name>.yaml (or params.yaml)")
    parser.add_argument("--draws", type=int, required=True, help="how many draws (0 .. D-1; draw 0 is the profile)")
    parser.add_argument("--stride", type=int, default=STRIDE, help=f"a draw moves the splits' seeds by draw x this (default {STRIDE})")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the workspace's params (the base of the overrides)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {OUT}/<profile>")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--queue", action="store_true", help="queue the draws (dvc queue start runs them); no table")
    what.add_argument("--collect", action="store_true", help="run nothing; the table from the draws already run")
    parser.add_argument("--baseline", default=None, help="the commit whose experiments are the draws (default: HEAD)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = args.out if args.out is not None else OUT / args.profile.stem
    try:
        if args.draws < 1:
            raise ConfigError(f"--draws {args.draws}: at least 1")
        if not args.collect:
            run_draws(args.profile, args.draws, args.stride, args.queue, args.params, out)
            if args.queue:
                print(f"study: queued; run `dvc queue start -j N`, then `python -m pipelines.study {args.profile} "
                      f"--draws {args.draws} --collect`", file=sys.stderr)
                return
        data = collect(args.profile, args.draws, args.baseline)
        summary = summarise(data, np.random.default_rng(data["params"].seed))
    except (ConfigError, DataError) as e:
        print(f"study: error: {e}", file=sys.stderr)
        sys.exit(2)
    walls = read_json(out / "draws.json") if (out / "draws.json").is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    summary["draw_commits"] = {d["name"]: d["commit"] for d in data["draws"]}
    write_json(out / "study.json", summary)
    with atomic_file(out / "table.md") as f:
        f.write(render(summary, args.profile, walls))
    print((out / "table.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
