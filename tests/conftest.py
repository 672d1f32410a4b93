"""Shared fixtures: a tiny Llama built from a config, the GSM8K sample, small data configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformers import LlamaConfig, LlamaForCausalLM

from bench.common import project_copy  # noqa: F401  (the tests' project copy is the bench's)
from igds.core.data import make_record

ROOT = Path(__file__).resolve().parents[1]
GSM8K_SAMPLE = Path(__file__).parent / "data" / "gsm8k-sample"


@pytest.fixture(scope="session")
def tiny_model() -> LlamaForCausalLM:
    """A 4-layer Llama with random weights: fast and deterministic."""
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def build_tiny_model(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def build_char_tokenizer():
    """A character-level tokenizer (100 ids) with a ChatML template, like SmolLM2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


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


# --- a planted task feature: tiny model + hand-built SAEs ----------------------------

LAYER = 1
D = 32


def hand_built_sae(w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor) -> StandardSAE:
    """A ReLU SAE with the given weights: [d_in, d_sae], [d_sae], [d_sae, d_in]."""
    sae = StandardSAE(StandardSAEConfig(d_in=w_enc.shape[0], d_sae=w_enc.shape[1]))
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture(scope="session")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def planted():
    """A tiny model whose '#' token embedding carries 5 x u and '@' carries 5 x w."""
    model = build_tiny_model(seed=3)
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    u, w = basis[:, 0], basis[:, 1]
    tokenizer = build_char_tokenizer()
    hash_id, at_id = tokenizer.convert_tokens_to_ids("#"), tokenizer.convert_tokens_to_ids("@")
    with torch.no_grad():
        model.model.embed_tokens.weight[hash_id] += 5 * u
        model.model.embed_tokens.weight[at_id] += 5 * w
    return model, u, w, basis


def task(i: int):
    return make_record(f"Add {i} and {i + 2}.", "", f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}", "task", "test")


def general(i: int):
    return make_record(f"Write the address of user {i}.", "", f"user{i}@host{i % 3}.org", "general", "test")


def other(i: int):
    return make_record(f"Spell {i} backwards.", "", str(i)[::-1] + " is the answer", "other", "test")


def recall_sae(u, w, basis):
    """f0: the task direction u; f1: fires on every token; f2: never; f3: the general-only direction w."""
    w_enc = torch.zeros(D, 4)
    w_enc[:, 0], w_enc[:, 3] = u, w
    w_enc[:, 2] = basis[:, 2]
    b_enc = torch.tensor([-2.5, 1.0, -100.0, -2.5])
    w_dec = torch.stack([u, basis[:, 4], basis[:, 2], w])
    return hand_built_sae(w_enc, b_enc, w_dec)


# --- a tiny model trained to copy and to say three fluent sentences ------------------

FLUENT = ["the cat sat on the mat.", "the dog sat on the rug.", "a cat ran to the mat."]


def copy_record(word: str, output: str | None = None):
    return make_record(f"Copy: {word}", "", output or word, "copy", "test")


def fluent_record(i: int):
    return make_record("Say a sentence.", "", FLUENT[i % 3], "fluent", "test")


def random_word(rng) -> str:
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6))


@pytest.fixture(scope="session")
def trained_tiny():
    """(model, tokenizer) after 300 AdamW steps on copy tasks and fluent sentences (~10 s):
    the response of a copy task is predictable from its instruction, gibberish is not."""
    import numpy as np

    from igds.core.tokens import tokenize_records

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(seed=1).train()
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        records = [copy_record(random_word(rng)) for _ in range(12)] + [fluent_record(i) for i in range(4)]
        tok = tokenize_records(tokenizer, records, 128)
        width = max(map(len, tok.input_ids))
        ids = torch.zeros(len(records), width, dtype=torch.long)
        mask, labels = torch.zeros_like(ids), torch.full((len(records), width), -100)
        for i, (x, start) in enumerate(zip(tok.input_ids, tok.response_start)):
            ids[i, :len(x)], mask[i, :len(x)] = torch.tensor(x), 1
            labels[i, start:len(x)] = torch.tensor(x[start:])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def selector_for(name: str, raw: dict | None = None):
    """A selector built as the stages build it: its params parsed from a params.yaml mapping."""
    from igds.core.config import method_params
    from igds.core.registry import build_selector

    return build_selector(name, method_params(name, raw))
