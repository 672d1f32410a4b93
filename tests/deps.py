"""The first-party import closure of a stage's command, from the source (AST), and the check
that a stage's dvc.yaml deps cover it. Used by tests/test_deps.py."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

FIRST_PARTY = ("igds", "pipelines", "baselines")


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
            # `from igds import registry` imports the submodule igds.registry
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


# Stage modules that run a method's code, picked by `--method` at run time. Every stage parses
# params.yaml, which imports each method module's top level to check its params; that only
# validates (a bad value stops the stage) and never shapes an output, so it is not a dep.
RUNS_METHOD = ("pipelines.score", "pipelines.select")  # import the method module (select: its `draw`)


def command_modules(cmd: str) -> list[str]:
    """The modules a stage command runs: `python -m <module> ... [--method <m>]`; for a stage
    that runs the method, its module from igds.registry (imported by name at run time)."""
    argv = shlex.split(cmd)
    modules = [argv[argv.index("-m") + 1]] if "-m" in argv else []
    if "--method" in argv and modules and modules[0] in RUNS_METHOD:
        from igds.registry import entry  # noqa: PLC0415

        modules.append(entry(argv[argv.index("--method") + 1]).split(":")[0])
    return modules


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """The files no dep covers (a dep covers itself and everything under it)."""
    dep_paths = [Path(d) for d in deps]
    return sorted(str(f) for f in files if not any(f == d or d in f.parents for d in dep_paths))
