"""Every stage's dvc.yaml deps cover its command's whole first-party import closure (read
from the source), so a code change can never leave an output that `dvc status` calls up to
date. A stage that picks its method by name (--method) also depends on that method's module.
A stage's code deps are those of the code manifest it depends on (manifests/<kind>.json, the
output of stage code-<kind>, which changes whenever one of its deps does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deps import closure, command_modules, uncovered


def resolved_stages(root: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (cmd, deps) of every stage dvc.yaml expands (foreach and matrix included), a
    dep on a code manifest replaced by the deps of the stage that writes it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        raw = {stage.addressing: (stage.cmd, [d.def_path for d in stage.deps]) for stage in repo.index.stages}
        writers = {o.def_path: stage.addressing for stage in repo.index.stages for o in stage.outs}
    return {name: (cmd, with_manifests(deps, raw, writers)) for name, (cmd, deps) in raw.items()}


def with_manifests(deps: list[str], raw: dict, writers: dict[str, str]) -> list[str]:
    out = []
    for dep in deps:
        out.append(dep)
        if dep.startswith("manifests/"):
            out += raw[writers[dep]][1]
    return out


def test_stages_of_a_kind_depend_on_one_code_manifest():
    """No stage but a code-<kind> stage lists source files: dvc.lock stays small (DVC rewrites
    it whole after every stage), and each manifest lists its kind's code once."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            code = [d.def_path for d in stage.deps if d.def_path.startswith(("igds", "pipelines", "baselines"))]
            if stage.addressing.startswith("code-"):
                assert "pipelines/code.py" in code, stage.addressing
            else:
                assert code == [], (stage.addressing, code)
                assert sum(d.def_path.startswith("manifests/") for d in stage.deps) == 1, stage.addressing


@pytest.fixture(scope="module")
def stages():
    return resolved_stages(ROOT)


def test_every_stage_runs_a_pipeline_module(stages):
    assert len(stages) > 10
    for name, (cmd, _) in stages.items():
        assert command_modules(cmd)[0].startswith("pipelines."), (name, cmd)


def test_deps_cover_each_stage_command_import_closure(stages):
    missing = {}
    for name, (cmd, deps) in stages.items():
        files = closure(ROOT, command_modules(cmd))
        assert files, name
        if gaps := uncovered(files, deps):
            missing[name] = gaps
    assert missing == {}, "dvc.yaml deps miss imported modules: " + "; ".join(
        f"{name}: {', '.join(gaps)}" for name, gaps in sorted(missing.items()))


def test_the_check_fails_when_a_stage_loses_one_imported_module(stages):
    cmd, deps = stages["identify"]
    assert "manifests/identify.json" in deps
    files = closure(ROOT, command_modules(cmd))
    assert Path("igds/sae.py") in files and Path("igds/models/residual.py") in files
    assert uncovered(files, [d for d in deps if d != "igds/sae.py"]) == ["igds/sae.py"]
    # a directory dep covers what is under it; losing it uncovers all of them
    assert "igds/models/residual.py" in uncovered(files, [d for d in deps if d != "igds/models"])


def test_a_score_stage_depends_on_its_method_module(stages):
    cmd, deps = stages["score-shard@mixed-less-0"]
    files = closure(ROOT, command_modules(cmd))
    assert {Path("baselines/less.py"), Path("igds/gradients.py"), Path("igds/lora.py")} <= files
    assert uncovered(files, deps) == []


def test_the_ci_profiles_search_and_recipe_stages_cover_their_closure(tmp_path):
    """The default profile runs no recipe search and no audit: resolve configs/ci's stages to check
    theirs too."""
    import shutil
    import subprocess

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "configs" / "ci" / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    stages = {name.split(":")[-1]: v for name, v in resolved_stages(tmp_path).items()}  # addressed from another cwd
    kinds = ("recipe-search@", "recipe@", "prepare-pairs@", "audit@", "intervene@", "oracle@", "dpo@", "reaudit-base@", "reaudit@",
             "report-audit@", "view-audit@")
    checked = {n: v for n, v in stages.items() if n.startswith(kinds)}
    assert {k for k in kinds if any(n.startswith(k) for n in checked)} == set(kinds)
    missing = {name: gaps for name, (cmd, deps) in checked.items() if (gaps := uncovered(closure(ROOT, command_modules(cmd)), deps))}
    assert missing == {}, missing
