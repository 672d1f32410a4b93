"""python -m bench.saeaxis: IGDS against its SAE's quality (issue 34.5), the paper's own
explanation of its results, tested.

The studies of one setting that differ only in the SAE (configs/steps-study.yaml: the 29k-token
chat-template SAE; configs/steps-sae100k.yaml and steps-sae1m.yaml: 100k and 1M tokens of
template-free text of 40 reasoning-gym tasks) ran their draws as DVC experiments
(pipelines.study). For every draw of every study this bench takes the draw's own SAE and features
out of its experiment (DVC's file system at the experiment's commit, never the workspace) and
measures, on text no SAE was trained on and the same for all:
- the SAE's quality on template-free text (a fresh draw of the 40 tasks, seeds of their own):
  explained variance, CE loss recovered, dead share, L0; and on the chat-format text IGDS applies
  it to (a mixed pool's examples);
- IGDS's on-task AUROC on that mixed pool (half the target task, half distractors in its own form:
  configs/steps-mixed.yaml's setting), scored with the draw's SAE and features;
and reads, from the study's own table (results/study/<profile>/study.json), the draw's fine-tuned
gain: IGDS's exact match minus random's on the draw's within pool, same 500 eval problems.

Writes results/bench-saeaxis.{json,md,png}: a row per SAE setting (means over its draws, the gain
with its t interval over draws), the Spearman correlation of each quality with AUROC and with the
gain over every (setting, draw) point, and the plot (AUROC and gain against CE loss recovered).
A rerun continues: each draw's numbers are kept in --work as they are measured.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common import ROOT, machine, subprocess_env, write_report
from igds.core.artifacts import atomic_file, read_json, write_json
from igds.core.config import ConfigError, from_dict
from igds.core.stats import correlation
from igds.params import Params, dump_params, read_params

log = logging.getLogger("bench.saeaxis")

PROFILES = ["configs/steps-study.yaml", "configs/steps-sae100k.yaml", "configs/steps-sae1m.yaml"]
TEXT_SEED = 109_000  # the common text's reasoning-gym seed: far from every split's, and from every draw's
QUALITY = ("explained_variance", "ce_loss_recovered", "dead_share", "l0")


def common_params(mixed: Path, sae_profile: Path, study_profile: Path, text_n: int, pool_n: int,
                  text_tokens: int) -> dict:
    """Params whose prepare writes the common text: the mixed pool of `mixed` at pool_n (the target
    task and distractors in its form), and a fresh draw of `sae_profile`'s SAE text (its tasks, n
    text_n, seed TEXT_SEED) of which text_tokens are measured (sae.heldout_tokens: met or refused);
    the model (autocast included) as the study ran it."""
    out = copy.deepcopy(read_params(mixed))
    sae_split = copy.deepcopy(read_params(sae_profile)["data"]["splits"].get("sae"))
    if not sae_split:
        raise ConfigError(f"{sae_profile}: no data.splits.sae to draw the common template-free text from")
    out["data"]["splits"]["sae"] = {**sae_split, "n": text_n, "seed": TEXT_SEED}
    out["data"]["pools"] = ["mixed"]
    out["data"]["splits"]["pool"]["n"] = pool_n
    out["model"] = copy.deepcopy(read_params(study_profile)["model"])
    out["sae"]["heldout_tokens"] = text_tokens
    return out


def draws_of(profile: Path, root: Path = ROOT) -> list[dict]:
    """[{name, commit, gain, identify}] of a profile's study: its table's per-draw IGDS - random."""
    path = root / "results" / "study" / profile.stem / "study.json"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run `python -m pipelines.study configs/{profile.name} --draws N` first")
    study = read_json(path)
    (pool, body), = study["pools"].items()
    comp = next((c for c in body["comparisons"] if c["method"].startswith("igds") and c["reference"].startswith("random")),
                None)
    if comp is None:
        raise ConfigError(f"{path}: no IGDS - random comparison")
    names = list(study["draw_commits"])
    ident = {i["draw"]: i for i in study["identify"]}
    return [{"name": n, "commit": study["draw_commits"][n], "gain": comp["per_draw"][d], "identify": ident.get(n, {}),
             "pool": pool} for d, n in enumerate(names)]


def fetch_artifacts(repo: Path, commit: str, dest: Path) -> Path:
    """The experiment's sae/ and features/ (the DVC cache of `repo`, at its commit) into dest."""
    from dvc.api import DVCFileSystem

    if not (dest / "features" / "features.json").is_file():
        fs = DVCFileSystem(str(repo), rev=commit)
        tmp = dest.with_name(dest.name + ".tmp")
        for name in ("sae", "features"):
            fs.get(name, str(tmp / name), recursive=True)
        tmp.rename(dest)
    return dest


class Measure:
    """The model, the common text's activations and the mixed pool, loaded once; `draw()` measures one SAE."""

    def __init__(self, params: Params, data: Path):
        from igds.core.models.loading import load_model
        from igds.core.pooling import collect_token_activations
        from igds.core.tokens import tokenize_plain, tokenize_records
        from pipelines.io import read_pool, read_split

        self.params, self.data = params, data
        cfg = params.sae
        self.loaded = load_model(params.model.name, params.model.device, params.model.dtype)
        model, tok = self.loaded.model, self.loaded.tokenizer
        self.text = read_split(data / "sae.jsonl")
        self.pool = read_pool(data, "mixed")
        log.info("caching the common text's activations (%d records) and the mixed pool's (%d)", len(self.text), len(self.pool))
        self.acts_text = collect_token_activations(model, tokenize_plain(tok, self.text, cfg.max_len), cfg.layer,
                                                   cfg.batch_size, tok.pad_token_id, max_tokens=cfg.heldout_tokens,
                                                   desc="template-free text")
        if self.acts_text.shape[0] < cfg.heldout_tokens:  # met or refused
            raise ConfigError(f"the common text gives {self.acts_text.shape[0]} tokens, {cfg.heldout_tokens} asked "
                              "for: raise --text-n or lower --text-tokens")
        self.acts_pool = collect_token_activations(model, tokenize_records(tok, self.pool, cfg.max_len), cfg.layer,
                                                   cfg.batch_size, tok.pad_token_id, desc="mixed pool")

    def draw(self, artifacts: Path) -> dict:
        from igds.core.models.loading import mixed_precision
        from igds.core.sae import load_sae
        from igds.core.scoring import score_pool
        from igds.core.selection_metrics import auroc
        from pipelines.sae import quality
        from pipelines.score import scoring_context

        params, model, tok = self.params, self.loaded.model, self.loaded.tokenizer
        sae = load_sae(artifacts / "sae", params.model.device)
        out = {"text": quality(model, tok, sae, self.acts_text, self.text, params.sae, plain=True),
               "pool": quality(model, tok, sae, self.acts_pool, self.pool, params.sae, plain=False)}
        ctx = scoring_context(params, "igds", self.data, {"sae": artifacts / "sae", "features": artifacts / "features"},
                              loader=lambda: self.loaded)
        with mixed_precision(params.model.device, params.model.autocast):
            frame, _ = score_pool(params.methods.build("igds"), self.pool, ctx)
        scores = frame.set_index("id").loc[[r.id for r in self.pool], "score"].to_numpy(dtype=float)
        labels = np.array([r.task == params.data.target_task for r in self.pool])
        out["auroc_on_task"] = float(auroc(np.where(np.isnan(scores), -np.inf, scores), labels))
        out["n_unscored"] = int(np.isnan(scores).sum())
        return out


def spearman(x: list[float], y: list[float]) -> dict:
    """Spearman's rho and its p (igds.core.stats.correlation); None where it has none (fewer than 3
    points, or a constant variable)."""
    c = correlation(x, y)
    none = lambda v: None if math.isnan(v) else v  # noqa: E731
    return {"rho": none(c.spearman_rho), "p": none(c.spearman_p), "n": c.n}


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None, None
    half = t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def summarise(settings: list[dict]) -> dict:
    """Per setting: means over draws and the gain's t interval; over every point: Spearman of each
    quality (template-free text and the pool's) with AUROC and with the gain."""
    for s in settings:
        pts = s["draws"]
        s["mean"] = {f"{where}_{k}": float(np.mean([p[where][k] for p in pts])) for where in ("text", "pool") for k in QUALITY}
        s["mean"]["auroc_on_task"] = float(np.mean([p["auroc_on_task"] for p in pts]))
        s["gain"] = dict(zip(("mean", "lo", "hi"), t_interval([p["gain"] for p in pts])))
    points = [p for s in settings for p in s["draws"]]
    corr = {}
    for where in ("text", "pool"):
        for k in ("ce_loss_recovered", "explained_variance"):
            x = [p[where][k] for p in points]
            corr[f"{where}_{k}"] = {"auroc_on_task": spearman(x, [p["auroc_on_task"] for p in points]),
                                    "gain": spearman(x, [p["gain"] for p in points])}
    return {"settings": settings, "spearman": corr, "n_points": len(points)}


def _f(x, fmt=".3f") -> str:
    return "–" if x is None else format(x, fmt)


def markdown(doc: dict) -> str:
    lines = [f"# IGDS against its SAE's quality ({doc['date']}, {doc['machine']}, commit {doc['commit']})", "",
             f"Quality on {doc['text']['n_tokens']:,} tokens of template-free text no SAE was trained on (a fresh draw of "
             f"the SAE text's tasks) and on the chat-format text of a mixed pool of {doc['pool']['n']} "
             f"({doc['pool']['on_task']} on-task); IGDS's on-task AUROC on that pool with each draw's SAE and features; "
             "the gain: IGDS's exact match minus random's on the draw's within pool (its study's table, 500 eval problems). "
             "Means over each setting's draws; the gain's 95% t interval over draws.", "",
             "| SAE | draws | train tokens | EV text | CE rec. text | dead text | L0 text | EV pool | CE rec. pool | "
             "kept features | IGDS AUROC | gain vs random |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in doc["settings"]:
        m, g = s["mean"], s["gain"]
        kept = ", ".join(str(p["identify"].get("n_causal", "?")) for p in s["draws"])
        gain = f"{g['mean']:+.3f}" + ("" if g["lo"] is None else f" [{g['lo']:+.3f}, {g['hi']:+.3f}]")
        lines.append(f"| {s['profile']} ({s['text']}) | {len(s['draws'])} | {s['train_tokens']:,} | "
                     f"{m['text_explained_variance']:.3f} | {m['text_ce_loss_recovered']:.3f} | {m['text_dead_share']:.2f} | "
                     f"{m['text_l0']:.1f} | {m['pool_explained_variance']:.3f} | {m['pool_ce_loss_recovered']:.3f} | "
                     f"{kept} | {m['auroc_on_task']:.3f} | {gain} |")
    lines += ["", f"Spearman over all {doc['n_points']} (setting, draw) points:", "",
              "| quality | vs AUROC: rho (p) | vs gain: rho (p) |", "|---|---:|---:|"]
    for k, c in doc["spearman"].items():
        a, g = c["auroc_on_task"], c["gain"]
        lines.append(f"| {k} | {_f(a['rho'], '+.2f')} ({_f(a['p'], '.2g')}) | {_f(g['rho'], '+.2f')} ({_f(g['p'], '.2g')}) |")
    lines += ["", "Per draw:", "", "| draw | CE rec. text | CE rec. pool | IGDS AUROC | gain | kept | top feature |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for s in doc["settings"]:
        for p in s["draws"]:
            lines.append(f"| {p['name']} | {p['text']['ce_loss_recovered']:.3f} | {p['pool']['ce_loss_recovered']:.3f} | "
                         f"{p['auroc_on_task']:.3f} | {p['gain']:+.3f} | {p['identify'].get('n_causal', '?')} | "
                         f"{p['identify'].get('top_feature', '?')} |")
    lines += ["", "![IGDS against SAE quality](bench-saeaxis.png)", ""]
    return "\n".join(lines)


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for s in doc["settings"]:
        x = [p["text"]["ce_loss_recovered"] for p in s["draws"]]
        axes[0].scatter(x, [p["auroc_on_task"] for p in s["draws"]], label=s["profile"])
        axes[1].scatter(x, [p["gain"] for p in s["draws"]], label=s["profile"])
    axes[0].set_ylabel("IGDS on-task AUROC (mixed pool)")
    axes[1].set_ylabel("exact match: IGDS - random")
    axes[1].axhline(0, color="grey", lw=0.8)
    for ax in axes:
        ax.set_xlabel("CE loss recovered, template-free held-out text")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(out, mode="wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.saeaxis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--profiles", type=Path, nargs="+", default=[ROOT / p for p in PROFILES],
                        help="studies that differ only in the SAE (each run by pipelines.study)")
    parser.add_argument("--mixed", type=Path, default=ROOT / "configs" / "steps-mixed.yaml",
                        help="the profile whose mixed pool IGDS's AUROC is measured on")
    parser.add_argument("--text-n", type=int, default=800, help="records of the common template-free text")
    parser.add_argument("--text-tokens", type=int, default=50_000, help="tokens of it the quality is measured on")
    parser.add_argument("--pool-n", type=int, default=400, help="the mixed pool's size (half on-task)")
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="the DVC repo whose cache holds the experiments' outputs (a worktree the study ran in)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-saeaxis"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-saeaxis.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    profiles = [p.resolve() for p in args.profiles]
    with_text = next((p for p in profiles if read_params(p)["data"]["splits"].get("sae")), None)
    if with_text is None:
        raise SystemExit("bench.saeaxis: no profile has data.splits.sae: the common text is a fresh draw of its tasks")
    whole = common_params(args.mixed, with_text, profiles[0], args.text_n, args.pool_n, args.text_tokens)
    params = from_dict(Params, whole, "")
    args.work.mkdir(parents=True, exist_ok=True)
    params_path, data = args.work / "params.yaml", args.work / "data"
    with atomic_file(params_path) as f:
        f.write(dump_params(whole))
    if not (data / "report.json").is_file():
        proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--params", str(params_path), "--out", str(data)],
                              cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"prepare of the common text failed:\n{proc.stderr[-3000:]}")
    measure = None
    settings = []
    for profile in profiles:
        own = from_dict(Params, read_params(profile), "")
        rows = []
        for d in draws_of(profile):
            record = args.work / "draws" / f"{d['name']}-{d['commit'][:10]}.json"
            if not record.is_file():
                measure = measure or Measure(params, data)
                log.info("%s: measuring (experiment %s)", d["name"], d["commit"][:7])
                got = measure.draw(fetch_artifacts(args.repo, d["commit"], args.work / "artifacts" / d["name"]))
                write_json(record, got)
            rows.append({**d, **read_json(record)})
        settings.append({"profile": profile.stem, "train_tokens": own.sae.train_tokens,
                         "text": "plain" if own.data.splits.sae is not None else "chat template", "draws": rows})
    doc = summarise(settings)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc.update(date=datetime.date.today().isoformat(), machine=machine(), commit=commit,
               text={"n_records": args.text_n, "n_tokens": args.text_tokens, "seed": TEXT_SEED},
               pool={"n": args.pool_n, "on_task": args.pool_n // 2})
    plot(doc, args.out.with_suffix(".png"))
    write_report(args.out, doc, markdown)


if __name__ == "__main__":
    main()
