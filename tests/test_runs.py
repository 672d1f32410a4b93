"""igds.core.runs: one run identity names every subset, checkpoint and evaluation, and dvc.yaml's
stages write exactly the paths it derives."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from igds.core.config import ConfigError
from igds.core.runs import FULL, RunId, parse_ratio, ratio_text
from igds.params import dump_params, load_params, read_params
from pipelines.graph import render, stale, trained
from tests.conftest import ROOT
from tests.test_deps import ci_stage_graph, resolved_stages


def test_a_run_names_its_files():
    run = RunId("mixed", "igds", "0.5", 1)
    assert run.stem == "igds-0.5-s1" and run.share == 0.5
    assert run.subset() == Path("subsets/mixed/igds-0.5-s1.jsonl")
    assert run.selection_metrics() == Path("results/metrics/mixed/select-igds-0.5-s1.json")
    assert run.checkpoint() == Path("checkpoints/mixed/igds-0.5-s1")
    assert run.evaluation(Path("out")) == Path("out/mixed/igds-0.5-s1")
    assert run.stage("finetune") == "finetune@mixed-igds-0.5-s1"
    full = RunId("within", FULL, None, 0)
    assert full.stem == "full-s0" and full.share == 1.0 and full.stage("evaluate") == "evaluate@within-full-s0"
    assert full.subset() == Path("subsets/within/full-s0.jsonl")


@pytest.mark.parametrize("text, message", [
    ("0", "is not allowed; expected a share in \\(0, 1\\)"),
    ("1", "is not allowed"),
    ("1.5", "is not allowed"),
    ("nan", "is not allowed"),
    ("half", "is not allowed"),
    ("0.50", "write it as 0.5"),
    (".5", "write it as 0.5"),
])
def test_a_ratio_is_checked_once_with_one_bound(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_ratio(text)
    with pytest.raises(ConfigError):
        RunId("mixed", "igds", text, 0)


def test_the_config_bound_is_the_same():
    from igds.core.config import SelectConfig
    from igds.recipes.config import SearchConfig

    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match=r"a share in \(0, 1\)"):
            SelectConfig(ratios=(bad,))
        with pytest.raises(ConfigError, match=r"a share in \(0, 1\)"):
            SearchConfig(ratio=bad)
    assert parse_ratio(0.25) == ratio_text(0.25) == "0.25"


def test_full_and_only_full_has_no_ratio():
    with pytest.raises(ConfigError, match="needs a ratio"):
        RunId("mixed", "igds", None, 0)
    with pytest.raises(ConfigError, match="full has no ratio"):
        RunId("mixed", FULL, "0.5", 0)


def _run_of(cmd: str) -> RunId | None:
    argv = shlex.split(cmd)
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    name = opt.get("--method") or opt.get("--recipe") or opt.get("--finalist")
    if name is None or "--run" in opt:
        return None
    return RunId(opt["--pool"], name, opt.get("--ratio"), int(opt["--seed"]))


def test_one_stage_kind_each_writes_the_paths_the_run_identity_derives(tmp_path):
    """configs/ci's stages: one subset, one finetune and one evaluate kind (the untouched model's
    evaluation is evaluate@base); each such stage is named for its run and writes exactly its run's
    paths, for every sort of run (selections, recipes, finalists, full); and the runs are those
    params asks for."""
    from dvc.repo import Repo

    project = ci_stage_graph(tmp_path)
    with Repo(str(project)) as repo:
        outs = {s.addressing.split(":")[-1]: [o.def_path for o in s.outs] for s in repo.index.stages}
    stages = resolved_stages(project)
    by_kind: dict[str, set[RunId]] = {}
    for name, (cmd, _) in stages.items():
        module = shlex.split(cmd)[2]
        if module not in ("pipelines.subset", "pipelines.finetune", "pipelines.evaluate") or name == "evaluate@base":
            continue
        run = _run_of(cmd)
        kind = name.split("@")[0]
        assert name == run.stage(kind), name
        expected = {"subset": [run.subset(), run.selection_metrics()], "finetune": [run.checkpoint()],
                    "evaluate": [run.evaluation()]}[kind]
        assert [Path(p) for p in outs[name]] == expected, name
        by_kind.setdefault(kind, set()).add(run)
    assert set(by_kind) == {"subset", "finetune", "evaluate"}
    assert "evaluate@base" in stages and outs["evaluate@base"] == ["results/eval/base"]
    assert not {n.split("@")[0] for n in stages} & {"select", "recipe", "finalist", "finetune-full", "evaluate-full",
                                                    "finetune-finalist", "evaluate-finalist", "evaluate-base"}
    params = load_params(project / "params.yaml")
    assert by_kind["finetune"] == by_kind["evaluate"] == set(trained(params))
    names = {r.name for r in by_kind["subset"]}
    assert {FULL, "igds", "filtered", "search_random_s0"} <= names and by_kind["finetune"] <= by_kind["subset"]


def test_the_committed_run_list_is_the_one_params_gives():
    """graph.yaml is generated (python -m pipelines.graph): the committed file is its text for
    params.yaml, byte for byte."""
    assert (ROOT / "graph.yaml").read_text(encoding="utf-8") == render(load_params(ROOT / "params.yaml")), \
        "graph.yaml is stale: run `python -m pipelines.graph` and commit it"


def test_a_stale_run_list_stops_every_stage(tmp_path):
    """A params edit that changes the runs (a ratio added) without regenerating graph.yaml: --check
    says which runs are missing, and a stage refuses to run (before it reads anything)."""
    project = ci_stage_graph(tmp_path)
    whole = read_params(project / "params.yaml")
    whole["select"]["ratios"] = [0.5, 0.25]
    (project / "params.yaml").write_text(dump_params(whole))
    check = subprocess.run([sys.executable, "-m", "pipelines.graph", "--check"], cwd=project, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert check.returncode == 1 and "subsets missing (mixed-igds-0.25-s0" in check.stderr, check.stderr
    stage = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--out", "data"], cwd=project,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert stage.returncode == 2 and "graph.yaml is not the stage graph params.yaml gives" in stage.stderr, stage.stderr
    assert not (project / "data").exists()
    subprocess.run([sys.executable, "-m", "pipelines.graph"], cwd=project, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "subset@mixed-igds-0.25-s0" in resolved_stages(project)


def test_a_profile_passes_its_own_run_list(tmp_path):
    """pipelines.profile's -S overrides, applied as dvc exp run applies them to the default's
    params.yaml and graph.yaml, give configs/ci's params and a graph.yaml fresh for them."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    for name in ("params.yaml", "graph.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    flags = subprocess.run([sys.executable, "-m", "pipelines.profile", str(ROOT / "configs" / "ci.yaml"),
                            "--params", str(tmp_path / "params.yaml"), "--set-params"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    assert any(f.startswith("graph.yaml:") for f in flags)
    for path, overrides in to_path_overrides([f for f in flags if f]).items():
        apply_overrides(str(tmp_path / path), overrides)
    ci = load_params(ROOT / "configs" / "ci.yaml")
    assert load_params(tmp_path / "params.yaml") == ci
    assert stale(ci, tmp_path / "graph.yaml") is None
    assert stale(load_params(ROOT / "params.yaml"), tmp_path / "graph.yaml") is not None
