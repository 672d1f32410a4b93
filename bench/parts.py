"""The parts of the bench. Each takes the shared `Bench` setup and returns the dict that
bench.json stores under the part's name.

- throughput: IGDS scoring against a bare forward pass through layers 0..L, same batches
- selection: every method's wall time on the same pool, through the Selector protocol
- e2e: IGDS's fixed cost (SAE: cache + train; identification) and scoring with the fresh artifacts
- memory: peak RSS scoring n and factor x n examples, each in a fresh process
- dvc: a full `dvc repro` of a profile in a project copy, then a no-op repro and the stale set
  after a select.ratios change
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from bench.common import (
    ROOT,
    CpuShare,
    mb,
    project_copy,
    resize_pool,
    stopwatch,
    subprocess_env,
)
from igds.activations import (
    collect_token_activations,
    iter_batches,
    pooled_feature_activations,
    tokenize_records,
)
from igds.artifacts import atomic_dir, read_json, write_json, write_jsonl
from igds.config import ConfigError, Params
from igds.data import Record
from igds.features import identify
from igds.models import LoadedModel, layer_module_path, run_to_layer
from igds.sae import encode_columns, load_sae, save_sae, train_sae
from igds.selection import ScoringContext, Selector, auroc, build_selector
from pipelines.io import read_split

log = logging.getLogger("bench")


@dataclass
class Bench:
    """What every part shares: the profile, its prepared data, the bench's pool, the loaded
    model (loaded once: model loading is no method's cost) and the IGDS artifacts."""

    params: Params
    params_path: Path
    data: Path  # a prepared data folder (prior, pool, general, ...)
    pool: list[Record]  # the pool every method scores (resized by --pool-size)
    prior: list[Record]
    work: Path  # scratch folder
    loaded: LoadedModel
    sae: Path | None = None
    features: Path | None = None

    def context(self, sae: Path | None = None, features: Path | None = None) -> ScoringContext:
        """A ScoringContext as pipelines/score.py builds it, with the already loaded model."""
        p = self.params
        return ScoringContext(
            seed=p.seed, target=self.prior, model_name=p.model.name, device=p.model.device, dtype=p.model.dtype,
            batch_size=p.scoring.batch_size, max_len=p.scoring.max_len,
            artifacts={"sae": sae or self.sae, "features": features or self.features},
            loader=lambda: self.loaded,
        )

    def selector(self, name: str) -> Selector:
        return build_selector(name, self.params.methods.get(name))

    def labels(self, pool: list[Record]) -> np.ndarray:
        return np.array([r.task == self.params.data.target_task for r in pool])


def _jsonable(info: dict) -> dict:
    """The scalar and short-list entries of a selector's info dict."""
    out = {}
    for key, value in info.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float):
            out[key] = round(value, 6)
        elif isinstance(value, (int, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)) and len(value) <= 32:
            out[key] = [v.item() if isinstance(v, (np.floating, np.integer)) else v for v in value]
    return out


# --- 1. scoring throughput ------------------------------------------------------------------

def throughput(b: Bench, repeats: int) -> dict:
    """IGDS scoring (selector.score, and its encoding loop alone) against a bare forward pass
    through layers 0..L over the same length-sorted batches; best of `repeats`, interleaved
    (the order rotates each repeat so that drift in the machine's load hits every pass)."""
    model, tokenizer = b.loaded.model, b.loaded.tokenizer
    device = next(model.parameters()).device
    cfg = b.params.scoring
    params = b.selector("igds").params
    features = read_json(Path(b.features) / "features.json")
    layer, chosen = features["layer"], features["ranking"][:params.k]
    pad = tokenizer.pad_token_id
    sae = load_sae(b.sae, b.params.model.device)
    tok = tokenize_records(tokenizer, b.pool, cfg.max_len)

    def bare() -> dict:
        with stopwatch() as t_tok:
            tok_ = tokenize_records(tokenizer, b.pool, cfg.max_len)
        with stopwatch() as t_loop, torch.inference_mode():
            for batch in iter_batches(tok_, cfg.batch_size, pad, params.scope, device):
                run_to_layer(model, batch.input_ids, batch.attention_mask, layer)
        return {"wall_s": t_tok["wall_s"] + t_loop["wall_s"], "cpu_s": t_tok["cpu_s"] + t_loop["cpu_s"],
                "tokenize_s": t_tok["wall_s"], "loop_s": t_loop["wall_s"], "n_tokens": tok_.n_tokens}

    def igds_score() -> dict:
        selector, ctx = b.selector("igds"), b.context()
        with stopwatch() as t:
            selector.score(b.pool, ctx)
        return {**t, "n_tokens": selector.info["n_tokens"]}

    def igds_loop() -> dict:
        with stopwatch() as t:
            pooled_feature_activations(model, sae, tok, layer, cfg.batch_size, pad, params.scope,
                                       features=chosen, desc="igds loop")
        return {**t, "n_tokens": tok.n_tokens}

    passes = {"bare_forward": bare, "igds_loop": igds_loop, "igds_score": igds_score}
    # warm-up (untimed): the forward pass over a slice, so no pass pays first-call costs
    with torch.inference_mode():
        for batch in iter_batches(tokenize_records(tokenizer, b.pool[:2 * cfg.batch_size], cfg.max_len),
                                  cfg.batch_size, pad, params.scope, device):
            run_to_layer(model, batch.input_ids, batch.attention_mask, layer)
    runs: list[dict] = []
    names = list(passes)
    for r in tqdm(range(repeats), desc="throughput repeats", leave=False):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs.append({"pass": name, "repeat": r, **passes[name]()})
            log.info("throughput repeat %d: %s %.2f s", r, name, runs[-1]["wall_s"])
    n_tokens = {run["n_tokens"] for run in runs}
    if len(n_tokens) != 1:
        raise AssertionError(f"the passes saw different token counts: {n_tokens}")
    (n_tok,) = n_tokens
    best = {name: min((run for run in runs if run["pass"] == name), key=lambda run: run["wall_s"]) for name in names}
    summary = {name: {"best_s": best[name]["wall_s"], "tokens_per_s": round(n_tok / best[name]["wall_s"], 1),
                      "all_s": [run["wall_s"] for run in runs if run["pass"] == name],
                      "cpu_s": best[name]["cpu_s"]} for name in names}
    summary["bare_forward"]["tokenize_s"] = best["bare_forward"]["tokenize_s"]
    summary["bare_forward"]["loop_s"] = min(run["loop_s"] for run in runs if run["pass"] == "bare_forward")
    bare_tps, igds_tps = summary["bare_forward"]["tokens_per_s"], summary["igds_score"]["tokens_per_s"]
    loop_ratio = summary["bare_forward"]["loop_s"] / summary["igds_loop"]["best_s"]
    return {
        "repeats": repeats, "layer": layer, "n_layers_run": layer + 1,
        "n_layers_model": int(model.config.num_hidden_layers), "d_sae": int(sae.cfg.d_sae),
        "k": params.k, "scope": params.scope, "n_pool": len(b.pool), "n_tokens": n_tok,
        "batch_size": cfg.batch_size, "max_len": cfg.max_len, "torch_threads": torch.get_num_threads(),
        **summary,
        # the target: what IGDS scoring costs (selector.score: tokenising, SAE load, encode,
        # pooling) against tokenising + the bare forward pass to layer L
        "ratio": round(igds_tps / bare_tps, 4),
        # the loops alone: pooled_feature_activations against the forward loop, both pre-tokenised
        "ratio_loop": round(loop_ratio, 4),
        "runs": runs,
        "encode_profile": encode_profile(b, sae, tok, layer, chosen, params.scope),
    }


def encode_profile(b: Bench, sae, tok, layer: int, chosen: list[int], scope: str) -> dict:
    """Where IGDS's extra time goes, batch by batch over the same batches (one pass): the
    forward to layer L, the SAE's full-width encode of the in-scope tokens (all d_sae
    pre-activations, TopK: what IGDS did before `encode_columns`), and the column encode IGDS
    scoring uses (`igds.sae.encode_columns`: the chosen features' pre-activations for every
    token, the full encode only of tokens where one of them is positive), with the largest
    difference between the two (0: exact)."""
    model, pad = b.loaded.model, b.loaded.tokenizer.pad_token_id
    device = next(model.parameters()).device
    cols = torch.as_tensor(chosen, dtype=torch.long)
    times = {"forward_s": 0.0, "encode_s": 0.0, "gated_encode_s": 0.0}
    n_scope = n_positive = n_firing = 0
    max_diff = 0.0
    with torch.inference_mode():
        for batch in iter_batches(tok, b.params.scoring.batch_size, pad, scope, device):
            with stopwatch() as t:
                resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer)
            times["forward_s"] += t["wall_s"]
            x = resid[batch.scope_mask].to(sae.W_enc.dtype)
            with stopwatch() as t:
                full = sae.encode(x)[:, cols]
            times["encode_s"] += t["wall_s"]
            with stopwatch() as t:
                gated = encode_columns(sae, x, cols)
            times["gated_encode_s"] += t["wall_s"]
            pre = sae.process_sae_in(x) @ sae.W_enc[:, cols] + sae.b_enc[cols]
            n_scope += x.shape[0]
            n_positive += int((pre > 0).any(1).sum())
            n_firing += int((full > 0).any(1).sum())
            max_diff = max(max_diff, float((gated - full).abs().max()) if full.numel() else 0.0)
    return {**{k: round(v, 3) for k, v in times.items()},
            "encode_share": round(times["encode_s"] / (times["forward_s"] + times["encode_s"]), 4),
            "gated_encode_share": round(times["gated_encode_s"] / (times["forward_s"] + times["gated_encode_s"]), 4),
            "n_scope_tokens": n_scope, "positive_preact_share": round(n_positive / max(n_scope, 1), 4),
            "firing_share": round(n_firing / max(n_scope, 1), 4), "gated_max_abs_diff": max_diff}


# --- 2. selection wall time of every method -------------------------------------------------

def selection(b: Bench, methods: list[str], repeats: int = 1) -> dict:
    """Each method's selector.score on the same pool with a fresh ScoringContext (as
    pipelines/score.py builds it; the model is already loaded), best of `repeats`."""
    rows: dict[str, dict] = {}
    labels = b.labels(b.pool)
    for name in tqdm(methods, desc="methods", leave=False):
        times, cpus, shares = [], [], []
        for _ in range(repeats):
            selector, ctx = b.selector(name), b.context()
            share = CpuShare()
            with stopwatch() as t:
                scores = np.asarray(selector.score(b.pool, ctx), dtype=float)
            times.append(t["wall_s"])
            cpus.append(t["cpu_s"])
            shares.append(share.summary())
        if scores.shape != (len(b.pool),):
            raise AssertionError(f"{name} returned {scores.shape} scores for {len(b.pool)} examples")
        i = int(np.argmin(times))
        finite = ~np.isnan(scores)
        rows[name] = {
            "wall_s": times[i], "all_wall_s": times, "cpu_s": cpus[i],
            "s_per_example": round(times[i] / len(b.pool), 6),
            "auroc_on_task": round(auroc(np.where(finite, scores, -np.inf), labels), 4),
            "other_cores": shares[i]["other_cores"], "loadavg_start": shares[i]["loadavg_start"],
            "info": _jsonable(getattr(selector, "info", {}) or {}),
        }
        log.info("selection: %s %.2f s (%.4f s/example), AUROC %.3f", name, times[i], rows[name]["s_per_example"],
                 rows[name]["auroc_on_task"])
    if "igds" in rows:
        for row in rows.values():
            row["x_igds"] = round(row["wall_s"] / rows["igds"]["wall_s"], 3) if rows["igds"]["wall_s"] else None
    return {"n_pool": len(b.pool), "repeats": repeats, "methods": rows}


# --- 3. IGDS end to end ---------------------------------------------------------------------

def end_to_end(b: Bench, out: Path, sae_steps: int | None = None, identify_overrides: dict | None = None) -> dict:
    """IGDS's fixed cost, made as the sae and identify stages make it, then the pool scored
    with the fresh artifacts. Fixed = tokenising + caching the training activations
    (pipelines/sae.py) + train_sae + saving + identification (igds.features.identify as
    pipelines/identify.py calls it). Not counted: the SAE's held-out metrics (CE loss
    recovered etc.) and the feature cards, which are diagnostics scoring does not need.
    Writes `out`/sae and `out`/features (features.json as pipelines/identify.py writes it)."""
    from pipelines.identify import sae_digest  # noqa: PLC0415

    p = b.params
    cfg = replace(p.sae, steps=sae_steps) if sae_steps else p.sae
    if cfg.pretrained:
        raise ConfigError("the bench's e2e part trains a local SAE; this profile loads a pretrained one "
                          "(sae.release): pass --sae/--features and leave out the e2e part")
    icfg = replace(p.identify, **(identify_overrides or {}))
    model, tokenizer = b.loaded.model, b.loaded.tokenizer
    pad = tokenizer.pad_token_id
    steps: dict[str, dict] = {}

    # the sae stage: the same records, order, held-out split and subsample as pipelines/sae.py
    records = read_split(b.data / "general.jsonl") + read_split(b.data / "pool.jsonl")
    rng = np.random.default_rng([p.seed, 17])
    records = [records[i] for i in rng.permutation(len(records))]
    n_heldout = max(cfg.ce_examples, len(records) // 10)
    train = records[n_heldout:]
    with stopwatch() as steps["sae_tokenize"]:
        tok_train = tokenize_records(tokenizer, train, cfg.max_len)
    with stopwatch() as steps["sae_cache"]:
        acts = collect_token_activations(model, tok_train, cfg.layer, cfg.batch_size, pad, desc="caching train")
        g = torch.Generator().manual_seed(p.seed)
        n_cached = int(acts.shape[0])
        if acts.shape[0] > cfg.train_tokens:
            acts = acts[torch.randperm(acts.shape[0], generator=g)[:cfg.train_tokens]]
    log.info("e2e: cached %d token activations (%d kept) in %.1f s", n_cached, acts.shape[0],
             steps["sae_cache"]["wall_s"])
    with stopwatch() as steps["sae_train"]:
        sae = train_sae(acts, cfg, seed=p.seed, device=p.model.device)
    log.info("e2e: trained the SAE (%d steps) in %.1f s", cfg.steps, steps["sae_train"]["wall_s"])
    sae.cfg.metadata.hook_name = layer_module_path(model, cfg.layer)
    sae.cfg.metadata.model_name = p.model.name
    with stopwatch() as steps["sae_save"], atomic_dir(out / "sae") as tmp:
        save_sae(sae, tmp)
    del acts

    # the identify stage (without the feature cards)
    prior, general = read_split(b.data / "prior.jsonl"), read_split(b.data / "general.jsonl")
    with stopwatch() as steps["identify"]:
        result = identify(model, tokenizer, load_sae(out / "sae", p.model.device), prior, general, icfg, cfg.layer)
    log.info("e2e: identification kept %d of %d recalled features in %.1f s", len(result.ranking),
             len(result.records), steps["identify"]["wall_s"])
    with atomic_dir(out / "features") as tmp:
        write_json(tmp / "features.json", {
            "layer": cfg.layer, "sae_sha256": sae_digest(out / "sae"), "ranking": result.ranking,
            "baseline_loglik": result.baseline_loglik, "n_prior_recall": result.n_prior_recall,
            "n_prior_heldout": result.n_prior_heldout, "n_general": result.n_general,
            "interventional": icfg.interventional, "features": [r.to_dict() for r in result.records],
            "stability": result.stability,
        })

    # scoring with the fresh artifacts
    score: dict = {}
    if len(result.ranking) >= b.selector("igds").params.k:
        selector = b.selector("igds")
        with stopwatch() as t:
            scores = np.asarray(selector.score(b.pool, b.context(out / "sae", out / "features")), dtype=float)
        score = {**t, "chosen_features": selector.info["chosen_features"],
                 "auroc_on_task": round(auroc(scores, b.labels(b.pool)), 4)}
    else:
        log.warning("e2e: identification kept %d features, fewer than methods.igds.k; no scoring",
                    len(result.ranking))
    fixed = sum(steps[k]["wall_s"] for k in ("sae_tokenize", "sae_cache", "sae_train", "sae_save", "identify"))
    # does the bench's SAE and identification reproduce the given artifacts (same steps)?
    same: dict = {"sae_sha256": sae_digest(out / "sae")}
    if b.sae is not None and b.features is not None:
        given = read_json(Path(b.features) / "features.json")
        same.update(given_sae_sha256=sae_digest(Path(b.sae)), given_ranking=given["ranking"][:8],
                    identical_sae=sae_digest(Path(b.sae)) == same["sae_sha256"],
                    identical_ranking=given["ranking"] == result.ranking)
    return {
        "sae_steps": cfg.steps, "sae_train_tokens": cfg.train_tokens, "n_cached_tokens": n_cached,
        "identify": {"top_n": icfg.top_n, "alphas": list(icfg.alphas), "n_prior": len(prior),
                     "n_general": len(general), "n_recalled": len(result.records), "n_causal": len(result.ranking),
                     "ranking": result.ranking[:8]},
        "steps": steps, "fixed_s": round(fixed, 3), "score": score, "n_pool": len(b.pool),
        "e2e_s": round(fixed + score["wall_s"], 3) if score else None,
        "artifacts": {"sae": str(out / "sae"), "features": str(out / "features")}, "reproduces": same,
    }


def break_even(fixed_s: float, igds_s: float, loss_s: float, n: int) -> dict:
    """Pool size above which IGDS end to end (fixed + n x igds per example) costs less than
    Loss (n x loss per example): n* = fixed / (loss_pe - igds_pe). The SAE and the features
    are made once and reused across pools."""
    igds_pe, loss_pe = igds_s / n, loss_s / n
    n_star = fixed_s / (loss_pe - igds_pe) if loss_pe > igds_pe else None
    return {"fixed_s": round(fixed_s, 3), "igds_s_per_example": round(igds_pe, 6),
            "loss_s_per_example": round(loss_pe, 6), "n_break_even": None if n_star is None else int(np.ceil(n_star)),
            "e2e_igds_s_at_n": round(fixed_s + igds_s, 3), "loss_s_at_n": round(loss_s, 3), "n": n,
            "e2e_over_loss_at_n": round((fixed_s + igds_s) / loss_s, 3)}


# --- 4. peak memory at n and factor x n -----------------------------------------------------

def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.child", *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.child {' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(b: Bench, factor: int = 4) -> dict:
    """Peak RSS of a fresh process that scores n (and factor x n) pool examples with IGDS, of
    one that only loads the model (the baseline under the scoring increment), and of one
    that runs only the bare forward pass to layer L over the n examples (so the SAE's share
    of the increment shows). Peaks are VmHWM: see bench/child.py."""
    n = len(b.pool)
    folder = b.work / "memory"
    common = ["--params", str(b.params_path.resolve()), "--threads", str(torch.get_num_threads())]
    artifacts = ["--sae", str(Path(b.sae).resolve()), "--features", str(Path(b.features).resolve())]
    log.info("memory: baseline process (model only)")
    out = {"n": n, "factor": factor, "baseline": _child(["baseline", *common])}
    for size in (n, factor * n):
        write_jsonl(folder / f"pool-{size}.jsonl", (r.to_dict() for r in resize_pool(b.pool, size)))
    out["forward"] = _child(["forward", *common, "--pool", str(folder / f"pool-{n}.jsonl"), *artifacts])
    for size in tqdm((n, factor * n), desc="memory", leave=False):
        out[str(size)] = _child(["score", *common, "--pool", str(folder / f"pool-{size}.jsonl"),
                                 "--prior", str(b.data / "prior.jsonl"), *artifacts])
        log.info("memory: n=%d peak RSS %.0f MB (scoring %.1f s)", size, mb(out[str(size)]["peak_rss_bytes"]),
                 out[str(size)]["wall_s"])
    small, large, base = out[str(n)], out[str(factor * n)], out["baseline"]["peak_rss_bytes"]
    out["ratio"] = round(large["peak_rss_bytes"] / small["peak_rss_bytes"], 4)
    out["increment_bytes"] = {key: out[key]["peak_rss_bytes"] - base for key in ("forward", str(n), str(factor * n))}
    inc_small, inc_large = out["increment_bytes"][str(n)], out["increment_bytes"][str(factor * n)]
    out["increment_ratio"] = round(inc_large / inc_small, 3) if inc_small > 0 else None
    return out


# --- 5. DVC: no-op repro and the stale set --------------------------------------------------

def _dvc(work: Path, *args: str, log_to: Path | None = None) -> tuple[str, float]:
    with stopwatch() as t:
        proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True, env=subprocess_env())
    if log_to is not None:
        log_to.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {work}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout, t["wall_s"]


def dvc(work: Path, params: Path, noop_repeats: int = 3) -> dict:
    """Full `dvc repro` of `params` in a project copy, then `dvc repro` with nothing changed
    (best of `noop_repeats`), then the stages `dvc status --json` calls stale after a change
    of select.ratios only (expected: select, finetune, evaluate at the new ratio, and report)."""
    copy = project_copy(work, params, env=subprocess_env())
    log.info("dvc: full `dvc repro` of %s in %s (minutes)", params, copy)
    _, full_s = _dvc(copy, "repro", log_to=work.parent / "dvc-repro.log")
    log.info("dvc: full repro took %.0f s", full_s)
    noop = []
    for _ in tqdm(range(noop_repeats), desc="dvc no-op repro", leave=False):
        stdout, wall = _dvc(copy, "repro")
        noop.append({"wall_s": wall, "ran_a_stage": "Running stage" in stdout})
    status_clean, status_s = _dvc(copy, "status", "--json")
    text = (copy / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    old = list(raw["select"]["ratios"])
    new = next(r for r in (0.25, 0.75, 0.125) if r not in old)
    # edit the one line, so no other value changes its spelling (and DVC sees nothing else change)
    text = re.sub(r"(?m)^(\s+ratios:\s*)\[[^\]]*\]", rf"\g<1>[{new}]", text, count=1)
    if yaml.safe_load(text)["select"]["ratios"] != [new]:
        raise RuntimeError(f"could not set select.ratios in {copy / 'params.yaml'} (expects `ratios: [...]`)")
    (copy / "params.yaml").write_text(text)
    status, status_changed_s = _dvc(copy, "status", "--json")
    stale = sorted(s.split(":")[-1] for s in json.loads(status or "{}"))
    seeds = raw["finetune"]["seeds"]
    methods = raw["select"]["methods"]
    expected = sorted({f"select@{m}-{new}" for m in methods}
                      | {f"{stage}@{m}-{new}-{s}" for m in methods for s in seeds for stage in ("finetune", "evaluate")}
                      | {"report"})
    upstream = [s for s in stale if s.split("@")[0] in ("prepare", "sae", "identify", "score")]
    return {
        "params": str(params), "full_repro_s": full_s,
        "noop_repro_s": min(n["wall_s"] for n in noop), "noop_runs": noop,
        "status_s": status_s, "clean_status": json.loads(status_clean or "{}"),
        "ratios_change": {"from": old, "to": [new]}, "status_after_change_s": status_changed_s,
        "stale": stale, "n_stale": len(stale), "expected_stale": expected,
        "unexpected_stale": sorted(set(stale) - set(expected)), "missing_stale": sorted(set(expected) - set(stale)),
        "upstream_stale": upstream,
    }
