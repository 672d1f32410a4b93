"""igds.core.runs: one run identity names every subset, checkpoint and evaluation, and dvc.yaml's
stages write exactly the paths it derives."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from igds.core.config import ConfigError
from igds.core.runs import FULL, RunId, parse_ratio, ratio_text
from tests.conftest import ROOT
from tests.test_deps import resolved_stages


def test_a_run_names_its_files():
    run = RunId("mixed", "igds", "0.5", 1)
    assert run.stem == "igds-0.5-s1" and run.share == 0.5
    assert run.subset() == Path("subsets/mixed/igds-0.5-s1.jsonl")
    assert run.selection_metrics() == Path("results/metrics/mixed/select-igds-0.5-s1.json")
    assert run.checkpoint() == Path("checkpoints/mixed/igds-0.5-s1")
    assert run.evaluation(Path("out")) == Path("out/mixed/igds-0.5-s1")
    assert run.stage("finetune") == "finetune@mixed-igds-0.5-1"
    full = RunId("within", FULL, None, 0)
    assert full.stem == "full-s0" and full.share == 1.0 and full.stage("evaluate") == "evaluate-full@within-0"


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


def test_dvc_yaml_writes_the_paths_the_run_identity_derives(tmp_path):
    """Every subset, fine-tune and evaluation stage of configs/ci (every kind: selections, recipes,
    finalists, full) writes exactly its run's paths; selections' and recipes' stage names are the
    run's too."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    from igds.params import dump_params, read_params

    (tmp_path / "params.yaml").write_text(dump_params(read_params(ROOT / "configs" / "ci.yaml")))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    from dvc.repo import Repo

    with Repo(str(tmp_path)) as repo:
        outs = {s.addressing.split(":")[-1]: [o.def_path for o in s.outs] for s in repo.index.stages}
    stages = resolved_stages(tmp_path)
    seen = set()
    for name, (cmd, _) in stages.items():
        module = shlex.split(cmd)[2]
        run = _run_of(cmd) if module in ("pipelines.select", "pipelines.recipes.recipe", "pipelines.finetune",
                                         "pipelines.evaluate") else None
        if run is None:
            continue
        kind = name.split("@")[0]
        seen.add(kind)
        expected = {"pipelines.select": [run.subset(), run.selection_metrics()],
                    "pipelines.recipes.recipe": [run.subset(), run.selection_metrics()],
                    "pipelines.finetune": [run.checkpoint()],
                    "pipelines.evaluate": [run.evaluation()]}[module]
        assert [Path(p) for p in outs[name]] == expected, name
        if kind in ("select", "recipe", "finetune", "evaluate", "finetune-full", "evaluate-full"):
            assert name == run.stage(kind.removesuffix("-full")), name
    assert seen == {"select", "recipe", "finalist", "finetune", "finetune-full", "finetune-finalist", "evaluate",
                    "evaluate-full", "evaluate-finalist"}
