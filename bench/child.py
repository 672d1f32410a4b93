"""One memory probe of bench.run's `memory` part, in a fresh process (a peak is a
high-water mark, so every measurement needs its own process). Prints one JSON line.

    python -m bench.child baseline --params params.yaml
    python -m bench.child score --params params.yaml --pool POOL.jsonl --data DATA --sae SAE --features FEATURES
    python -m bench.child forward --params params.yaml --pool POOL.jsonl --features FEATURES

`baseline` imports what `score` imports and loads the model, nothing more; `score` then
scores the pool with IGDS as the score stage does (its context from
pipelines.score.scoring_context, igds.scoring.score_pool in chunks of scoring.chunk_batches);
`forward` runs only the bare forward pass to layer L over the same batches (no SAE), so
the SAE's share of the scoring increment shows.

Peaks are VmHWM (this process's own high-water mark), not ru_maxrss: on Linux an exec'd
child's ru_maxrss starts at its parent's peak (exec keeps the old mm's high-water mark in
the process's rusage), so a child of the bench, which holds a model, would report the
bench's peak. VmHWM is reset after the model is loaded, so the peak while scoring is
measured on its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

# what IGDS scoring imports inside score(), imported in every mode: the baseline's RSS then
# holds them too, and the scoring increment is the scoring's own
import igds.pooling  # noqa: F401
import igds.resonance  # noqa: F401
import igds.sae  # noqa: F401
from bench.common import peak_rss_bytes, proc_status, reset_peak_rss
from igds.artifacts import read_json
from igds.config import load_params
from igds.models.loading import load_model
from igds.models.residual import run_to_layer
from igds.registry import build_selector
from igds.scoring import score_pool
from igds.tokens import iter_batches, tokenize_records
from pipelines.io import read_split
from pipelines.score import scoring_context

log = logging.getLogger("bench.child")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("baseline", "score", "forward"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--pool", type=Path)
    parser.add_argument("--data", type=Path, help="the prepared data folder (the score stage's --data)")
    parser.add_argument("--sae", type=Path)
    parser.add_argument("--features", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    out: dict = {"mode": args.mode, "rss_before_load_bytes": proc_status().get("VmRSS")}
    t0 = time.perf_counter()
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    out["load_s"] = round(time.perf_counter() - t0, 3)
    status = proc_status()
    out["rss_after_load_bytes"] = status.get("VmRSS")
    out["load_peak_rss_bytes"] = status.get("VmHWM")  # imports + model load
    if args.mode != "baseline":
        out["hwm_reset"] = reset_peak_rss()
    if args.mode == "forward":
        pool = read_split(args.pool)
        layer = read_json(args.features / "features.json")["layer"]
        scope = build_selector("igds", params.methods.get("igds")).params.scope
        tokenizer, model = loaded.tokenizer, loaded.model
        t0, c0 = time.perf_counter(), time.process_time()
        tok = tokenize_records(tokenizer, pool, params.scoring.max_len)
        with torch.inference_mode():
            for batch in iter_batches(tok, params.scoring.batch_size, tokenizer.pad_token_id, scope, model.device):
                run_to_layer(model, batch.input_ids, batch.attention_mask, layer)
        out["wall_s"] = round(time.perf_counter() - t0, 3)
        out["cpu_s"] = round(time.process_time() - c0, 3)
        out["n_pool"], out["n_tokens"] = len(pool), tok.n_tokens
    if args.mode == "score":
        pool = read_split(args.pool)
        ctx = scoring_context(params, "igds", args.data, {"sae": args.sae, "features": args.features},
                              loader=lambda: loaded)
        selector = build_selector("igds", params.methods.get("igds"))
        t0, c0 = time.perf_counter(), time.process_time()
        frame, info = score_pool(selector, pool, ctx, chunk_batches=params.scoring.chunk_batches)
        scores = frame["score"].to_numpy(dtype=float)
        out["wall_s"] = round(time.perf_counter() - t0, 3)
        out["cpu_s"] = round(time.process_time() - c0, 3)
        out["n_pool"] = len(pool)
        out["n_tokens"] = info.get("n_tokens")
        out["n_unscored"] = int(np.isnan(scores).sum())
    status = proc_status()
    out["rss_end_bytes"] = status.get("VmRSS")
    if out.get("hwm_reset"):  # the peak since the model was loaded: while scoring (or the forward pass)
        out["work_peak_rss_bytes"] = status.get("VmHWM")
    # the process's peak: imports, model load and the work (VmHWM; None off Linux)
    peaks = [x for x in (out["load_peak_rss_bytes"], out.get("work_peak_rss_bytes")) if x is not None]
    out["peak_rss_bytes"] = max(peaks) if peaks else None
    out["ru_maxrss_bytes"] = peak_rss_bytes()  # for reference: includes the parent's peak (see above)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
