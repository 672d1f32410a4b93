"""What fine-tuning and LESS's warm-up share: a LoRA adapter with a seeded init, the
seeded torch generator it is drawn from, and the linear warm-up schedule."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch


@contextlib.contextmanager
def seeded(model, seed: int) -> Iterator[None]:
    """torch's global generator (and the model's CUDA one) seeded inside, restored after:
    peft draws lora_A from the global generator, dropout draws from it too."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def add_lora(model, *, r: int, alpha: float, dropout: float, target_modules: Sequence[str], seed: int,
             task_type: str | None = None):
    """`model` with a fresh LoRA adapter (lora_A drawn from `seed`) and its trainable tensors,
    in parameter order. The model is modified in place: pass a copy to keep the original."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type=task_type)
    with seeded(model, seed):
        peft_model = get_peft_model(model, config)
    return peft_model, [q for q in peft_model.parameters() if q.requires_grad]


def linear_schedule(optimizer: torch.optim.Optimizer, n_steps: int, warmup_ratio: float):
    """Linear warm-up over ceil(warmup_ratio * n_steps) steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    return get_linear_schedule_with_warmup(optimizer, math.ceil(n_steps * warmup_ratio), n_steps)
