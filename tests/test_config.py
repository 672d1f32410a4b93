"""params.yaml validation: every error names the key, the bad value and what is allowed."""

from __future__ import annotations

import pytest

from igds.core.config import ConfigError
from igds.params import load_params
from tests.conftest import ROOT


def write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_shipped_profiles_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.target_task == "number_sequence" and params.data.pools == ("mixed", "within") and params.model.device == "cpu"
    for profile in sorted((ROOT / "configs").glob("*.yaml")):
        load_params(profile)


@pytest.mark.parametrize("text, message", [
    ("model: {device: tpu}", r"model.device = 'tpu' is not allowed; expected one of \('cpu', 'cuda', 'mps'\)"),
    ("model: {dtype: int8}", r"model.dtype = 'int8' is not allowed"),
    ("model: {nmae: x}", r"unknown key model.nmae \(did you mean model.name\?\); allowed keys: autocast, device, dtype, name"),
    ("seed: one", r"seed = 'one' is not allowed; expected an integer"),
    ("finetune: {lr: 0.1}", r"finetune.lr belongs under finetune.train \(write finetune.train.lr\)"),
    ("finetune: {train: {lrr: 0.1}}", r"unknown key finetune.train.lrr; allowed keys: batch_size, kind, lora_alpha"),
    ("finetune: {train: {lr: -1}}", r"finetune.train.lr = -1.0 is not allowed; expected a positive number"),
    ("finetune: {train: [lr]}", r"finetune.train = \['lr'\] is not allowed; expected a mapping"),
    ("data: {target_task: t, splits: {prior: {kind: csv}}}", r"data.splits.prior.kind = 'csv' is not allowed"),
    ("data: {target_task: t, splits: {prior: {kind: reasoning_gym, tasks: [a], n: 0}}}",
     r"data.splits.prior.n = 0 is not allowed; expected a positive integer"),
    ("data: {target_task: t}", r"data is missing required key\(s\) splits"),
    ("select: {methods: [igds, random]}\nfinetune: {methods: [igds, loss]}",
     r"finetune.methods\[1\] = 'loss' is not selected; expected some of select.methods or recipes \(igds, random\)"),
    ("finetune: {methods: []}", r"finetune.methods = \(\) is not allowed; expected a non-empty list"),
])
def test_bad_values_name_key_value_and_allowed(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, text))


def test_missing_or_broken_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "model: [unclosed"))


def test_mix_share_range(tmp_path):
    base = (ROOT / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"data.mix.on_task_share = 1.5 is not allowed; expected a share in \(0, 1\]"):
        load_params(write(tmp_path, base.replace("on_task_share: 0.5", "on_task_share: 1.5")))


def test_fine_tuned_methods_default_to_the_selected_ones(tmp_path):
    params = load_params(write(tmp_path, "select: {methods: [random, igds]}"))
    assert params.finetuned_methods == ("random", "igds")
    params = load_params(write(tmp_path, "select: {methods: [random, igds]}\nfinetune: {methods: [igds]}"))
    assert params.finetuned_methods == ("igds",)
