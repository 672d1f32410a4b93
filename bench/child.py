"""One memory probe of bench.run's `memory` part, in a fresh process (a peak is a
high-water mark, so every measurement needs its own process). Prints one JSON line.

    python -m bench.child baseline --params params.yaml
    python -m bench.child score --params params.yaml --pool POOL.jsonl --data DATA --sae SAE --features FEATURES
    python -m bench.child forward --params params.yaml --pool POOL.jsonl --features FEATURES
    python -m bench.child train --loss response --params params.yaml --pool POOL.jsonl [--batch 8 --seq 384 --steps 4]

`baseline` imports what `score` imports and loads the model, nothing more; `score` then
scores the pool with IGDS as the score stage does (its context from
pipelines.score.scoring_context, igds.core.scoring.score_pool in chunks of scoring.chunk_batches);
`forward` runs only the bare forward pass to layer L over the same batches (no SAE), so
the SAE's share of the scoring increment shows. `train` runs fine-tuning steps (LoRA as
params.yaml's `finetune:` says, AdamW, gradient clipping) on batches of exactly
`--batch` x `--seq` tokens with the loss `--loss`: `response` (igds.core.head_loss, what
igds.core.finetune uses), `model` (the model's own loss over [batch, seq, vocab] logits: the
loss before issue 15) or `bare` (the decoder's forward and backward with a trivial loss, no
LM head, no optimizer: what a training step cannot be faster than).

Peaks are VmHWM (this process's own high-water mark), not ru_maxrss: on Linux an exec'd
child's ru_maxrss starts at its parent's peak (exec keeps the old mm's high-water mark in
the process's rusage), so a child of the bench, which holds a model, would report the
bench's peak. VmHWM is reset after the model is loaded, so the peak while scoring is
measured on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

# what IGDS scoring imports inside score(), imported in every mode: the baseline's RSS then
# holds them too, and the scoring increment is the scoring's own
import igds.core.pooling  # noqa: F401
import igds.method.resonance  # noqa: F401
import igds.core.sae  # noqa: F401
from bench.common import peak_rss_bytes, proc_status, reset_peak_rss
from igds.core.artifacts import read_json
from igds.params import load_params
from igds.core.models.loading import load_model
from igds.core.models.residual import run_to_layer
from igds.core.registry import build_selector
from igds.core.scoring import score_pool
from igds.core.tokens import iter_batches, tokenize_records
from pipelines.io import read_split
from pipelines.score import scoring_context

log = logging.getLogger("bench.child")


TRAIN_LOSSES = ("response", "model", "bare")


def train_batches(tokenizer, pool, batch: int, seq: int, steps: int, max_len: int):
    """`steps` + 1 batches of `batch` examples of exactly `seq` tokens each, from the pool's
    records: an example's response is the responses of consecutive pool records joined until
    it fills `seq` tokens (a long example: the memory worst case)."""
    from igds.core.data import Record  # noqa: PLC0415
    from igds.core.finetune import step_batch  # noqa: PLC0415

    records, i = [], 0
    for _ in range(batch * (steps + 1)):
        first, parts = pool[i % len(pool)], []
        while len(tokenizer("\n\n".join(parts)).input_ids) < seq:
            parts.append(pool[i % len(pool)].output)
            i += 1
        records.append(Record(id=f"bench-{len(records)}", instruction=first.instruction, input=first.input,
                              output="\n\n".join(parts), task=first.task, source="bench"))
    tok = tokenize_records(tokenizer, records, seq)
    if min(len(x) for x in tok.input_ids) != seq or seq > max_len:
        raise ValueError(f"could not build examples of {seq} tokens (finetune.max_len {max_len})")
    return [step_batch(tok, range(j, j + batch), tokenizer.pad_token_id, "cpu") for j in range(0, len(tok), batch)]


def train_steps(loaded, params, pool, loss_kind: str, batch: int, seq: int, steps: int) -> dict:
    """Fine-tuning steps with `loss_kind` on fixed batches: wall time of the timed steps
    (the first step is a warm-up) and the tokens per second they reach."""
    from igds.core.finetune import response_items, trainable  # noqa: PLC0415
    from igds.core.head_loss import ResponseLoss  # noqa: PLC0415

    cfg = params.finetune
    batches = train_batches(loaded.tokenizer, pool, batch, seq, steps, cfg.max_len)
    model, trained = trainable(loaded.model, cfg, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr)
    head_loss = ResponseLoss(model, cfg.loss_chunk)
    decoder = model.get_base_model().base_model
    walls, losses = [], []
    for b in batches:
        t0 = time.perf_counter()
        n_items = response_items(b)
        if loss_kind == "bare":
            hidden = decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             use_cache=False).last_hidden_state
            loss = hidden.float().square().mean()
            loss.backward()
        else:
            if loss_kind == "response":
                loss = head_loss(b["input_ids"], b["attention_mask"], b["labels"], n_items)
            else:
                loss = model(**b, use_cache=False, num_items_in_batch=n_items).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
            optimizer.step()
        for q in trained:
            q.grad = None
        walls.append(time.perf_counter() - t0)
        losses.append(round(float(loss.detach()), 6))
    timed = walls[1:]
    n_tokens = batch * seq * len(timed)
    return {"loss_kind": loss_kind, "gradient_checkpointing": cfg.gradient_checkpointing, "batch": batch, "seq": seq, "steps": len(timed),
            "response_share": round(sum(map(response_items, batches)) / (len(batches) * batch * (seq - 1)), 4),
            "step_wall_s": [round(w, 3) for w in walls], "wall_s": round(sum(timed), 3),
            "tokens_per_s": round(n_tokens / sum(timed), 1), "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("baseline", "score", "forward", "train"))
    parser.add_argument("--loss", choices=TRAIN_LOSSES, default="response", help="train: the loss (see above)")
    parser.add_argument("--batch", type=int, default=8, help="train: examples per step")
    parser.add_argument("--seq", type=int, default=384, help="train: tokens per example")
    parser.add_argument("--steps", type=int, default=4, help="train: timed steps (after one untimed warm-up step)")
    parser.add_argument("--checkpointing", choices=("params", "on", "off"), default="params",
                        help="train: gradient checkpointing as params.yaml says, or forced on/off")
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
    out: dict = {"mode": args.mode, "rss_before_load_bytes": proc_status().get("VmRSS"),
                 "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
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
    if args.mode == "train":
        if args.checkpointing != "params":
            params = dataclasses.replace(params, finetune=dataclasses.replace(
                params.finetune, gradient_checkpointing=args.checkpointing == "on"))
        out.update(train_steps(loaded, params, read_split(args.pool), args.loss, args.batch, args.seq, args.steps))
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
