"""sae stage: sae/ (sae-lens format) and sae/metrics.json; or a pretrained SAE by sae-lens id.

Its text: data/sae.jsonl (data.splits.sae) as plain text, when params give one, with its quality
measured on a held-out tenth of that text and again on the pools' chat-format text (`on_pools_*`,
where IGDS applies it); else general and every pool in the chat template.

Training writes a resume checkpoint to .resume/sae/ every sae.checkpoint_every steps (DVC
deletes a stage's outputs before it runs, so the checkpoint lives outside sae/); a killed
run restarted by `dvc repro` recaches the activations (deterministic) and continues from it.
The checkpoint is removed once sae/ is complete."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from igds.core.artifacts import atomic_dir, write_json
from igds.core.config import ConfigError
from igds.params import Params
from igds.core.data import Record
from igds.core.models.loading import load_model
from igds.core.models.residual import check_layer, layer_module_path
from igds.core.pooling import collect_token_activations
from igds.core.sae import ce_loss_recovered, check_sae_layer, load_pretrained_sae, sae_metrics, save_sae, train_sae
from igds.core.tokens import iter_batches, tokenize_plain, tokenize_records
from pipelines.common import main
from pipelines.io import peak_rss_bytes, read_pools, read_split, timed

log = logging.getLogger("sae")


def split_records(records: list[Record], seed: int, ce_examples: int) -> tuple[list[Record], list[Record]]:
    """(held-out, train): a seeded shuffle of the general records and every pool's, a tenth (at least
    the CE examples) held out for the SAE's metrics."""
    rng = np.random.default_rng([seed, 17])
    records = [records[i] for i in rng.permutation(len(records))]
    n_heldout = max(ce_examples, len(records) // 10)
    return records[:n_heldout], records[n_heldout:]


def cache_activations(model, tokenizer, train: list[Record], heldout: list[Record], cfg, seed: int,
                      plain: bool = False):
    """Residual activations after sae.layer: (train [train_tokens, d], held-out [heldout_tokens, d]),
    a seeded sample when the text gives more; a ConfigError when it gives fewer than asked.
    `plain`: the records as plain text (tokenize_plain), else in the chat template."""
    pad = tokenizer.pad_token_id
    tokenize = tokenize_plain if plain else tokenize_records
    tok_train = tokenize(tokenizer, train, cfg.max_len)
    tok_heldout = tokenize(tokenizer, heldout, cfg.max_len)
    acts_train = collect_token_activations(model, tok_train, cfg.layer, cfg.batch_size, pad, desc="caching train")
    acts_heldout = collect_token_activations(model, tok_heldout, cfg.layer, cfg.batch_size, pad,
                                             max_tokens=cfg.heldout_tokens, desc="caching held-out")
    wanted = [("heldout_tokens", cfg.heldout_tokens, acts_heldout.shape[0], "a tenth (at least sae.ce_examples)",
               len(heldout))]
    if not cfg.pretrained:  # a pretrained SAE trains on nothing here
        wanted.insert(0, ("train_tokens", cfg.train_tokens, acts_train.shape[0], "9/10", len(train)))
    for key, asked, got, part, n_records in wanted:  # a requested size is met or refused, never cut silently
        if asked is not None and got < asked:
            text, more = (("data/sae.jsonl", "data.splits.sae.n") if plain
                          else ("data/general.jsonl and every pool", "data.splits.general.n, or a data.splits.sae"))
            raise ConfigError(f"params.yaml: sae.{key} = {asked} token activations asked for, but the SAE's text "
                              f"({part} of {text}: {n_records} records at sae.max_len = {cfg.max_len}) gives {got}; "
                              f"set sae.{key} to at most {got}, or give it more text ({more})")
    if cfg.train_tokens is not None and acts_train.shape[0] > cfg.train_tokens:
        g = torch.Generator().manual_seed(seed)
        acts_train = acts_train[torch.randperm(acts_train.shape[0], generator=g)[:cfg.train_tokens]]
    return acts_train, acts_heldout


def make_sae(params: Params, loaded, records: list[Record], resume: Path | None, plain: bool = False,
             pools: list[Record] | None = None) -> tuple[object, dict]:
    """The SAE of params.sae (trained on `records`' activations, as plain text when `plain`, or the
    pretrained one) and its metrics on held-out tokens of that text, and (`pools`) on the pools'
    chat-format text as `on_pools_*`: what the sae stage writes."""
    cfg, model, tokenizer = params.sae, loaded.model, loaded.tokenizer
    try:
        check_layer(model, cfg.layer)
    except ValueError as e:
        raise ConfigError(f"params.yaml: sae.layer = {cfg.layer}: {e}") from None
    heldout, train = split_records(records, params.seed, cfg.ce_examples)
    info: dict = {"layer": cfg.layer, "hook_name": layer_module_path(model, cfg.layer), "model": params.model.name}
    sae = None
    if cfg.pretrained:  # before any work: its own metadata must name sae.layer (then it is renamed to the HF hook)
        with timed(info, "train_wall_s"):  # a pretrained SAE: its loading time
            sae = load_pretrained_sae(cfg.release, cfg.sae_id, params.model.device)
        info["pretrained_hook_name"] = sae.cfg.metadata.hook_name
        check_sae_layer(sae, cfg.layer, f"{cfg.release}/{cfg.sae_id}")
    with timed(info, "collect_wall_s"):
        acts_train, acts_heldout = cache_activations(model, tokenizer, train, heldout, cfg, params.seed, plain)
    log.info("cached %d train and %d held-out token activations in %.1f s", acts_train.shape[0],
             acts_heldout.shape[0], info["collect_wall_s"])
    if sae is None:
        with timed(info, "train_wall_s"):
            sae = train_sae(acts_train, cfg, seed=params.seed, device=params.model.device, state_dir=resume)
    if sae.cfg.d_in != model.config.hidden_size:
        raise ConfigError(f"params.yaml: sae d_in = {sae.cfg.d_in} does not match the model's d_model = "
                          f"{model.config.hidden_size}; pick an SAE for this model and layer")
    sae.cfg.metadata.hook_name = info["hook_name"]
    sae.cfg.metadata.model_name = params.model.name
    metrics = quality(model, tokenizer, sae, acts_heldout, heldout, cfg, plain)
    if pools:  # the text IGDS applies the SAE to: the pools in the chat template
        tok = tokenize_records(tokenizer, pools, cfg.max_len)
        acts = collect_token_activations(model, tok, cfg.layer, cfg.batch_size, tokenizer.pad_token_id,
                                         desc="caching pools")
        metrics.update({f"on_pools_{k}": v for k, v in quality(model, tokenizer, sae, acts, pools, cfg, False).items()
                        if k in ("explained_variance", "dead_share", "l0", "n_tokens", "ce_loss_recovered")})
    metrics.update(info, n_train_tokens=int(acts_train.shape[0]), n_heldout_tokens=int(acts_heldout.shape[0]),
                   pretrained=cfg.pretrained)
    return sae, metrics


def quality(model, tokenizer, sae, acts: torch.Tensor, records: list[Record], cfg, plain: bool) -> dict:
    """The SAE's reconstruction, sparsity and dead share on `acts`, and its CE loss recovered on
    the first sae.ce_examples of `records` (plain text or the chat template, as `acts` were)."""
    metrics = sae_metrics(sae, acts.to(sae.W_enc.device))
    tokenize = tokenize_plain if plain else tokenize_records
    batch = next(iter_batches(tokenize(tokenizer, records[:cfg.ce_examples], cfg.max_len),
                              cfg.ce_examples, tokenizer.pad_token_id, "all", model.device))
    metrics.update(ce_loss_recovered(model, sae, batch.input_ids, batch.attention_mask, cfg.layer, cfg.batch_size))
    return metrics


def run(params: Params, args: argparse.Namespace) -> None:
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    chat = read_split(args.data / "general.jsonl") + read_pools(args.data, params)
    own = args.data / "sae.jsonl"
    own = read_split(own) if own.is_file() and own.stat().st_size > 0 else []
    if own:  # the SAE's own text, plain; measured again on the pools' chat text
        sae, metrics = make_sae(params, loaded, own, args.resume, plain=True, pools=read_pools(args.data, params))
    else:
        sae, metrics = make_sae(params, loaded, chat, args.resume)
    metrics["text"] = "data/sae.jsonl (plain)" if own else "data/general.jsonl + pools (chat template)"
    metrics["peak_rss_bytes"] = peak_rss_bytes()
    metrics = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}
    with atomic_dir(args.out) as tmp:  # weights and config only: the metrics (with wall times) are
        save_sae(sae, tmp)               # not part of the cached output, so a rerun is byte-identical
    write_json(args.metrics, metrics)
    shutil.rmtree(args.resume, ignore_errors=True)
    log.info("SAE: explained variance %.3f, L0 %.1f, dead %.1f%%, CE loss recovered %.3f, trained in %.0f s",
             metrics["explained_variance"], metrics["l0"], 100 * metrics["dead_share"],
             metrics["ce_loss_recovered"], metrics["train_wall_s"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("sae"))
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics/sae.json"))
    parser.add_argument("--resume", type=Path, default=Path(".resume/sae"), help="resume checkpoint directory")


if __name__ == "__main__":
    main("sae", run, _args)
