"""The read audit (tests/reads): a stage that reads a file its dvc.yaml entry does not declare is
found; declared deps, its own outputs and their atomic-write temporaries are not."""

from __future__ import annotations

import subprocess

from tests.reads import env, undeclared

TOY = """
from pathlib import Path
from igds.core.artifacts import write_json
text = Path("in.txt").read_text() + Path("secret.txt").read_text()
write_json(Path("out/result.json"), {"n": len(text)})
"""


def test_an_undeclared_read_is_found(tmp_path):
    from tests.conftest import ROOT

    work = tmp_path / "work"
    (work / "pipelines").mkdir(parents=True)
    (work / "pipelines" / "__init__.py").write_text("")
    (work / "pipelines" / "toy.py").write_text(TOY)
    (work / "igds").symlink_to(ROOT / "igds")
    (work / "in.txt").write_text("declared")
    (work / "secret.txt").write_text("another run's file")
    (work / "dvc.yaml").write_text("stages:\n  toy:\n    cmd: python -m pipelines.toy\n    deps: [in.txt]\n"
                                   "    outs: [out]\n")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=work, check=True)
    logs = tmp_path / "logs"
    proc = subprocess.run(["dvc", "repro"], cwd=work, capture_output=True, text=True, env=env(logs))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert undeclared(work, logs) == {"toy": ["secret.txt"]}
    (work / "dvc.yaml").write_text((work / "dvc.yaml").read_text().replace("[in.txt]", "[in.txt, secret.txt]"))
    for log in logs.glob("*.jsonl"):
        log.unlink()
    subprocess.run(["dvc", "repro"], cwd=work, check=True, capture_output=True, env=env(logs))
    assert undeclared(work, logs) == {}
