"""Fine-tune the tiny test model in one process or under `accelerate launch` and save the
trained LoRA tensors and losses: tests/test_finetune.py compares the two (not a test itself)."""

from __future__ import annotations

import dataclasses
import sys

import torch

import igds.core.finetune as ft
from pipelines.common import distributed
from tests.conftest import build_char_tokenizer, build_tiny_model, task
from tests.test_finetune import CFG


def main(out: str) -> None:
    accelerator = None
    if distributed(cpu=True) is not None:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    torch.set_num_threads(1)
    cfg = dataclasses.replace(CFG, epochs=2, batch_size=4)
    records = [task(i) for i in range(9)]  # per epoch: batches of 4, 4 and 1 (one process gets no row)
    trained, result = ft.finetune(build_tiny_model(seed=0), build_char_tokenizer(), records, cfg, seed=3,
                                  progress=False, accelerator=accelerator)
    if accelerator is None or accelerator.is_main_process:
        lora = {k: v.detach().clone() for k, v in trained.state_dict().items() if "lora_" in k}
        torch.save({"lora": lora, "loss": result.loss,
                    "world": 1 if accelerator is None else accelerator.num_processes}, out)


if __name__ == "__main__":
    main(sys.argv[1])
