"""bench.floor's per-process record (igds.core.timing): the tokens a model's forward passes did,
split into training (gradients on) and forward, and the times of a stage process's phases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from igds.core import timing
from igds.core.models.residual import run_to_layer
from tests.conftest import ROOT, build_tiny_model


@pytest.fixture
def record(monkeypatch, tmp_path):
    monkeypatch.setattr(timing, "_record", None)
    monkeypatch.setenv(timing.ENV, str(tmp_path / "times.jsonl"))
    monkeypatch.setattr(timing.atexit, "register", lambda *a: None)  # this test process writes no line
    timing.start("test")
    return timing._record


def test_tokens_are_counted_without_padding_by_the_share_of_layers_run_and_by_gradients(record):
    model = build_tiny_model()
    n_layers = model.config.num_hidden_layers
    pad = 0
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, pad, pad]])  # 6 real tokens of 8
    timing.count_tokens(model, pad)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=(ids != pad).long())
    assert record["forward_tokens"] == pytest.approx(6) and record["train_tokens"] == 0
    model(input_ids=ids, attention_mask=(ids != pad).long()).logits.sum().backward()
    assert record["train_tokens"] == pytest.approx(6)
    with torch.no_grad():
        run_to_layer(model, ids, (ids != pad).long(), 0)  # layer 0 of n_layers
    assert record["forward_tokens"] == pytest.approx(6 + 6 / n_layers)


def test_nothing_is_counted_or_written_when_the_variable_is_unset(monkeypatch):
    monkeypatch.setattr(timing, "_record", None)
    monkeypatch.delenv(timing.ENV, raising=False)
    timing.start("test")
    model = build_tiny_model()
    timing.count_tokens(model, 0)
    assert timing._record is None and not model.get_input_embeddings()._forward_pre_hooks


def test_a_stage_process_appends_one_record_of_its_phases(tmp_path):
    times = tmp_path / "times.jsonl"
    env = {**os.environ, timing.ENV: str(times), "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "pipelines.code", "input", "--out", str(tmp_path / "m.json")],
                       cwd=ROOT, env=env, check=True)
    # a stage through pipelines.common.main (every model stage): records even when it stops early
    subprocess.run([sys.executable, "-m", "pipelines.report", "--help"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    lines = [json.loads(line) for line in times.read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["code", "code", "report"] and lines[0]["argv"][0] == "input"
    for r in lines[:2]:
        assert r["started"] <= r["main"] <= r["run_start"] <= r["run_end"] <= r["exit"]
        assert r["main"] - r["started"] < 60


def test_the_floor_breakdown_adds_up_to_the_wall_time():
    from bench.floor import breakdown

    rate = {"train_tokens_per_s": 100.0, "forward_tokens_per_s": 1000.0}
    finetune = {"stage": "finetune", "started": 0.0, "main": 2.0, "run_start": 2.5, "run_end": 12.5, "exit": 13.0,
                "model_load_s": 1.0, "train_tokens": 500.0, "forward_tokens": 1000.0}  # floor 5 + 1 s
    sae = {"stage": "sae", "started": 20.0, "main": 21.0, "run_start": 21.0, "run_end": 25.0, "exit": 25.0,
           "model_load_s": 0.5, "train_tokens": 0.0, "forward_tokens": 0.0}  # its own training: 2 s
    b = breakdown([finetune, sae], wall_s=30.0, rate=rate, sae_train_s=2.0)
    assert b["floor_s"] == 8.0 and b["ratio"] == pytest.approx(30 / 8, abs=0.01)
    assert b["parts"] == {"floor_s": 8.0, "startup_s": 3.0, "model_load_s": 1.5, "work_beyond_floor_s": 4.5,
                          "other_in_process_s": 1.0, "outside_stages_s": 12.0}
    assert sum(b["parts"].values()) == pytest.approx(30.0)
    assert b["kinds"]["finetune"]["work_beyond_floor_s"] == 3.0 and b["kinds"]["sae"]["floor_s"] == 2.0


def test_the_gpu_script_runs_every_part_in_both_precisions_on_a_tiny_model(tmp_path):
    """bench.gpu's smoke test (its real run needs a GPU): every part, fp32 and bf16, positive rates."""
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, "-m", "bench.gpu", "--tiny", "--device", "cpu", "--examples", "8", "--repeats", "1",
                    "--gen-tokens", "4", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert set(result["rates"]) == {"finetune", "loglik", "scoring", "generate"}
    assert all(r["fp32"] > 0 and r["bf16"] > 0 for r in result["rates"].values())
    assert "| scoring |" in (tmp_path / "gpu.md").read_text()


def test_synthetic_examples_are_chat_shaped():
    from bench.gpu import synthetic

    tok = synthetic(20, 60, 40, 1000)
    assert len(tok) == 20 and all(45 <= s <= 75 for s in tok.response_start)
    assert all(c[1] == (s, len(ids)) for c, s, ids in zip(tok.content, tok.response_start, tok.input_ids))
