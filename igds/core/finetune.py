"""Supervised fine-tuning on a selected subset: the model's chat template, loss on the
response tokens only, LoRA by default (the adapter is the artifact) or every weight.

The loop is one screen (nanoGPT's rule): the batch order of every epoch is fixed up front
by the seed, so a run interrupted at step s resumes from its last checkpoint and takes
exactly the steps it would have taken.

Data-parallel (`accelerate launch`, an `Accelerator` passed in): every process builds the
same schedule, takes its contiguous slice of each step's batch, and the model is wrapped in
DDP by `accelerator.prepare_model`. Each process's loss is its response tokens' summed
cross-entropy divided by the response tokens of the *whole* step (transformers'
`num_items_in_batch`, as its Trainer does), times the number of processes (DDP averages
gradients), so every step's gradient is the one-process gradient: the same training, up to
float summation order. LoRA dropout draws differ from one process (each process has its
own generator), so that equality holds without dropout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from igds.core.artifacts import atomic_file
from igds.core.config import ConfigError, FinetuneConfig
from igds.core.data import Record
from igds.core.head_loss import ResponseLoss
from igds.core.lora import add_lora, linear_schedule, seeded
from igds.core.prefix import common_prefix_len
from igds.core.tokens import IGNORE, Tokenized, collate, tokenize_records

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
_SALT_ORDER, _SALT_INIT = 0x5346_5401, 0x5346_5402  # seeded draws: batch order, adapter init / dropout


# --- batches --------------------------------------------------------------------------------

def batch_schedule(lengths: Sequence[int], batch_size: int, epochs: int, rng: np.random.Generator,
                   bucket: int = 16) -> list[np.ndarray]:
    """Every optimizer step's example indices, for all epochs.

    Each epoch shuffles, cuts the order into buckets of `bucket` batches, sorts each bucket
    by length (little padding) and shuffles the batches (no length curriculum)."""
    lengths = np.asarray(lengths)
    steps: list[np.ndarray] = []
    for _ in range(epochs):
        order = rng.permutation(len(lengths))
        batches = []
        for lo in range(0, len(order), batch_size * bucket):
            chunk = order[lo:lo + batch_size * bucket]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        steps += [batches[i] for i in rng.permutation(len(batches))]
    return steps


def shared_prefix(tok: Tokenized, index: Sequence[int]) -> int:
    """The tokens the examples `index` all begin with, up to the last one before any response
    (whose prediction carries no loss): what a step can run once for the batch (igds.core.prefix)."""
    return min(common_prefix_len([tok.input_ids[i] for i in index]), min(tok.response_start[i] for i in index) - 1)


def step_batch(tok: Tokenized, index: Sequence[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    """A training step's model inputs: right-padded input_ids, attention_mask and labels
    (IGNORE outside the response)."""
    batch = collate(tok, index, pad_id, "response", device)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels()}


# --- model ----------------------------------------------------------------------------------

def trainable(model, cfg: FinetuneConfig, seed: int):
    """The model to train and its trainable tensors: a fresh LoRA adapter (seeded init) or
    every weight. The model is modified in place (load a fresh copy per run)."""
    if cfg.gradient_checkpointing:
        # the backward pass recomputes each decoder layer from its input: activation memory
        # ~ n_layers x batch x seq x d_model instead of every intermediate of every layer
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.kind == "full":
        for q in model.parameters():
            q.requires_grad_(True)
        return model, [q for q in model.parameters()]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ConfigError(f"params.yaml: finetune.train.target_modules = {list(cfg.target_modules)} names modules "
                          f"{missing} that {type(model).__name__} does not have")
    return add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                    target_modules=cfg.target_modules, seed=seed, task_type="CAUSAL_LM")


# --- training -------------------------------------------------------------------------------

@dataclass
class TrainResult:
    n_examples: int
    n_steps: int
    n_tokens: int  # tokens seen in training (all epochs), padding excluded
    n_response_tokens: int  # of them, tokens with loss
    loss: list[float] = field(default_factory=list)  # per step
    wall_s: float = 0.0  # this process's training time (a resumed run adds the earlier part)
    resumed_from_step: int = 0

    def summary(self) -> dict:
        info = asdict(self)
        first = self.loss[: max(1, len(self.loss) // 10)]
        last = self.loss[-max(1, len(self.loss) // 10):]
        info.update(loss_first=float(np.mean(first)) if first else None,
                    loss_last=float(np.mean(last)) if last else None,
                    tokens_per_s=round(self.n_tokens / self.wall_s, 1) if self.wall_s else None)
        return info


def fingerprint(cfg: FinetuneConfig, ids: Sequence[str], seed: int, model_source: str) -> str:
    """What a resume checkpoint must match: config, data, seed and starting model."""
    blob = json.dumps([asdict(cfg), list(ids), seed, model_source], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def response_items(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss in a collated batch, as the causal-LM loss counts them (labels
    shifted by one: a token's label at position 0 is never predicted)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def finetune(model, tokenizer, records: list[Record], cfg: FinetuneConfig, seed: int,
             state_dir: Path | None = None, run_key: str = "", progress: bool = True, accelerator=None):
    """Train on `records`; returns (trained model, TrainResult). With `state_dir`, a resume
    checkpoint is written there every `cfg.checkpoint_every` steps and picked up on restart
    when its fingerprint matches. With `accelerator` (several processes), training is
    data-parallel; every process returns the same trained model, the main one writes the
    checkpoints."""
    if not records:
        raise ValueError("finetune: no training examples")
    tok = tokenize_records(tokenizer, records, cfg.max_len)
    lengths = [len(x) for x in tok.input_ids]
    steps = batch_schedule(lengths, cfg.batch_size, cfg.epochs, np.random.default_rng([seed, _SALT_ORDER]))
    model, params = trainable(model, cfg, int(np.random.default_rng([seed, _SALT_INIT]).integers(2**62)))
    device = next(model.parameters()).device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    # the loss at response positions only: no [batch, seq, vocab] logits (igds.core.head_loss)
    engine = ResponseLoss(model, cfg.loss_chunk)
    if world > 1:
        engine = accelerator.prepare_model(engine, device_placement=False)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = linear_schedule(optimizer, len(steps), cfg.warmup_ratio)
    result = TrainResult(len(records), len(steps), n_tokens=sum(lengths) * cfg.epochs,
                         n_response_tokens=sum(n - s for n, s in zip(lengths, tok.response_start)) * cfg.epochs)
    state = _Resume(Path(state_dir) / STATE_FILE if state_dir is not None else None, run_key, rank, world)
    start, torch_rng = state.load(params, optimizer, schedule, result, device)

    model.train()
    t0 = time.perf_counter()
    with seeded(model, int(np.random.default_rng([seed, _SALT_INIT, start]).integers(2**62))):
        if torch_rng is not None:  # dropout continues exactly where it stopped
            torch.random.set_rng_state(torch_rng.cpu())
        bar = tqdm(range(start, len(steps)), desc="finetune", initial=start, total=len(steps),
                   disable=not progress or rank > 0, leave=False)
        for step in bar:
            batch = step_batch(tok, steps[step], tokenizer.pad_token_id, device)
            n_items = response_items(batch)  # the whole step's, on every process
            prefix = shared_prefix(tok, steps[step]) if cfg.share_prefix else 0
            if world > 1:
                batch = _rank_slice(batch, rank, world)
            # summed over this process's response tokens / the step's: the step's mean when summed
            loss = engine(batch["input_ids"], batch["attention_mask"], batch["labels"], max(n_items, 1), max(prefix, 0))
            optimizer.zero_grad(set_to_none=True)
            (loss * world).backward()  # DDP averages the processes' gradients
            if world > 1:
                loss = accelerator.reduce(loss.detach(), "sum")
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            torch.clear_autocast_cache()  # under model.autocast: the next forward casts the updated weights afresh
            schedule.step()
            result.loss.append(round(loss.item(), 6))
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < len(steps):
                state.save(step + 1, params, optimizer, schedule, result.loss, accelerator)
    model.eval()
    result.wall_s = round(time.perf_counter() - t0, 3)
    return model, result


@dataclass
class _Resume:
    """The resume checkpoint of one run: trainable weights, optimizer, schedule, losses so far
    and every process's torch generator; used only by a run with the same fingerprint and
    number of processes."""

    path: Path | None
    run_key: str
    rank: int
    world: int

    def load(self, params, optimizer, schedule, result: TrainResult, device) -> tuple[int, torch.Tensor | None]:
        """(the step to start from, this process's generator state) and the state restored; (0, None) if none."""
        if self.path is None or not self.path.is_file():
            return 0, None
        state = torch.load(self.path, map_location=device, weights_only=False)
        rngs = state.get("torch_rng")
        if state["fingerprint"] != self.run_key or not isinstance(rngs, list) or len(rngs) != self.world:
            log.info("ignoring %s: it belongs to another run (fingerprint or number of processes differs)", self.path)
            return 0, None
        with torch.no_grad():
            for q, saved in zip(params, state["params"]):
                q.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        result.loss, result.resumed_from_step = state["loss"], state["step"]
        log.info("resuming from step %d of %d (%s)", state["step"], result.n_steps, self.path)
        return state["step"], rngs[self.rank]

    def save(self, step: int, params, optimizer, schedule, loss: list[float], accelerator=None) -> None:
        if self.path is None:
            return
        rng = [torch.random.get_rng_state()]
        if self.world > 1:
            from accelerate.utils import gather_object  # noqa: PLC0415

            rng = gather_object(rng)
        if self.rank == 0:
            state = {"fingerprint": self.run_key, "step": step, "params": [q.detach().cpu() for q in params],
                     "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "loss": list(loss),
                     "torch_rng": rng}  # one generator state per process
            with atomic_file(self.path, "wb") as f:
                torch.save(state, f)
        if self.world > 1:
            accelerator.wait_for_everyone()


def _rank_slice(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """This process's contiguous rows of a step's batch, trimmed to their own longest row. A
    process left without rows (a batch smaller than the world) takes the first row with no
    loss, so its forward and backward still meet DDP's gradient all-reduce."""
    rows = np.array_split(np.arange(len(batch["input_ids"])), world)[rank]
    if len(rows) == 0:
        part = {k: v[:1].clone() for k, v in batch.items()}
        part["labels"].fill_(IGNORE)
        return part
    part = {k: v[rows[0]:rows[-1] + 1] for k, v in batch.items()}
    width = int(part["attention_mask"].sum(1).max())  # right padding: trim the common tail
    return {k: v[:, :width] for k, v in part.items()}


# --- saving and loading ---------------------------------------------------------------------

def save_trained(model, tokenizer, out: Path, kind: str) -> None:
    """LoRA: the adapter only (a few MB); full: the whole model and its tokenizer."""
    model.save_pretrained(out, safe_serialization=True)
    if kind == "full":
        tokenizer.save_pretrained(out)


def load_trained(base, checkpoint: Path, kind: str):
    """The fine-tuned model ready for evaluation: `base` (a fresh load of the trained model)
    with the adapter merged in, or the saved full model."""
    if kind == "full":
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        dtype = next(base.parameters()).dtype
        device = next(base.parameters()).device
        return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).to(device).eval()
    from peft import PeftModel  # noqa: PLC0415

    return PeftModel.from_pretrained(base, checkpoint).merge_and_unload().eval()
