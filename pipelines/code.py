"""The code stage: for each kind of stage one small file, manifests/<kind>.json, that changes
exactly when the code that kind of stage runs changes: the sha256 of every file of its
first-party import closure.

    python -m pipelines.code --out manifests                 # every kind (the code stage)
    python -m pipelines.code <kind> --out manifests/<kind>.json

Why manifests: the 100-odd stages of a kind (every finetune@..., every evaluate@...) depend on
one file instead of listing their ~25 source files each. DVC re-reads and rewrites the whole of
dvc.lock, with a round-trip YAML parser, after every stage it runs; with ~4,600 dependency
entries that cost ~10 s per stage.

Why no source path is listed anywhere: a kind's files are computed here, from the source. The
kinds are read from dvc.yaml: every stage that depends on `manifests/<kind>.json` runs `python
-m <module>`, and the kind's code is the import closure of those modules (for a stage that picks a
selector by name at run time, `--method`, of every selector module too). The code stage depends
on the whole source folders (DVC refuses dvc.yaml as a dep), so any edit re-runs it (one process,
well under a second); a manifest whose files did not change is rewritten identical, and DVC re-runs
only the stages whose manifest changed. One stage, not one per kind: DVC's own time per stage
(its status checks and lock rewrite, ~6 s a stage inside `dvc exp run`) was ~2 minutes of every
experiment for 18 stages that each take 0.2 s.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import shlex
import sys
from pathlib import Path

import yaml

from igds.core import timing
from igds.core.artifacts import write_json

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("igds", "pipelines", "baselines")
# Stage modules that run a selector's code, picked by `--method` at run time (subset: its `draw`).
# Every stage parses params.yaml, which imports each method module's top level to check its
# params; that only validates (a bad value stops the stage) and never shapes an output.
RUNS_METHOD = ("pipelines.score", "pipelines.subset")


# --- the first-party import closure, from the source -----------------------------------------

def module_file(root: Path, module: str) -> Path | None:
    """The source file of a first-party module (a package's __init__.py), or None."""
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(root: Path, path: Path) -> set[str]:
    """First-party modules a file imports anywhere (module level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from igds.core import registry` imports the submodule igds.core.registry
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in FIRST_PARTY and module_file(root, name) is not None:
                out.update(m for m in _with_parents(name) if module_file(root, m) is not None)
    return out


def closure(root: Path, modules: list[str]) -> set[Path]:
    """Every first-party file that importing `modules` can execute, relative to root."""
    todo = [m for name in modules for m in _with_parents(name)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(root, module) is None:
            continue
        seen.add(module)
        todo.extend(imported_modules(root, module_file(root, module)))
    return {module_file(root, m).relative_to(root) for m in seen}


def selector_modules(root: Path) -> list[str]:
    """Every selector's module: the registry's listed ones and every module of its convention
    package (a new method is one module there)."""
    from igds.core.registry import CONVENTION_PACKAGE, METHODS  # noqa: PLC0415

    listed = {entry.split(":")[0] for entry in METHODS.values()}
    convention = {f"{CONVENTION_PACKAGE}.{p.stem}" for p in (root / CONVENTION_PACKAGE).glob("*.py")
                  if not p.stem.startswith("_")}
    return sorted(listed | convention)


def command_modules(cmd: str, root: Path = ROOT) -> list[str]:
    """The modules a stage command runs: `python -m <module> ...`; for a stage that runs a
    selector by name (RUNS_METHOD), every selector's module (the name is a param)."""
    argv = shlex.split(cmd)
    modules = [argv[argv.index("-m") + 1]] if "-m" in argv else []
    if modules and modules[0] in RUNS_METHOD:  # subset's --method comes from graph.yaml (${item.args})
        modules += selector_modules(root)
    return modules


# --- the kinds, from dvc.yaml ----------------------------------------------------------------

def is_code_manifest(dep: str) -> bool:
    """manifests/<kind>.json (not an input's hash under manifests/inputs/, pipelines.inputs)."""
    return re.fullmatch(r"manifests/[^/]+\.json", dep) is not None


def kinds(dvc_text: str, root: Path = ROOT) -> dict[str, list[str]]:
    """kind -> the modules its stages run: from every stage of dvc.yaml (but the code stage)
    that depends on manifests/<kind>.json."""
    out: dict[str, set[str]] = {}
    stages = yaml.safe_load(dvc_text).get("stages") or {}
    for name, body in stages.items():
        if name == "code":
            continue
        body = body.get("do", body)
        manifests = sorted({d for d in body.get("deps", []) if isinstance(d, str) and is_code_manifest(d)})
        if len(manifests) != 1:
            raise ValueError(f"dvc.yaml: stage {name} must depend on exactly one manifests/<kind>.json, has {manifests}")
        kind = manifests[0].removeprefix("manifests/").removesuffix(".json")
        out.setdefault(kind, set()).update(command_modules(body["cmd"], root))
    return {kind: sorted(mods) for kind, mods in sorted(out.items())}


# --- the manifest --------------------------------------------------------------------------------

def kind_modules(kind: str, dvc_text: str, root: Path = ROOT) -> list[str]:
    """The modules a kind of stage runs (kinds()), or a KeyError naming the kinds there are."""
    modules = kinds(dvc_text, root)
    if kind not in modules:
        raise KeyError(f"dvc.yaml: no stage depends on manifests/{kind}.json; kinds: {', '.join(modules)}")
    return modules[kind]


def kind_files(kind: str, dvc_text: str, root: Path = ROOT, modules: list[str] | None = None) -> list[Path]:
    """The files a kind of stage runs (relative to root, sorted): this module's and its stages'
    modules' import closure (`modules`: the kind's, when already known)."""
    modules = kind_modules(kind, dvc_text, root) if modules is None else modules
    return sorted(closure(root, ["pipelines.code", *modules]))


def manifest(kind: str, dvc_yaml: Path, modules: list[str] | None = None) -> dict:
    """{"kind", "modules", "files": {path: sha256}} of the code a kind of stage runs (`modules`:
    the kind's, when already known)."""
    root = dvc_yaml.resolve().parent
    text = dvc_yaml.read_text(encoding="utf-8")
    modules = kind_modules(kind, text, root) if modules is None else modules
    files = kind_files(kind, text, root, modules)
    return {"kind": kind, "modules": modules,
            "files": {str(p): hashlib.sha256((root / p).read_bytes()).hexdigest() for p in files}}


def declared_outs(dvc_text: str) -> list[str]:
    """The manifests dvc.yaml's code stage declares as its outputs."""
    body = (yaml.safe_load(dvc_text).get("stages") or {}).get("code") or {}
    return [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", [])]


def write_all(dvc_yaml: Path, out: Path) -> list[str]:
    """Every kind's manifest into out/<kind>.json: the kinds the stages use, which must be the
    outputs the code stage declares (a ValueError naming the difference)."""
    text = dvc_yaml.read_text(encoding="utf-8")
    used = kinds(text, dvc_yaml.resolve().parent)  # parsed once, not once per kind
    want = [f"manifests/{kind}.json" for kind in used]
    declared = declared_outs(text)
    if sorted(declared) != sorted(want):
        raise ValueError(f"{dvc_yaml}: the code stage's outs must be the manifests the stages depend on; missing "
                         f"{sorted(set(want) - set(declared)) or 'none'}, not used {sorted(set(declared) - set(want)) or 'none'}")
    for kind, modules in used.items():
        write_json(out / f"{kind}.json", manifest(kind, dvc_yaml, modules))
    return list(used)


def main(argv: list[str] | None = None) -> None:
    timing.start("code")  # bench.floor's record of where this process's time goes ($IGDS_STAGE_TIMES)
    parser = argparse.ArgumentParser(prog="python -m pipelines.code", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", nargs="?", help="one kind (stages that depend on manifests/<kind>.json in dvc.yaml): "
                        "--out is its file; default: every kind, --out is their folder")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    timing.mark("run_start")
    try:
        if args.kind is None:
            write_all(args.dvc_yaml, args.out)
        else:
            write_json(args.out, manifest(args.kind, args.dvc_yaml))
    except (KeyError, ValueError, OSError) as e:
        print(f"code: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        sys.exit(2)
    timing.mark("run_end")


if __name__ == "__main__":
    main()
