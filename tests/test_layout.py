"""The house: a shared core (igds/core) and three systems (igds/method: IGDS, igds/recipes: recipe
search, igds/audit: the preference-data audit), each with its stages in pipelines/<system>/ and
its studies in bench/<system>/. Systems import the core, never each other; the core imports no
system (nor igds.params, which composes every system's schema)."""

from __future__ import annotations

from pathlib import Path

from pipelines.code import imported_modules
from tests.conftest import ROOT

SYSTEMS = ("method", "recipes", "audit")
TREES = ("igds", "pipelines", "bench", "baselines")


def part(module: str) -> str | None:
    """'core', a system's name, or None (the composition: igds.params, pipelines' shared stages...)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[0] in ("igds", "pipelines", "bench") and parts[1] in SYSTEMS:
        return parts[1]
    if parts[:2] == ["igds", "core"]:
        return "core"
    return None


def violations(root: Path) -> list[str]:
    out = []
    for tree in TREES:
        for path in sorted((root / tree).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            mine = part(module)
            for imported in sorted(imported_modules(root, path)):
                theirs = part(imported)
                if mine in SYSTEMS and theirs in SYSTEMS and theirs != mine:
                    out.append(f"{module} (system {mine}) imports {imported} (system {theirs})")
                elif mine == "core" and theirs != "core" and imported != "igds":
                    out.append(f"{module} (core) imports {imported}")
                elif module.startswith("baselines") and theirs in SYSTEMS:
                    out.append(f"{module} (a selector) imports {imported} (system {theirs})")
    return out


def test_systems_import_the_core_and_never_each_other():
    assert violations(ROOT) == []


def test_each_system_has_its_package_and_its_stages():
    for system in SYSTEMS:
        assert (ROOT / "igds" / system / "__init__.py").is_file(), system
        assert (ROOT / "pipelines" / system / "__init__.py").is_file(), system
    assert (ROOT / "igds" / "core" / "__init__.py").is_file()
    assert (ROOT / "bench" / "audit" / "__init__.py").is_file()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in root.rglob("*.py")}:
        (folder / "__init__.py").touch()
    return root


def test_the_check_finds_planted_crossings(tmp_path):
    root = _tree(tmp_path, {
        "igds/core/a.py": "X = 1\n",
        "igds/audit/ok.py": "from igds.core.a import X\n",
        "igds/audit/bad.py": "def f():\n    from igds.recipes.r import Y\n",
        "igds/recipes/r.py": "Y = 2\n",
        "igds/core/up.py": "import igds.params\n",
        "igds/params.py": "from igds.audit.ok import X\n",
        "pipelines/method/s.py": "from igds.audit.ok import X\n",
        "baselines/toy.py": "from igds.method.m import Z\n",
        "igds/method/m.py": "Z = 3\n",
    })
    assert violations(root) == [
        "igds.audit.bad (system audit) imports igds.recipes (system recipes)",
        "igds.audit.bad (system audit) imports igds.recipes.r (system recipes)",
        "igds.core.up (core) imports igds.params",
        "pipelines.method.s (system method) imports igds.audit (system audit)",
        "pipelines.method.s (system method) imports igds.audit.ok (system audit)",
        "baselines.toy (a selector) imports igds.method (system method)",
        "baselines.toy (a selector) imports igds.method.m (system method)",
    ]
