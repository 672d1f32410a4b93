"""The prepare stage as users run it: python -m pipelines.prepare, and dvc repro."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from igds.params import dump_params, read_params
from tests.conftest import ROOT, project_copy

CI_PARAMS = ROOT / "configs" / "ci.yaml"


def run(args, cwd=ROOT, **kw):
    # the project copies are fresh `dvc init`s: keep them offline like the repo (.dvc/config: analytics = false)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, **kw)


def test_prepare_writes_the_splits_and_a_reconciled_report(tmp_path):
    out = tmp_path / "data"
    proc = run([sys.executable, "-m", "pipelines.prepare", "--params", str(CI_PARAMS), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "eval.jsonl", "general.jsonl", "pools", "pools/mixed.jsonl", "pools/within.jsonl", "prior.jsonl", "probe.jsonl",
        "rejects.jsonl", "report.json", "sae.jsonl", "val.jsonl"]
    assert (out / "sae.jsonl").read_text() == ""  # configs/ci has no data.splits.sae: the SAE reads general and the pools
    report = json.loads((out / "report.json").read_text())
    n_rejects = len((out / "rejects.jsonl").read_text().splitlines())
    assert report["read"] == report["accepted"] + report["rejected"] and report["rejected"] == n_rejects
    ids = {}
    for split in ("prior", "pools/mixed", "eval", "general", "probe", "val"):  # the pools may share examples
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == report["splits"][split]["accepted"]
        assert all(set(r) == {"id", "instruction", "input", "output", "task", "source"} for r in rows)
        ids[split] = {r["id"] for r in rows}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values()))  # disjoint

    again = tmp_path / "again"
    run([sys.executable, "-m", "pipelines.prepare", "--params", str(CI_PARAMS), "--out", str(again)])
    for name in ("prior.jsonl", "pools/mixed.jsonl", "pools/within.jsonl", "eval.jsonl", "general.jsonl", "probe.jsonl", "val.jsonl",
                 "report.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    text = dump_params(read_params(CI_PARAMS))
    assert text.count("on_task_share: 0.5") == 1
    bad.write_text(text.replace("on_task_share: 0.5", "on_task_share: 2"))
    proc = run([sys.executable, "-m", "pipelines.prepare", "--params", str(bad), "--out", str(tmp_path / "d")])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "prepare: error: params.yaml: data.mix.on_task_share = 2.0 is not allowed; expected a share in (0, 1]")
    assert not (tmp_path / "d").exists()


def test_dvc_repro_prepare_then_nothing_to_do(tmp_path):
    work = project_copy(tmp_path / "clone", CI_PARAMS)
    first = run(["dvc", "repro", "prepare"], cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (work / "data" / "pools" / "within.jsonl").is_file() and (work / "dvc.lock").is_file()
    second = run(["dvc", "repro", "prepare"], cwd=work)
    assert second.returncode == 0 and "didn't change, skipping" in second.stdout, second.stdout
    status = run(["dvc", "status", "prepare"], cwd=work)
    assert "up to date" in status.stdout, status.stdout


def test_dvc_repro_prepare_follows_a_changed_pool_count(tmp_path):
    """A changed count reruns prepare and the pool file has it (a key named `size` would not:
    DVC's run cache drops it from the hash and restores the old pool, treeverse/dvc#10296)."""
    work = project_copy(tmp_path / "clone", CI_PARAMS)

    def repro_with_pool(n: int) -> list[dict]:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["data"]["splits"]["pool"]["n"] = n
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = run(["dvc", "repro", "prepare"], cwd=work)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [json.loads(line) for line in (work / "data" / "pools" / "mixed.jsonl").read_text().splitlines()]

    first = repro_with_pool(60)
    assert len(first) == 60
    changed = repro_with_pool(50)
    assert len(changed) == 50 and sum(r["task"] == "number_sequence" for r in changed) == 25
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["data"]["splits"]["pool"]["n"] == 50
    assert json.loads((work / "data" / "report.json").read_text())["splits"]["pools/mixed"]["accepted"] == 50
    assert repro_with_pool(60) == first  # back to 60: the run cache restores the first pool, as it should


def test_the_saes_own_text_is_prepared_disjoint_from_every_other_split(tmp_path):
    """data.splits.sae: its count met, its tasks as asked, read last, so no example evaluated,
    trained on or used to pick features is in the SAE's text."""
    raw = read_params(CI_PARAMS)
    tasks = ["number_sequence", "word_sorting", "caesar_cipher"]  # the target task too: eval's examples stay out
    raw["data"]["splits"]["sae"] = {"kind": "reasoning_gym", "tasks": tasks, "n": 90, "seed": 555000}
    params = tmp_path / "params.yaml"
    params.write_text(dump_params(raw))
    out = tmp_path / "data"
    proc = run([sys.executable, "-m", "pipelines.prepare", "--params", str(params), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "sae.jsonl").read_text().splitlines()]
    assert len(rows) == 90 and {r["task"] for r in rows} == set(tasks)
    others = {json.loads(line)["id"] for name in ("prior", "eval", "general", "probe", "val", "pools/mixed", "pools/within")
              for line in (out / f"{name}.jsonl").read_text().splitlines()}
    assert not others & {r["id"] for r in rows}
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["sae"]["accepted"] == 90
