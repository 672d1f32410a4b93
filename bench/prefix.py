"""python -m bench.prefix: what running the batch's common token prefix once saves (igds.core.prefix).

At the default's own shapes, in one process, interleaved (the order alternates each repeat),
best of `--repeats`:
- fine-tuning steps (LoRA as params.yaml's `finetune:` says: forward, response-position loss,
  backward, clipping, AdamW) on the training batches of a `--n-train`-example selection of the
  first pool, with `finetune.share_prefix` off and on; the ratio of tokens/s;
- the evaluate stage's log-likelihood requests (the eval split's reference answers and the
  probe split's, in the chat format lm-eval builds) through `igds.core.lm.ContinuationLM` with and
  without the shared prefix, and through lm-eval's own HFLM; the ratio of requests/s.
Writes results/bench-prefix.json and .md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import platform
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, interleaved
from igds.core.artifacts import atomic_file, write_json
from igds.params import load_params
from igds.core.models.loading import load_model
from igds.core.tokens import tokenize_records
from pipelines.io import read_pool, read_split

log = logging.getLogger("bench.prefix")


def training_steps(loaded, cfg, records):
    """The suite's fine-tuning steps on `records`' batches (one epoch, as finetune `cfg` says: the
    response-position loss, backward, clipping, AdamW) on a copy of the model: (a function that
    runs them once, with or without the shared prefix, and returns its wall seconds; the batches
    with their shared prefix lengths; their tokens)."""
    tok = tokenize_records(loaded.tokenizer, records, cfg.max_len)
    return tokenized_training_steps(loaded.model, loaded.tokenizer.pad_token_id, cfg, tok)


def tokenized_training_steps(model, pad_id: int, cfg, tok, device="cpu"):
    """training_steps on token ids already made (bench.gpu's synthetic ones), on `device`."""
    import igds.core.finetune as ft  # noqa: PLC0415
    from igds.core.head_loss import ResponseLoss  # noqa: PLC0415

    steps = ft.batch_schedule([len(x) for x in tok.input_ids], cfg.batch_size, 1, np.random.default_rng(0))
    model, trained = ft.trainable(copy.deepcopy(model), cfg, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr)
    engine = ResponseLoss(model, cfg.loss_chunk)
    batches = [(ft.step_batch(tok, idx, pad_id, device), ft.shared_prefix(tok, idx)) for idx in steps]

    def run(share: bool) -> float:
        t0 = time.perf_counter()
        for b, prefix in batches:
            loss = engine(b["input_ids"], b["attention_mask"], b["labels"], max(ft.response_items(b), 1),
                          prefix if share else 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
            optimizer.step()
            torch.clear_autocast_cache()  # as finetune: under autocast the next step casts the updated weights
        return time.perf_counter() - t0

    return run, batches, sum(int(b["attention_mask"].sum()) for b, _ in batches)


def loglik_requests(tokenizer, records) -> list:
    """The evaluate stage's log-likelihood requests (prompt -> reference answer, in the chat format
    lm-eval builds), as lm-eval's `_loglikelihood_tokens` takes them."""
    from igds.core.tokens import chat_parts  # noqa: PLC0415

    requests = []
    for r in records:
        prompt, _ = chat_parts(tokenizer, r)
        requests.append(((prompt, r.output), tokenizer(prompt, add_special_tokens=False).input_ids,
                         tokenizer(r.output, add_special_tokens=False).input_ids))
    return requests


def train_rates(loaded, params, records, repeats: int) -> dict:
    """tokens/s of fine-tuning steps on `records`' batches with share_prefix off and on."""
    run, batches, n_tokens = training_steps(loaded, params.finetune, records)
    run(False)  # warm-up
    walls = interleaved(run, (False, True), repeats)
    best = {k: min(v) for k, v in walls.items()}
    return {"n_examples": len(records), "n_steps": len(batches), "n_tokens": n_tokens,
            "prefix_tokens_mean": float(np.mean([p for _, p in batches])),
            "tokens_per_example": n_tokens / len(records),
            "plain_tokens_per_s": n_tokens / best[False], "shared_tokens_per_s": n_tokens / best[True],
            "speedup": best[False] / best[True], "walls_s": {"plain": walls[False], "shared": walls[True]}}


def loglik_rates(loaded, records, batch_size: int, max_len: int, repeats: int) -> dict:
    """requests/s of log-likelihood requests (prompt -> reference) through lm-eval's HFLM and
    ContinuationLM without and with the shared prefix; and the largest difference in value."""
    from lm_eval.models.huggingface import HFLM  # noqa: PLC0415

    import igds.core.lm  # noqa: PLC0415

    tokenizer = loaded.tokenizer
    requests = loglik_requests(tokenizer, records)
    kwargs = dict(pretrained=loaded.model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_len)
    adapters = {"hflm": HFLM(**kwargs), "continuation": igds.core.lm.ContinuationLM(**kwargs),
                "continuation_shared_prefix": igds.core.lm.ContinuationLM(**kwargs)}
    real_prefix = igds.core.lm.common_prefix_len

    values = {}

    def run(name: str) -> float:
        igds.core.lm.common_prefix_len = real_prefix if name == "continuation_shared_prefix" else (lambda rows: 0)
        try:
            t0 = time.perf_counter()
            out = adapters[name]._loglikelihood_tokens(requests, disable_tqdm=True)
            wall = time.perf_counter() - t0
        finally:
            igds.core.lm.common_prefix_len = real_prefix
        values[name] = [v for v, _ in out]
        return wall

    walls = interleaved(run, list(adapters), repeats)
    best = {n: min(w) for n, w in walls.items()}
    ref = np.array(values["hflm"])
    return {"n_requests": len(requests), "n_tokens": sum(len(c) + len(t) for _, c, t in requests),
            "requests_per_s": {n: len(requests) / w for n, w in best.items()},
            "speedup_vs_hflm": {n: best["hflm"] / w for n, w in best.items()},
            "max_abs_diff_vs_hflm": {n: float(np.abs(np.array(v) - ref).max()) for n, v in values.items()},
            "walls_s": walls}


def markdown(result: dict) -> str:
    t, e = result["train"], result["loglik"]
    lines = [f"# Shared-prefix forward ({result['date']}, {result['machine']})", "",
             f"Fine-tuning steps on the {t['n_examples']} examples of a selection ({t['n_steps']} steps of "
             f"{result['batch_size']}, {t['tokens_per_example']:.1f} tokens per example, of them a shared prefix of "
             f"{t['prefix_tokens_mean']:.1f}), best of {result['repeats']}:", "",
             "| setting | tokens/s | x plain |", "|---|---:|---:|",
             f"| plain (share_prefix: false) | {t['plain_tokens_per_s']:.1f} | 1.00 |",
             f"| shared prefix (share_prefix: true) | {t['shared_tokens_per_s']:.1f} | {t['speedup']:.2f} |", "",
             f"Log-likelihood requests of the evaluate stage ({e['n_requests']} requests, {e['n_tokens']} tokens), "
             f"best of {result['repeats']}:", "",
             "| adapter | requests/s | x HFLM | max abs diff vs HFLM (nats) |", "|---|---:|---:|---:|"]
    for name in e["requests_per_s"]:
        lines.append(f"| {name} | {e['requests_per_s'][name]:.2f} | {e['speedup_vs_hflm'][name]:.2f} | "
                     f"{e['max_abs_diff_vs_hflm'][name]:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="the prepare stage's output")
    parser.add_argument("--n-train", type=int, default=48, help="examples of the pool to train on (the default's selection)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-prefix.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    pool = read_pool(args.data, params.data.pools[0])[:args.n_train]
    evaluation = read_split(args.data / "eval.jsonl") + read_split(args.data / "probe.jsonl")
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    with torch.inference_mode():
        loglik = loglik_rates(loaded, evaluation, params.evaluate.batch_size, params.evaluate.max_len, args.repeats)
    train = train_rates(loaded, dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, share_prefix=True)),
                        pool, args.repeats)
    result = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "batch_size": params.finetune.batch_size, "repeats": args.repeats, "pool": params.data.pools[0],
              "train": train, "loglik": loglik}
    write_json(args.out, result)
    with atomic_file(args.out.with_suffix(".md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
