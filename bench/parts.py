"""The parts of the bench. Each takes the shared `Bench` setup and returns its result
dataclass (bench.results), which bench.json stores under the part's name. The parts call
what the stages call: scoring contexts come from pipelines.score.scoring_context, scoring
from igds.core.scoring.score_pool, the SAE from pipelines.sae.make_sae, the features document
from pipelines.method.identify.features_document.

- throughput: IGDS scoring against a bare forward pass through layers 0..L, same batches
- selection: every method's wall time on the same pool, as the score stage scores it
- e2e: IGDS's fixed cost (the sae stage's SAE, identification) and scoring with the fresh artifacts
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

from bench.common import ROOT, CpuShare, mb, project_copy, resize_pool, stopwatch, subprocess_env
from bench.results import (
    BreakEven,
    DvcResult,
    EncodeProfile,
    EndToEndResult,
    FinetuneResult,
    FreshScore,
    IdentifySummary,
    MemoryResult,
    MethodTime,
    PassTime,
    Reproduces,
    SelectionResult,
    ThroughputResult,
    Timing,
)
from igds.core.artifacts import atomic_dir, read_json, write_json, write_jsonl
from igds.core.config import ConfigError
from igds.params import Params, load_params
from igds.core.context import ScoringContext
from igds.core.data import Record
from igds.method.features import identify
from igds.core.models.loading import LoadedModel
from igds.core.models.residual import run_to_layer
from igds.core.pooling import pooled_feature_activations
from igds.core.registry import Selector
from igds.method.resonance import chosen_features
from igds.core.sae import encode_columns, load_sae, save_sae
from igds.core.scoring import score_pool
from igds.core.selection_metrics import auroc
from pipelines.graph import write_graph
from igds.core.tokens import iter_batches, tokenize_records
from pipelines.method.identify import features_document, identify_metrics, sae_digest
from pipelines.io import read_pools, read_split
from pipelines.sae import make_sae
from pipelines.score import needed_artifacts, scoring_context

log = logging.getLogger("bench")

@dataclass
class Bench:
    """What every part shares: the profile, its prepared data, the bench's pool, the loaded
    model (loaded once: model loading is no method's cost) and the IGDS artifacts."""

    params: Params
    params_path: Path
    data: Path  # a prepared data folder (prior, pool, general, ...)
    pool: list[Record]  # the pool every method scores (resized by --pool-size)
    work: Path  # scratch folder
    loaded: LoadedModel
    n_prepared: int = 0  # examples of the prepared pool
    sae: Path | None = None
    features: Path | None = None

    def artifacts(self, method: str, sae: Path | None = None, features: Path | None = None) -> dict[str, Path]:
        """The artifact folders `method` declares it needs, as the score stage passes them."""
        return needed_artifacts(self.params, method, sae or self.sae, features or self.features)

    def context(self, method: str, sae: Path | None = None, features: Path | None = None) -> ScoringContext:
        """The score stage's context for `method`, with the already loaded model."""
        return scoring_context(self.params, method, self.data, self.artifacts(method, sae, features),
                               loader=lambda: self.loaded)

    def selector(self, name: str) -> Selector:
        return self.params.methods.build(name)

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


def timed_score(b: Bench, method: str, sae: Path | None = None,
                features: Path | None = None) -> tuple[Timing, np.ndarray, dict]:
    """Score the bench's pool with `method` as the score stage does (score_pool, in chunks of
    scoring.chunk_batches for a shardable method; nothing kept to resume from): its timing,
    the scores in pool order and the selector's info."""
    selector, ctx = b.selector(method), b.context(method, sae, features)
    with stopwatch() as t:
        frame, info = score_pool(selector, b.pool, ctx, chunk_batches=b.params.scoring.chunk_batches)
    info.pop("resumed_chunks", None)  # always 0 here: the bench keeps no chunks
    return Timing(**t), frame["score"].to_numpy(dtype=float), info


def on_task_auroc(b: Bench, scores: np.ndarray) -> float:
    """The scores' on-task AUROC, unscored (NaN) examples ranked last, as the score stage computes it."""
    finite = ~np.isnan(scores)
    return round(auroc(np.where(finite, scores, -np.inf), b.labels(b.pool)), 4)


# --- 1. scoring throughput ------------------------------------------------------------------

def throughput(b: Bench, repeats: int) -> ThroughputResult:
    """IGDS scoring (selector.score, and its encoding loop alone) against a bare forward pass
    through layers 0..L over the same length-sorted batches; best of `repeats`, interleaved
    (the order rotates each repeat so that drift in the machine's load hits every pass)."""
    model, tokenizer = b.loaded.model, b.loaded.tokenizer
    device = next(model.parameters()).device
    cfg = b.params.scoring
    params = b.selector("igds").params
    features = read_json(Path(b.features) / "features.json")
    layer, chosen = features["layer"], chosen_features(features, params.k, params.features)
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
        # one selector.score over the whole pool (no chunks): the encoding cost against the bare pass
        selector, ctx = b.selector("igds"), b.context("igds")
        with stopwatch() as t:
            result = selector.score(b.pool, ctx)
        return {**t, "n_tokens": result.info["n_tokens"]}

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
    summary = {name: _pass_time([run for run in runs if run["pass"] == name], n_tok) for name in names}
    bare_runs = [run for run in runs if run["pass"] == "bare_forward"]
    summary["bare_forward"].tokenize_s = min(bare_runs, key=lambda run: run["wall_s"])["tokenize_s"]
    summary["bare_forward"].loop_s = min(run["loop_s"] for run in bare_runs)
    return ThroughputResult(
        repeats=repeats, layer=layer, n_layers_run=layer + 1, n_layers_model=int(model.config.num_hidden_layers),
        d_sae=int(sae.cfg.d_sae), k=params.k, scope=params.scope, n_pool=len(b.pool), n_tokens=n_tok,
        batch_size=cfg.batch_size, max_len=cfg.max_len, torch_threads=torch.get_num_threads(),
        bare_forward=summary["bare_forward"], igds_score=summary["igds_score"], igds_loop=summary["igds_loop"],
        # the target: what IGDS scoring costs (selector.score: tokenising, SAE load, encode,
        # pooling) against tokenising + the bare forward pass to layer L
        ratio=round(summary["igds_score"].tokens_per_s / summary["bare_forward"].tokens_per_s, 4),
        # the loops alone: pooled_feature_activations against the forward loop, both pre-tokenised
        ratio_loop=round(summary["bare_forward"].loop_s / summary["igds_loop"].best_s, 4),
        runs=runs, encode_profile=encode_profile(b, sae, tok, layer, chosen, params.scope),
    )


def _pass_time(runs: list[dict], n_tokens: int) -> PassTime:
    best = min(runs, key=lambda run: run["wall_s"])
    return PassTime(best_s=best["wall_s"], tokens_per_s=round(n_tokens / best["wall_s"], 1),
                    all_s=[run["wall_s"] for run in runs], cpu_s=best["cpu_s"])


def encode_profile(b: Bench, sae, tok, layer: int, chosen: list[int], scope: str) -> EncodeProfile:
    """Where IGDS's extra time goes, batch by batch over the same batches (one pass): the
    forward to layer L, the SAE's full-width encode of the in-scope tokens (all d_sae
    pre-activations, TopK: what IGDS did before `encode_columns`), and the column encode IGDS
    scoring uses (`igds.core.sae.encode_columns`: the chosen features' pre-activations for every
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
    return EncodeProfile(
        **{k: round(v, 3) for k, v in times.items()},
        encode_share=round(times["encode_s"] / (times["forward_s"] + times["encode_s"]), 4),
        gated_encode_share=round(times["gated_encode_s"] / (times["forward_s"] + times["gated_encode_s"]), 4),
        n_scope_tokens=n_scope, positive_preact_share=round(n_positive / max(n_scope, 1), 4),
        firing_share=round(n_firing / max(n_scope, 1), 4), gated_max_abs_diff=max_diff)


# --- 2. selection wall time of every method -------------------------------------------------

def selection(b: Bench, methods: list[str], repeats: int = 1) -> SelectionResult:
    """Each method scoring the same pool as the score stage does (its ScoringContext from
    pipelines.score.scoring_context, igds.core.scoring.score_pool; the model is already loaded),
    best of `repeats`."""
    rows: dict[str, MethodTime] = {}
    for name in tqdm(methods, desc="methods", leave=False):
        runs = []
        for _ in range(repeats):
            share = CpuShare()
            timing, scores, info = timed_score(b, name)
            runs.append((timing, share.summary(), scores, info))
        timing, share, scores, info = min(runs, key=lambda run: run[0].wall_s)
        rows[name] = MethodTime(
            wall_s=timing.wall_s, all_wall_s=[run[0].wall_s for run in runs], cpu_s=timing.cpu_s,
            s_per_example=round(timing.wall_s / len(b.pool), 6), auroc_on_task=on_task_auroc(b, scores),
            other_cores=share["other_cores"], loadavg_start=share["loadavg_start"], info=_jsonable(info))
        log.info("selection: %s %.2f s (%.4f s/example), AUROC %.3f", name, timing.wall_s,
                 rows[name].s_per_example, rows[name].auroc_on_task)
    if "igds" in rows:
        for row in rows.values():
            row.x_igds = round(row.wall_s / rows["igds"].wall_s, 3) if rows["igds"].wall_s else None
    return SelectionResult(n_pool=len(b.pool), repeats=repeats, chunk_batches=b.params.scoring.chunk_batches,
                           methods=rows)


# --- 3. IGDS end to end ---------------------------------------------------------------------

def end_to_end(b: Bench, out: Path, sae_steps: int | None = None,
               identify_overrides: dict | None = None) -> EndToEndResult:
    """IGDS's fixed cost, made by the functions the sae and identify stages call, then the pool
    scored with the fresh artifacts. Fixed = caching the activations + training
    (pipelines.sae.make_sae) + saving + identification (igds.method.features.identify as
    pipelines/method/identify.py calls it). Not counted: the SAE's held-out metrics (make_sae's CE
    loss recovered etc., timed as `sae_metrics`) and the feature cards, diagnostics scoring
    does not need. Writes `out`/sae and `out`/features/features.json (features_document)."""
    p = b.params
    if p.sae.pretrained:
        raise ConfigError("the bench's e2e part trains a local SAE; this profile loads a pretrained one "
                          "(sae.release): pass --sae/--features and leave out the e2e part")
    # every token the bench's (possibly resized) text gives: the part times the stage on that text,
    # and records how many it had (n_train_tokens); a request the text cannot meet would stop it
    sae = replace(p.sae, train_tokens=None, heldout_tokens=None)
    params = replace(p, sae=replace(sae, steps=sae_steps) if sae_steps else sae)
    cfg, icfg = params.sae, replace(p.identify, **(identify_overrides or {}))
    steps: dict[str, Timing] = {}

    # the sae stage: make_sae on the records pipelines/sae.py's run reads, then its save
    records = read_split(b.data / "general.jsonl") + read_pools(b.data, params)
    with stopwatch() as t:
        sae, metrics = make_sae(params, b.loaded, records, None)
    steps["sae_cache"] = Timing(metrics["collect_wall_s"])  # tokenise + cache the train and held-out tokens
    steps["sae_train"] = Timing(metrics["train_wall_s"])
    steps["sae_metrics"] = Timing(round(t["wall_s"] - metrics["collect_wall_s"] - metrics["train_wall_s"], 4))
    log.info("e2e: cached %d train tokens in %.1f s, trained the SAE (%d steps) in %.1f s", metrics["n_train_tokens"],
             metrics["collect_wall_s"], cfg.steps, metrics["train_wall_s"])
    with stopwatch() as t, atomic_dir(out / "sae") as tmp:
        save_sae(sae, tmp)
    steps["sae_save"] = Timing(**t)
    del sae

    # the identify stage (without the feature cards), on the SAE as saved
    model, tokenizer = b.loaded.model, b.loaded.tokenizer
    prior, general = read_split(b.data / "prior.jsonl"), read_split(b.data / "general.jsonl")
    with stopwatch() as t:
        result = identify(model, tokenizer, load_sae(out / "sae", p.model.device), prior, general, icfg, cfg.layer)
    steps["identify"] = Timing(**t)
    log.info("e2e: identification kept %d of %d recalled features in %.1f s", len(result.ranking),
             len(result.records), steps["identify"].wall_s)
    with atomic_dir(out / "features") as tmp:
        write_json(tmp / "features.json", features_document(result, cfg.layer, sae_digest(out / "sae"),
                                                            icfg.interventional))
    found = identify_metrics(result, icfg.interventional)

    score = None
    if len(result.ranking) >= b.selector("igds").params.k:
        timing, scores, info = timed_score(b, "igds", out / "sae", out / "features")
        score = FreshScore(wall_s=timing.wall_s, cpu_s=timing.cpu_s, chosen_features=info["chosen_features"],
                           auroc_on_task=on_task_auroc(b, scores))
    else:
        log.warning("e2e: identification kept %d features, fewer than methods.igds.k; no scoring",
                    len(result.ranking))
    fixed = sum(steps[k].wall_s for k in ("sae_cache", "sae_train", "sae_save", "identify"))
    return EndToEndResult(
        sae_steps=cfg.steps, sae_train_tokens=cfg.train_tokens, n_train_tokens=metrics["n_train_tokens"],
        n_heldout_tokens=metrics["n_heldout_tokens"],
        identify=IdentifySummary(top_n=icfg.top_n, alphas=list(icfg.alphas), n_prior=len(prior),
                                 n_general=len(general), n_recalled=found["n_recalled"], n_causal=found["n_causal"],
                                 n_ranked=len(result.ranking), ranking=result.ranking[:8]),
        steps=steps, fixed_s=round(fixed, 3), n_pool=len(b.pool),
        artifacts={"sae": str(out / "sae"), "features": str(out / "features")},
        reproduces=reproduces(b, out, result.ranking), score=score,
        e2e_s=round(fixed + score.wall_s, 3) if score else None,
        sae_metrics={k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
    )


def reproduces(b: Bench, out: Path, ranking: list[int]) -> Reproduces:
    """Does the bench's SAE and identification reproduce the given artifacts (same steps)?"""
    same = Reproduces(sae_sha256=sae_digest(out / "sae"))
    if b.sae is not None and b.features is not None:
        given = read_json(Path(b.features) / "features.json")
        same.given_sae_sha256 = sae_digest(Path(b.sae))
        same.given_ranking = given["ranking"][:8]
        same.identical_sae = same.given_sae_sha256 == same.sae_sha256
        same.identical_ranking = given["ranking"] == ranking
    return same


def break_even(fixed_s: float, igds_s: float, loss_s: float, n: int) -> BreakEven:
    """Pool size above which IGDS end to end (fixed + n x igds per example) costs less than
    Loss (n x loss per example): n* = fixed / (loss_pe - igds_pe). The SAE and the features
    are made once and reused across pools. No break-even (None) when IGDS is not cheaper per
    example."""
    igds_pe, loss_pe = igds_s / n, loss_s / n
    n_star = fixed_s / (loss_pe - igds_pe) if loss_pe > igds_pe else None
    return BreakEven(
        fixed_s=round(fixed_s, 3), igds_s_per_example=round(igds_pe, 6), loss_s_per_example=round(loss_pe, 6),
        # rounded before the ceiling, so float noise (1000.0000000001) does not add an example
        n_break_even=None if n_star is None else int(np.ceil(round(n_star, 6))),
        e2e_igds_s_at_n=round(fixed_s + igds_s, 3), loss_s_at_n=round(loss_s, 3), n=n,
        e2e_over_loss_at_n=round((fixed_s + igds_s) / loss_s, 3) if loss_s > 0 else None)


# --- 4. peak memory at n and factor x n -----------------------------------------------------

def _child(args: list[str], env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.child", *args], cwd=ROOT, env={**subprocess_env(), **(env or {})},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.child {' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(b: Bench, factor: int = 4) -> MemoryResult:
    """Peak RSS of a fresh process that scores n (and factor x n) pool examples with IGDS, of
    one that only loads the model (the baseline under the scoring increment), and of one
    that runs only the bare forward pass to layer L over the n examples (so the SAE's share
    of the increment shows). Peaks are VmHWM: see bench/child.py."""
    n = len(b.pool)
    folder = b.work / "memory"
    common = ["--params", str(b.params_path.resolve()), "--threads", str(torch.get_num_threads())]
    artifacts = ["--sae", str(Path(b.sae).resolve()), "--features", str(Path(b.features).resolve())]
    log.info("memory: baseline process (model only)")
    baseline = _child(["baseline", *common])
    for size in (n, factor * n):
        write_jsonl(folder / f"pool-{size}.jsonl", (r.to_dict() for r in resize_pool(b.pool, size)))
    forward = _child(["forward", *common, "--pool", str(folder / f"pool-{n}.jsonl"), *artifacts])
    scoring: dict[str, dict] = {}
    for size in tqdm((n, factor * n), desc="memory", leave=False):
        scoring[str(size)] = _child(["score", *common, "--pool", str(folder / f"pool-{size}.jsonl"),
                                     "--data", str(Path(b.data).resolve()), *artifacts])
        log.info("memory: n=%d peak RSS %.0f MB (scoring %.1f s)", size, mb(scoring[str(size)]["peak_rss_bytes"]),
                 scoring[str(size)]["wall_s"])
    base = baseline["peak_rss_bytes"]
    increment = {"forward": forward["peak_rss_bytes"] - base,
                 **{size: probe["peak_rss_bytes"] - base for size, probe in scoring.items()}}
    small, large = increment[str(n)], increment[str(factor * n)]
    return MemoryResult(
        n=n, factor=factor, baseline=baseline, forward=forward, scoring=scoring,
        ratio=round(scoring[str(factor * n)]["peak_rss_bytes"] / scoring[str(n)]["peak_rss_bytes"], 4),
        increment_bytes=increment, increment_ratio=round(large / small, 3) if small > 0 else None)


# --- 6. fine-tuning: memory and tokens/s of a training step ----------------------------------

# the probes: bench.child train arguments, and the environment each runs in
_LOW_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
FINETUNE_PROBES = {
    "model_loss": (["--loss", "model", "--checkpointing", "off"], {}),  # the loss before issue 15
    "response_loss": (["--loss", "response"], {}),  # what params.yaml runs
    "bare": (["--loss", "bare", "--checkpointing", "off"], {}),  # decoder forward + backward, no head, no optimizer
    "low_memory": (["--loss", "response", "--checkpointing", "on"], _LOW_MEMORY_ENV),
}


def finetune_steps(b: Bench, batch: int = 8, seq: int = 384, steps: int = 3) -> FinetuneResult:
    """Training steps at `batch` x `seq` tokens (examples filled to `seq` with the pool's own
    responses), each loss in a fresh process for its own peak: the model's own loss over
    [batch, seq, vocab] logits, igds.core.head_loss (the default), a bare forward+backward of the
    decoder (the ceiling), and the low-memory setting: gradient checkpointing with glibc's
    mmap threshold fixed (MALLOC_MMAP_THRESHOLD_), so freed activations leave the process."""
    pool_path = b.work / "finetune" / "pool.jsonl"
    write_jsonl(pool_path, (r.to_dict() for r in b.pool))
    common = ["--params", str(b.params_path.resolve()), "--threads", str(torch.get_num_threads()),
              "--pool", str(pool_path), "--batch", str(batch), "--seq", str(seq), "--steps", str(steps)]
    probes = {}
    for name, (extra, env) in tqdm(FINETUNE_PROBES.items(), desc="finetune", leave=False):
        probes[name] = _child(["train", *extra, *common], env)
        log.info("finetune: %s %.0f tokens/s, peak RSS %.0f MB", name, probes[name]["tokens_per_s"],
                 mb(probes[name]["peak_rss_bytes"]))
    default = "response_loss"
    return FinetuneResult(
        batch=batch, seq=seq, steps=steps, probes=probes, default_probe=default,
        tokens_per_s_ratio=round(probes[default]["tokens_per_s"] / probes["bare"]["tokens_per_s"], 4),
        peak_rss_bytes=probes[default]["peak_rss_bytes"])


# --- 5. DVC: no-op repro and the stale set --------------------------------------------------

def _dvc(work: Path, *args: str, log_to: Path | None = None) -> tuple[str, float]:
    with stopwatch() as t:
        proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True, env=subprocess_env())
    if log_to is not None:
        log_to.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {work}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout, t["wall_s"]


def dvc(work: Path, params: Path, noop_repeats: int = 3) -> DvcResult:
    """Full `dvc repro` of `params` in a project copy, then `dvc repro` with nothing changed
    (best of `noop_repeats`), then the stages `dvc status --json` calls stale after a change
    of select.ratios only, a ratio added (expected: the subsets, fine-tunes and evaluations at the new ratio, and
    the report)."""
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
    text = re.sub(r"(?m)^(\s+ratios:\s*)\[[^\]]*\]", rf"\g<1>[{', '.join(map(str, [*old, new]))}]", text, count=1)
    if yaml.safe_load(text)["select"]["ratios"] != [*old, new]:
        raise RuntimeError(f"could not set select.ratios in {copy / 'params.yaml'} (expects `ratios: [...]`)")
    (copy / "params.yaml").write_text(text)
    write_graph(copy / "params.yaml")  # the added ratio's runs
    status, status_changed_s = _dvc(copy, "status", "--json")
    stale = sorted(s.split(":")[-1] for s in json.loads(status or "{}"))
    edited = load_params(copy / "params.yaml")
    runs = [(p, s) for p in (edited.data.pools if edited.data is not None else ("mixed",)) for s in edited.finetune.seeds]
    expected = sorted({f"subset@{p}-{m}-{new}-s{s}" for p, s in runs for m in (*edited.select.methods, *edited.recipes)}
                      | {f"{stage}@{p}-{m}-{new}-s{s}" for p, s in runs for m in edited.finetuned_methods
                         for stage in ("finetune", "evaluate")} | {"report"})
    return DvcResult(
        params=str(params), full_repro_s=full_s, noop_repro_s=min(run["wall_s"] for run in noop), noop_runs=noop,
        status_s=status_s, clean_status=json.loads(status_clean or "{}"),
        ratios_change={"from": old, "to": [*old, new]}, status_after_change_s=status_changed_s,
        stale=stale, n_stale=len(stale), expected_stale=expected,
        unexpected_stale=sorted(set(stale) - set(expected)), missing_stale=sorted(set(expected) - set(stale)),
        upstream_stale=[s for s in stale if s.split("@")[0] in ("prepare", "sae", "identify", "score")],
    )
