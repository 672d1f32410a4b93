"""Shared fixtures: a tiny Llama built from a config, the GSM8K sample, small data configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
GSM8K_SAMPLE = Path(__file__).parent / "data" / "gsm8k-sample"


@pytest.fixture(scope="session")
def tiny_model() -> LlamaForCausalLM:
    """A 4-layer Llama with random weights: fast and deterministic."""
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (3, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 6:] = 0  # one right-padded row
    return input_ids, attention_mask


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach a hub: any attempt fails instead of silently downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
