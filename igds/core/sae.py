"""The SAE on the residual stream: train a TopK SAE with sae-lens on cached activations,
measure it (explained variance, L0, dead share, CE loss recovered), save and load it.

Training sees mean-centred, norm-scaled activations x' = (x - mu) * s with E||x'||^2 =
d_in; the returned SAE has that affine map folded into its weights, so it encodes and
reconstructs *raw* residual activations (feature activations stay on the trained scale).
Dense feature activations of raw activations [n, d_in] are `sae.encode(acts)` [n, d_sae].
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from sae_lens import (
    SAE,
    JumpReLUSAE,
    SAETrainer,
    StandardSAE,
    TopKSAE,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.topk_sae import TopK
from torch import nn
from tqdm.auto import tqdm

from igds.core.config import ConfigError, SaeConfig
from igds.core.models.residual import add_to_residual

log = logging.getLogger(__name__)


@torch.no_grad()
def normalisation(acts: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean mu [d_in] and scale s such that x' = (x - mu) * s has E||x'||^2 = d_in."""
    mu = acts.mean(0, dtype=torch.float64)
    sq_norm = sum(
        (chunk.double() - mu).pow(2).sum().item() for chunk in acts.split(16384)
    ) / acts.shape[0]
    return mu.float(), math.sqrt(acts.shape[1] / sq_norm)


@torch.no_grad()
def fold_normalisation(sae: SAE, mu: torch.Tensor, scale: float) -> None:
    """Make `sae`, trained on (x - mu) * scale, take and return raw x (in place).

    With apply_b_dec_to_input: W_enc <- scale W_enc, b_dec <- mu + b_dec / scale,
    W_dec <- W_dec / scale, b_enc unchanged, so encode(x) equals the trained encode of
    (x - mu) * scale and decode gives (W_dec f + b_dec) / scale + mu. This is sae-lens's
    whitening fold with the matrix scale * I; for a TopK SAE that rescales its acts by the
    decoder norm it first folds the norms in, so the top-k choice is unchanged.
    """
    if not sae.cfg.apply_b_dec_to_input:
        raise ValueError("fold_normalisation needs an SAE with apply_b_dec_to_input=True")
    eye = torch.eye(sae.cfg.d_in, dtype=torch.float32)
    sae.fold_activation_whitening(mean=mu.float(), whitening_matrix=eye * scale, unwhitening_matrix=eye / scale)


def _batches(
    acts: torch.Tensor, mu: torch.Tensor, scale: float, batch_tokens: int, generator: torch.Generator,
    start_step: int = 0,
) -> Iterator[torch.Tensor]:
    """sae-lens DataProvider: shuffled [batch_tokens, d_in] normalised batches, epoch after epoch.
    `start_step` skips that many batches exactly (a resumed run sees the batches it would have)."""
    n = acts.shape[0]
    per_epoch = n // batch_tokens
    skip_epochs, skip = divmod(start_step, per_epoch)
    for _ in range(skip_epochs):
        torch.randperm(n, generator=generator)  # advance the generator past finished epochs
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(skip * batch_tokens, n - batch_tokens + 1, batch_tokens):
            yield (acts[order[start : start + batch_tokens]] - mu) * scale
        skip = 0


STATE_FILE = "sae-train-state.pt"


class _CheckpointingTrainer(SAETrainer):
    """SAETrainer whose checkpoints are one atomic resume file of ours (weights, optimizer,
    schedule, dead-feature statistics), not sae-lens's checkpoint folders."""

    state_path: Path
    run_key: str

    def save_checkpoint(self, checkpoint_name: str, base_path: Path | None = None) -> None:  # noqa: ARG002
        from igds.core.artifacts import atomic_dir, atomic_file  # noqa: PLC0415

        with atomic_dir(self.state_path.with_suffix(".trainer")) as tmp:
            self.save_trainer_state(tmp)
        with atomic_file(self.state_path, "wb") as f:
            torch.save({"fingerprint": self.run_key, "step": self.n_training_steps + 1,
                        "sae": {k: v.detach().clone() for k, v in self.sae.state_dict().items()}}, f)
        log.info("SAE resume checkpoint at step %d", self.n_training_steps + 1)


def train_fingerprint(acts: torch.Tensor, cfg: SaeConfig, seed: int) -> str:
    """What a resume checkpoint must match: config, seed and the training activations."""
    import hashlib  # noqa: PLC0415

    h = hashlib.sha256(repr((sorted(vars(cfg).items()), seed, tuple(acts.shape))).encode())
    h.update(acts.float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _resume_state(state_path: Path | None, run_key: str, device: str) -> dict | None:
    """The resume checkpoint of this run (same fingerprint, trainer state beside it), else None."""
    if state_path is None or not state_path.is_file():
        return None
    state = torch.load(state_path, map_location=device, weights_only=False)
    if state["fingerprint"] == run_key and state_path.with_suffix(".trainer").is_dir():
        return state
    log.info("ignoring %s: it belongs to another run (fingerprint differs)", state_path)
    return None


def _checkpoint_every(trainer: _CheckpointingTrainer, state_path: Path, run_key: str, cfg: SaeConfig,
                      start: int) -> None:
    """Checkpoint after every checkpoint_every steps (sae-lens checks `samples > threshold`
    after counting the step's samples: a threshold just below step s's count fires at s)."""
    trainer.state_path, trainer.run_key = state_path, run_key
    trainer.checkpoint_thresholds = [s * cfg.batch_tokens - 1 for s in range(cfg.checkpoint_every, cfg.steps,
                                                                              cfg.checkpoint_every) if s > start]


def train_sae(acts: torch.Tensor, cfg: SaeConfig, seed: int, device: str = "cpu",
              state_dir: Path | None = None) -> TopKSAE:
    """Train a TopK SAE (d_sae = width * d_in, k active) on raw activations [n, d_in].

    Returns an inference TopKSAE on `device` that works on raw activations. With
    `state_dir`, a resume checkpoint is written there every `cfg.checkpoint_every` steps;
    a run restarted on the same activations, config and seed continues from it and ends
    with exactly the weights of an uninterrupted run.
    """
    n, d_in = acts.shape
    if n < cfg.batch_tokens:
        raise ValueError(f"{n} activations are fewer than one training batch of {cfg.batch_tokens}")
    acts = acts.float()
    mu, scale = normalisation(acts)
    log.info("training a TopK SAE: d_in %d, d_sae %d, k %d, %d steps of %d tokens on %d cached tokens",
             d_in, cfg.width * d_in, cfg.k, cfg.steps, cfg.batch_tokens, n)
    # normalize_activations="none": the data provider already normalises, so the
    # trainer's ActivationScaler stays the identity and estimates no second scale.
    sae_cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=cfg.width * d_in, k=cfg.k, device="cpu",
                                    apply_b_dec_to_input=True, normalize_activations="none")
    with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG alone
        torch.manual_seed(seed)
        training_sae = TopKTrainingSAE(sae_cfg)
        inference_sae = TopKSAE.from_dict(sae_cfg.get_inference_sae_cfg_dict())
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    run_key = train_fingerprint(acts, cfg, seed) if state_path is not None else ""
    state = _resume_state(state_path, run_key, device)
    start = state["step"] if state is not None else 0
    trainer = _CheckpointingTrainer(
        cfg=SAETrainerConfig(
            total_training_samples=cfg.steps * cfg.batch_tokens,
            train_batch_size_samples=cfg.batch_tokens,
            lr=cfg.lr,
            lr_end=cfg.lr / 10,  # unused by the constant schedule, but the trainer requires it
            device=device,
            logger=LoggingConfig(log_to_wandb=False),
            n_checkpoints=0,  # our thresholds below, our checkpoint file (_CheckpointingTrainer)
            save_final_checkpoint=False,
        ),
        sae=training_sae,
        data_provider=_batches(acts, mu, scale, cfg.batch_tokens, torch.Generator().manual_seed(seed), start),
    )
    if state_path is not None:
        _checkpoint_every(trainer, state_path, run_key, cfg, start)
    if state is not None:
        training_sae.load_state_dict(state["sae"])
        trainer.load_trainer_state(state_path.with_suffix(".trainer"))
        trainer.n_training_steps = start  # saved mid-step, before sae-lens counted the step
        log.info("resuming SAE training from step %d of %d (%s)", start, cfg.steps, state_path)
    trainer.fit()
    if trainer.activation_scaler.scaling_factor is not None or trainer.activation_scaler.whitening is not None:
        raise AssertionError("sae-lens rescaled the already normalised activations a second time")

    # sae-lens's own training -> inference conversion (folds the decoder norms), then ours
    state = {name: t.detach().clone() for name, t in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    inference_sae.load_state_dict(state)
    fold_normalisation(inference_sae, mu, scale)
    return inference_sae.to(device).eval()


@torch.inference_mode()
def sae_metrics(sae: SAE, acts: torch.Tensor, batch_tokens: int = 4096) -> dict:
    """Reconstruction and sparsity of `sae` on held-out raw activations [n, d_in]."""
    n, d_in = acts.shape
    mean = acts.mean(0, dtype=torch.float64).to(sae.device)
    sq_error = total_var = l0_sum = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.device)
    for batch in tqdm(acts.split(batch_tokens), desc="SAE metrics", leave=False):
        x = batch.to(sae.device, sae.dtype)
        f = sae.encode(x)  # [batch, d_sae]
        x_hat = sae.decode(f)
        active = f != 0
        sq_error += (x - x_hat).double().pow(2).sum().item()
        total_var += (x.double() - mean).pow(2).sum().item()
        l0_sum += active.sum().item()
        fired |= active.any(0)
    return {
        "l0": l0_sum / n,
        "explained_variance": 1.0 - sq_error / total_var,
        "dead_share": 1.0 - fired.float().mean().item(),
        "n_tokens": n,
        "d_sae": sae.cfg.d_sae,
        "d_in": d_in,
    }


def _token_ce(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token CE over targets whose position and predecessor are both real tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    valid = (attention_mask[:, :-1] * attention_mask[:, 1:]).bool()  # [batch, seq-1]
    ce = F.cross_entropy(logits[:, :-1][valid].float(), input_ids[:, 1:][valid], reduction="sum")
    return ce.item(), int(valid.sum())


@torch.inference_mode()
def ce_loss_recovered(
    model: nn.Module,
    sae: SAE,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    batch_size: int,
    keep_first_token: bool = True,
) -> dict:
    """Mean next-token CE on the non-padding tokens: clean, with layer `layer`'s output
    replaced by the SAE reconstruction on every real token, and with it zeroed;
    ce_loss_recovered = (ce_zero - ce_sae) / (ce_zero - ce_clean) (nan if zeroing changes nothing).

    keep_first_token leaves each row's first real token alone in both interventions: it is
    the attention sink (in SmolLM2 its residual norm is ~8x the median), excluded from the SAE's training
    tokens, and its out-of-distribution reconstruction would dominate the SAE's CE cost.
    """
    device = next(model.parameters()).device
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n_targets = 0
    starts = range(0, input_ids.shape[0], batch_size)
    for start in tqdm(starts, desc="CE loss recovered", leave=False):
        ids = input_ids[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        replaced = mask.bool().clone()  # [batch, seq]
        if keep_first_token:
            replaced[torch.arange(len(mask), device=device), mask.argmax(1)] = False
        replaced = replaced[..., None]

        def reconstruction_delta(hidden: torch.Tensor) -> torch.Tensor:
            return (sae.decode(sae.encode(hidden)).to(hidden.dtype) - hidden) * replaced

        def zero_delta(hidden: torch.Tensor) -> torch.Tensor:
            return -hidden * replaced

        ce, count = _token_ce(model, ids, mask)
        sums["clean"] += ce
        with add_to_residual(model, layer, reconstruction_delta):
            sums["sae"] += _token_ce(model, ids, mask)[0]
        with add_to_residual(model, layer, zero_delta):
            sums["zero"] += _token_ce(model, ids, mask)[0]
        n_targets += count
    if n_targets == 0:
        raise ValueError("no next-token targets: every row has fewer than two real tokens")
    ce_clean, ce_sae, ce_zero = (sums[k] / n_targets for k in ("clean", "sae", "zero"))
    return {
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_zero": ce_zero,
        "ce_loss_recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else math.nan,
    }


def encode_columns(sae: SAE, x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`sae.encode(x)[:, cols]` [n, len(cols)], without encoding every token at full width.

    For ReLU, JumpReLU and TopK SAEs a feature whose pre-activation is <= 0 has activation 0
    (ReLU, or not in the top k, or below a non-negative threshold). So only the chosen
    columns' pre-activations are computed for every token (n x k), and the full encode runs
    only on the tokens where one of them is positive: the same numbers, and on SmolLM2 with
    the default SAE ~3x less encode time. Other architectures (gated, AbsTopK, ...) take the
    full encode."""
    exact = (isinstance(sae, TopKSAE) and isinstance(sae.activation_fn, TopK)) or (
        isinstance(sae, (StandardSAE, JumpReLUSAE)) and isinstance(sae.activation_fn, nn.ReLU))
    if not exact or (isinstance(sae, JumpReLUSAE) and bool((sae.threshold < 0).any())):
        return sae.encode(x)[:, cols]
    pre = sae.process_sae_in(x) @ sae.W_enc[:, cols] + sae.b_enc[cols]
    rows = (pre > 0).any(1).nonzero()[:, 0]
    out = torch.zeros_like(pre)
    if len(rows):
        out[rows] = sae.encode(x[rows])[:, cols]
    return out


def save_sae(sae: SAE, path: str | Path) -> None:
    """Write `sae` in sae-lens's on-disk format (sae_weights.safetensors + cfg.json) into
    directory `path`; atomicity is the caller's (write into an `atomic_dir`)."""
    sae.save_model(path)


def load_sae(path: str | Path, device: str = "cpu") -> SAE:
    """Read an SAE saved by `save_sae` (or any sae-lens inference SAE directory)."""
    return SAE.load_from_disk(path, device=device).eval()


def load_pretrained_sae(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A pretrained sae-lens SAE (needs the hub); sae-lens 6 returns the SAE alone."""
    return SAE.from_pretrained(release, sae_id, device=device).eval()


_HOOK_LAYER = re.compile(r"(?:^|\.)(?:blocks|layers|h)\.(\d+)(?:\.(hook_resid_pre|hook_resid_mid|hook_resid_post))?")


def hook_layer(hook_name: str) -> int | None:
    """The decoder layer whose output an SAE's hook reads, from its name: 'blocks.12.hook_resid_post'
    (TransformerLens) and 'model.layers.12' (HF) read layer 12's output; 'blocks.12.hook_resid_pre'
    reads layer 11's (layer 12's input). None for a hook that is not a residual-stream output
    (resid_mid, attention, MLP) or a name this cannot parse."""
    match = _HOOK_LAYER.search(hook_name or "")
    if match is None:
        return None
    layer, point = int(match.group(1)), match.group(2)
    tail = hook_name[match.end():]
    if point == "hook_resid_pre":
        return layer - 1
    if point == "hook_resid_mid" or (point is None and tail not in ("", ".hook_resid_post")):
        return None
    return layer


def check_sae_layer(sae: SAE, layer: int, what: str) -> None:
    """The SAE's own metadata must say it reads layer `layer`'s output; ConfigError otherwise."""
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    got = hook_layer(hook) if hook else None
    if got != layer:
        reads = f"reads {hook}" + (f" (the output of layer {got})" if got is not None else
                                   " (not a residual-stream output this can place)" if hook else "")
        raise ConfigError(f"params.yaml: sae.layer = {layer} but the SAE {what} {reads if hook else 'names no hook'}; "
                          "set sae.layer to the SAE's layer or pick an SAE for this layer")
