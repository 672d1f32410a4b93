"""The code a stage runs is in its stage graph: every stage depends on one code manifest
(manifests/<kind>.json, written by the one code stage), and a manifest holds its kind's whole first-party
import closure, computed from the source (pipelines/code.py), so a code change can never leave
an output that `dvc status` calls up to date, and no source path is listed by hand."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from igds.params import dump_params, load_params, read_params
from pipelines.code import closure, command_modules, is_code_manifest, kind_files, kinds, manifest
from pipelines.graph import render
from tests.conftest import ROOT

SOURCES = ("igds", "pipelines", "baselines")
LISTED_PATH = re.compile(r"\b(?:igds|pipelines|baselines)/[\w/.-]+")


def resolved_stages(root: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (cmd, deps) of every stage dvc.yaml expands (foreach and matrix included)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.addressing.split(":")[-1]: (stage.cmd, [d.def_path for d in stage.deps])
                for stage in repo.index.stages}


def ci_stage_graph(root: Path) -> Path:
    """dvc.yaml with configs/ci's whole params and their graph.yaml in a DVC project at `root`."""
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(dump_params(read_params(ROOT / "configs" / "ci.yaml")))
    (root / "graph.yaml").write_text(render(load_params(root / "params.yaml")))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def stages():
    return resolved_stages(ROOT)


def test_no_source_path_is_listed_in_any_dvc_yaml():
    for path in ROOT.rglob("dvc.yaml"):
        if ".venv" not in path.parts:
            assert LISTED_PATH.findall(path.read_text(encoding="utf-8")) == [], path


def test_the_check_for_listed_paths_finds_a_planted_one():
    assert LISTED_PATH.findall("    deps:\n      - igds/core/sae.py\n      - data/pool.jsonl\n") == ["igds/core/sae.py"]


def test_each_stage_depends_on_one_code_manifest_and_the_code_stage_on_the_sources(stages):
    """Only the code stage depends on source folders (the whole of them, so any edit re-runs the
    cheap manifests); every other stage on exactly one manifest: dvc.lock stays small."""
    for name, (_, deps) in stages.items():
        code = [d for d in deps if d.split("/")[0] in SOURCES]
        if name == "code":
            assert sorted(code) == sorted(SOURCES), name
        else:
            assert code == [], (name, code)
            assert len({d for d in deps if is_code_manifest(d)}) == 1, name


def test_the_code_stage_writes_the_kinds_the_stages_use(tmp_path):
    from pipelines.code import declared_outs, write_all

    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    assert declared_outs(text) == [f"manifests/{k}.json" for k in kinds(text)], \
        "dvc.yaml's code stage must declare manifests/<kind>.json of every kind the stages use"
    assert write_all(ROOT / "dvc.yaml", tmp_path) == list(kinds(text))
    assert json.loads((tmp_path / "score.json").read_text()) == manifest("score", ROOT / "dvc.yaml")
    short = tmp_path / "dvc.yaml"  # a kind its outs forget: refused, named
    short.write_text(text.replace("      - manifests/score.json\n", ""))
    with pytest.raises(ValueError, match=r"missing \['manifests/score.json'\]"):
        write_all(short, tmp_path / "again")


def test_every_stage_command_closure_is_in_its_manifest(stages):
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    files = {kind: set(kind_files(kind, text)) for kind in kinds(text)}
    missing = {}
    for name, (cmd, deps) in stages.items():
        if name == "code":
            continue
        (dep,) = {d for d in deps if is_code_manifest(d)}
        needed = closure(ROOT, command_modules(cmd))
        assert needed, name
        if gaps := needed - files[dep.removeprefix("manifests/").removesuffix(".json")]:
            missing[name] = sorted(map(str, gaps))
    assert missing == {}, missing


def test_a_score_stage_manifest_holds_every_selector(stages):
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    cmd, _ = stages["score-shard@mixed-less-0"]
    assert "baselines.less" in command_modules(cmd) and "igds.method.resonance" in command_modules(cmd)
    files = set(kind_files("score", text))
    assert {Path("baselines/less/__init__.py"), Path("baselines/less/gradients.py"), Path("baselines/zip.py"),
            Path("igds/method/resonance.py"), Path("igds/core/lora.py")} <= files
    assert Path("igds/audit/dpo.py") not in files  # only what the kind runs


def _toy_project(root: Path) -> Path:
    for pkg in ("igds", "pipelines"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "igds" / "a.py").write_text("X = 1\n")
    (root / "igds" / "b.py").write_text("Y = 2\n")
    (root / "pipelines" / "stage.py").write_text("from igds.a import X\n\ndef run():\n    return X\n")
    (root / "dvc.yaml").write_text("stages:\n  s:\n    cmd: python -m pipelines.stage --out o\n"
                                   "    deps: [manifests/s.json]\n    outs: [o]\n")
    return root / "dvc.yaml"


def test_a_manifest_follows_the_code_it_runs(tmp_path):
    """A planted import (inside a function) enters the manifest; an edit to a file the kind runs
    changes the manifest, an edit to one it does not run leaves it identical."""
    dvc_yaml = _toy_project(tmp_path)
    first = manifest("s", dvc_yaml)
    assert set(first["files"]) == {"igds/__init__.py", "igds/a.py", "pipelines/__init__.py", "pipelines/stage.py"}
    (tmp_path / "igds" / "b.py").write_text("Y = 3\n")
    assert manifest("s", dvc_yaml) == first
    (tmp_path / "igds" / "a.py").write_text("X = 2\n")
    second = manifest("s", dvc_yaml)
    assert second["files"]["igds/a.py"] != first["files"]["igds/a.py"]
    (tmp_path / "pipelines" / "stage.py").write_text("def run():\n    from igds.b import Y\n    return Y\n")
    assert "igds/b.py" in manifest("s", dvc_yaml)["files"]


def test_a_stage_without_one_manifest_is_refused(tmp_path):
    dvc_yaml = _toy_project(tmp_path)
    dvc_yaml.write_text(dvc_yaml.read_text().replace("[manifests/s.json]", "[igds/a.py]"))
    with pytest.raises(ValueError, match="exactly one manifests"):
        kinds(dvc_yaml.read_text(), tmp_path)


def test_the_manifest_command_writes_and_refuses_an_unknown_kind(tmp_path):
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, "-m", "pipelines.code", "subset", "--out", str(out)], cwd=ROOT, check=True)
    assert {"pipelines/select.py", "pipelines/recipes/recipe.py"} <= set(json.loads(out.read_text())["files"])
    proc = subprocess.run([sys.executable, "-m", "pipelines.code", "nosuch", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no stage depends on manifests/nosuch.json" in proc.stderr


def test_the_ci_profiles_search_and_audit_stages_are_covered(tmp_path):
    """The default profile runs no recipe search and no audit: resolve configs/ci's stages too."""
    stages = resolved_stages(ci_stage_graph(tmp_path))
    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    prefixes = ("recipe-search@", "subset@mixed-search_", "finetune@mixed-search_", "proxy-check@", "prepare-pairs@", "audit@", "intervene@",
                "oracle@", "dpo@", "reaudit-base@", "reaudit@", "report-audit@", "view-audit@")
    checked = {n: v for n, v in stages.items() if n.startswith(prefixes)}
    assert {k for k in prefixes if any(n.startswith(k) for n in checked)} == set(prefixes)
    missing = {}
    for name, (cmd, deps) in checked.items():
        (dep,) = {d for d in deps if is_code_manifest(d)}
        if gaps := closure(ROOT, command_modules(cmd)) - set(kind_files(dep[len("manifests/"):-len(".json")], text)):
            missing[name] = gaps
    assert missing == {}, missing


def test_a_change_to_one_methods_params_reruns_only_that_methods_work(tmp_path):
    """Issue 33: what DVC re-runs after `methods.<m>` changes is the stages whose params name it
    and everything downstream of them (DVC's own graph). For each method of configs/ci that is
    its own scoring, subsets, fine-tunes and evaluations; the stages that read every method's
    signals (the recipes, the recipe search and its finalists, the proxy check); the report; and,
    for the method whose features every evaluation measures (graph.yaml's `amplification`), the
    evaluations. No other method's work."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from pipelines.graph import amplification_method

    root = ci_stage_graph(tmp_path)
    params = load_params(root / "params.yaml")
    methods = list(params.methods)
    shared = re.compile(r"(subset|finetune|evaluate)@\w+-(filtered|search_\w+)-|recipe-search(-single)?@|proxy-check@|report$")
    with Repo(str(root)) as repo:
        graph = repo.index.graph
        for method in methods:
            key = f"methods.{method}"
            direct = {stage for stage in repo.index.stages for dep in stage.deps if isinstance(dep, ParamsDependency)
                      for p in dep.params if p == key or p.startswith(key + ".") or key.startswith(p + ".")}
            assert direct, method
            reruns = set(direct).union(*(nx.ancestors(graph, stage) for stage in direct))  # edges point upstream
            names = {stage.addressing.split(":")[-1] for stage in reruns}
            if method == amplification_method(params):  # every evaluation measures its features
                names = {n for n in names if not n.startswith("evaluate@")}
            own = {n for n in names if re.search(rf"@\w+-{method}(-|$)", n)}
            assert {f"score@{pool}-{method}" for pool in params.data.pools} <= own, method
            rest = names - own - {n for n in names if shared.search(n)}
            assert rest == set(), (method, sorted(rest))  # no other method's scoring, subsets, fine-tunes
