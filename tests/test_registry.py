"""The method registry is a leaf: listing methods imports none of them, the library never
imports baselines/, igds/ has no import cycle, checking params needs no torch, and a new
method is one module plus one params entry, which dvc.yaml turns into its stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from igds.core import registry
from igds.core.config import ConfigError, method_params
from igds.params import load_params, read_params
from igds.core.context import ScoringContext
from igds.core.data import make_record
from tests.conftest import ROOT, project_copy
from pipelines.code import imported_modules


def _python(code: str, cwd=ROOT) -> dict:
    """Run `code` in a fresh interpreter; it prints a JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_library_imports_no_selector():
    out = _python("""
        import json, sys
        import igds.core.selection, igds.core.registry, igds.core.scoring, igds.core.config
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'baselines' or m == 'igds.method.resonance')))
    """)
    assert out == []


def test_listing_methods_imports_none_of_them():
    out = _python("""
        import json, sys
        from igds.core.registry import available
        names = available()
        print(json.dumps([names, sorted(m for m in sys.modules if m.startswith(('baselines', 'igds.method.resonance')))]))
    """)
    names, imported = out
    assert {"igds", "full", "random", "loss", "ifd", "zip", "kcenter", "less"} <= set(names) and imported == []


def _igds_import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted((ROOT / "igds").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for m in imported_modules(ROOT, path) if m.startswith("igds") and m != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(nxt_ := node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[nxt_] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_igds_has_no_import_cycle_and_never_imports_baselines():
    graph = _igds_import_graph()
    # a package importing its own submodules (igds.core.data) is not a cycle of ideas: drop parent -> child edges
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    assert _cycle(graph) is None, _cycle(graph)
    baselines = {m for path in (ROOT / "igds").rglob("*.py") for m in imported_modules(ROOT, path)
                 if m.startswith("baselines")}
    assert baselines == set()
    assert imported_modules(ROOT, ROOT / "igds" / "core" / "registry.py") == set()  # the leaf imports nothing of ours


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_checking_params_and_the_report_stage_need_no_torch(tmp_path):
    raw = read_params(ROOT / "configs/ci.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = _python(f"""
        import json, runpy, sys
        sys.argv = ["pipelines.prepare", "--params", {str(tmp_path / "params.yaml")!r}, "--out", {str(tmp_path / "data")!r}]
        runpy.run_module("pipelines.prepare", run_name="__main__")
        prepared = "torch" in sys.modules
        sys.argv = ["pipelines.report", "--help"]
        try:
            runpy.run_module("pipelines.report", run_name="__main__")
        except SystemExit:
            pass
        print(json.dumps([prepared, "torch" in sys.modules, "transformers" in sys.modules]))
    """)
    assert out == [False, False, False]
    assert (tmp_path / "data" / "pools" / "mixed.jsonl").is_file()


def test_method_params_are_parsed_into_their_frozen_dataclasses():
    params = load_params(ROOT / "params.yaml")
    assert set(params.methods) == {"igds", "full", "random", "loss", "ifd", "zip", "kcenter", "less", "rds", "lexical"}
    igds = params.methods["igds"]
    assert type(igds).__name__ == "IgdsParams" and igds.k == 1
    with pytest.raises(Exception):
        igds.k = 2  # frozen
    with pytest.raises(ConfigError, match=r"methods.loss.keep = 'middle' is not allowed"):
        method_params("loss", {"keep": "middle"})


@pytest.mark.parametrize("section, meant", [("scorng", "scoring"), ("identfy", "identify")])
def test_an_unknown_section_is_a_one_line_error_naming_it(tmp_path, section, meant):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + f"\n{section}: {{}}\n")
    with pytest.raises(ConfigError, match=rf"unknown section {section} \(did you mean {meant}\?\); allowed sections: "
                                          r".*identify") as caught:
        load_params(path)
    assert "\n" not in str(caught.value)


def test_a_selector_must_return_its_typed_result():
    from igds.core.scoring import score_pool

    @registry.register("returns-array")
    class Bad:
        def __init__(self, params):
            self.params = params

        def score(self, pool, ctx):
            return np.zeros(len(pool))

    pool = [make_record(f"q{i}", "", f"a{i}", "t", "s") for i in range(3)]
    with pytest.raises(TypeError, match="not a SelectorResult"):
        score_pool(Bad(None), pool, ScoringContext(seed=0, target=[]))


TOY = '''
"""toy: scores an example by its output's length (a method added in a test)."""

from dataclasses import dataclass

import numpy as np

from igds.core.config import check
from igds.core.registry import SelectorResult, register


@dataclass(frozen=True)
class ToyParams:
    sign: int = 1

    def __post_init__(self) -> None:
        check(self.sign in (-1, 1), "sign", self.sign, "-1 or 1")


@register("toy", ToyParams)
class ToySelector:
    def __init__(self, params: ToyParams):
        self.params = params

    def score(self, pool, ctx) -> SelectorResult:
        lengths = np.array([len(r.output) for r in pool], dtype=float)
        return SelectorResult(self.params.sign * lengths, {"n_examples": len(pool)}, {"length": lengths})
'''


def test_a_new_method_is_one_module_and_one_params_entry(tmp_path):
    """In a copy of the project: baselines/toy.py and `toy: {sign: -1}` under methods: (and
    in select.methods to select by it, finetune.methods to train on it) are all it takes;
    dvc.yaml makes its stages."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["methods"]["toy"] = {"sign": -1}
    raw["select"]["methods"].append("toy")
    raw["finetune"]["methods"].append("toy")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    work = project_copy(tmp_path / "work", tmp_path / "params.yaml", files={"baselines/toy.py": TOY})
    proc = subprocess.run(["dvc", "stage", "list"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stages = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {f"{stage}@{pool}-toy{tail}" for pool in ("mixed", "within") for stage, tail in
            [("score-shard", "-0"), ("score", ""), ("subset", "-0.5-s0"), ("finetune", "-0.5-s0"),
             ("evaluate", "-0.5-s0")]} <= stages
    out = _python("""
        import json
        from igds.params import load_params
        from igds.core.context import ScoringContext
        from igds.core.data import make_record
        from igds.core.registry import build_selector
        params = load_params("params.yaml")
        pool = [make_record("q", "", "a" * n, "t", "s") for n in (3, 1, 2)]
        result = build_selector("toy", params.methods["toy"]).score(pool, ScoringContext(seed=0, target=[]))
        print(json.dumps([list(result.scores), list(result.extras["length"])]))
    """, cwd=work)
    assert out == [[-3.0, -1.0, -2.0], [3.0, 1.0, 2.0]]


def test_a_method_typo_offers_the_closest_name():
    from igds.core.config import ConfigError
    from igds.core.registry import UnknownMethod
    from igds.params import Params, from_dict, read_params

    assert "unknown method 'kcentre' (did you mean 'kcenter'?)" in str(UnknownMethod("kcentre"))
    assert "did you mean" not in str(UnknownMethod("zzzzzz"))
    raw = read_params(ROOT / "params.yaml")
    raw["select"]["methods"] = ["igds", "ifdd"]
    with pytest.raises(ConfigError, match=r"select.methods\[1\] = 'ifdd' is not allowed; .*did you mean 'ifd'\?"):
        from_dict(Params, raw, "")
