"""The recipe-search stages on a tiny model: proxy fine-tunes scored on the val split, their
outputs, a search SIGKILLed mid-way that, run again, ends with the study an uninterrupted run
of the same seed ends with; the single selectors' search; a search's best recipe replayed by
the finalist stage to the subset the search evaluated; and the proxy check."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from igds.core.artifacts import write_jsonl
from igds.params import read_params
from tests.conftest import ROOT, build_char_tokenizer, build_tiny_model, task


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    model = root / "tiny"
    build_tiny_model().save_pretrained(model)
    build_char_tokenizer().save_pretrained(model)
    pool, val = [task(i) for i in range(24)], [task(100 + i) for i in range(6)]
    write_jsonl(root / "data/pools/mixed.jsonl", (dataclasses.asdict(r) for r in pool))
    write_jsonl(root / "data/val.jsonl", (dataclasses.asdict(r) for r in val))
    raw = read_params(ROOT / "configs/ci.yaml")
    raw["model"]["name"] = str(model)
    raw["sae"]["layer"] = 2
    raw["finetune"]["train"].update(max_len=96, batch_size=4)
    raw["scoring"].update(max_len=96, batch_size=4)
    raw["search"].update(solvers=["local"], seeds=[0], pools=["mixed"], budget=5, warmup=2, candidates=6)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(0)
    ids = [r.id for r in pool]
    (root / "scores").mkdir()
    for method in raw["methods"]:
        frame = pd.DataFrame({"id": ids, "score": rng.random(len(ids))})
        if method == "igds":
            for f in range(6):
                frame[f"a{f}"] = rng.random(len(ids))
        if method == "kcenter":
            for j in range(4):
                frame[f"h{j}"] = rng.normal(size=len(ids))
        frame.to_parquet(root / "scores" / f"{method}.parquet")
    return root


def command(root, out, solver="local", module="pipelines.recipes.search"):
    solver_args = ["--solver", solver, "--seed", "0"] if module == "pipelines.recipes.search" else []
    return [sys.executable, "-m", module, "--params", str(root / "params.yaml"), "--pool", "mixed", *solver_args,
            "--data", str(root / "data"), "--scores", str(root / "scores"), "--out", str(out),
            "--metrics", str(out.parent / f"metrics-{out.name}")]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def finished(out):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    return [(t.params, t.value, t.user_attrs["key"]) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_the_search_stage_writes_its_study_and_resumes_after_sigkill(project):
    whole = project / "whole"
    proc = subprocess.run(command(project, whole), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["fine_tunes"] == 5 and summary["final_n"] == 12 and summary["metric"] == "answer_loglik"
    rows = [json.loads(line) for line in (whole / "evaluated.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and len({r["key"] for r in rows}) == 5 and all(r["value"] < 0 for r in rows)
    assert [r["best_so_far"] for r in rows] == list(np.maximum.accumulate([r["value"] for r in rows]))
    best = yaml.safe_load((whole / "best.yaml").read_text())
    assert best["process"][-1].keys() == {"fill"} and max(r["value"] for r in rows) == summary["best_value"]
    metrics = json.loads((project / "metrics-whole" / "search-local-s0.json").read_text())
    assert metrics["best_so_far"] == [r["best_so_far"] for r in rows] and metrics["fine_tunes"] == 5

    killed = project / "killed"
    running = subprocess.Popen(command(project, killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and running.poll() is None:
        if (killed / "study.journal").exists() and len(finished(killed)) >= 2:
            break
        time.sleep(0.05)
    assert running.poll() is None, "the search ended before it could be killed"
    running.send_signal(signal.SIGKILL)
    running.wait()
    assert 2 <= len(finished(killed)) < 5
    proc = subprocess.run(command(project, killed), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert finished(killed) == finished(whole)
    assert (killed / "best.yaml").read_text() == (whole / "best.yaml").read_text()


def test_the_single_search_scores_each_selectors_own_subset_once(project):
    out = project / "single"
    proc = subprocess.run(command(project, out, "single"), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((project / "metrics-single" / "search-single.json").read_text())
    methods = ["igds", "random"]  # configs/ci's finetune.methods
    assert summary["methods"] == methods and summary["fine_tunes"] == 2 and len(summary["values"]) == 2
    assert summary["best_method"] == methods[int(np.argmax(summary["values"]))]
    from igds.params import load_params
    from igds.recipes.recipe import subset_key
    from pipelines.io import read_pool
    from pipelines.select import selection

    params = load_params(project / "params.yaml")
    ids, _ = selection(params, summary["best_method"], project / "scores", "mixed",
                       read_pool(project / "data", "mixed"), 0.5, params.search.proxy.seed)
    assert summary["best_key"] == subset_key(ids)  # the select stage's subset, drawn for the proxy's seed
    before = finished(out)
    assert len(before) == 2
    proc = subprocess.run(command(project, out, "single"), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0 and finished(out) == before  # nothing fine-tuned again


def test_a_finalist_replays_the_searched_subset(project):
    whole = project / "whole"
    if not (whole / "best.yaml").exists():
        pytest.skip("needs the search test's output")
    base = [sys.executable, "-m", "pipelines.subset", "--params", str(project / "params.yaml"), "--pool", "mixed",
            "--finalist", "search_local_s0", "--search", str(whole), "--ratio", "0.5", "--data",
            str(project / "data"), "--scores", str(project / "scores"), "--out", str(project / "subsets"),
            "--metrics", str(project / "metrics-finalist")]
    for seed in ("0", "1"):
        proc = subprocess.run([*base, "--seed", seed], cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    kept = [json.loads(line)["id"] for line in (project / "subsets/mixed/search_local_s0-0.5-s0.jsonl").read_text().splitlines()]
    assert kept == summary["best_ids"]  # seed 0: the subset the search evaluated, id for id
    m0 = json.loads((project / "metrics-finalist/mixed/select-search_local_s0-0.5-s0.json").read_text())
    m1 = json.loads((project / "metrics-finalist/mixed/select-search_local_s0-0.5-s1.json").read_text())
    assert m0["same_as_searched"] is True and m0["searched_key"] == summary["best_key"]
    assert m1["same_as_searched"] == (m1["subset_key"] == summary["best_key"])
    bad = subprocess.run([*base[:8], "search_tpe_s0", *base[9:], "--seed", "0"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "search_tpe_s0" in bad.stderr and "search_local_s0" in bad.stderr


def test_the_proxy_check_scores_fixed_recipes_by_proxy_and_full_fidelity(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["search"]["check"] = {"recipes": 3, "seeds": [0, 1], "seed": 0}
    raw["evaluate"].update(n_generate=3, max_gen_toks=4, batch_size=4, max_len=256)
    params = project / "check-params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = project / "check"
    cmd = command(project, out, module="pipelines.recipes.check")
    cmd[cmd.index("--params") + 1] = str(params)
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((project / "metrics-check" / "proxy-check.json").read_text())
    assert doc["recipes"] == 3 and doc["seeds"] == [0, 1] and len(doc["per_recipe"]) == 3
    lines = (out / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 3 * (1 + 2)  # each recipe: the proxy and two full-fidelity seeds
    for m in ("exact_match", "answer_loglik"):
        a = doc["agreement"][m]
        assert a["n_recipes"] == 3 and a["n_seeds"] == 2
        assert all(len(r["full"][m]) == 2 for r in doc["per_recipe"])
    assert all(r["proxy"] < 0 for r in doc["per_recipe"])
    # a rerun finds every unit done: nothing is trained again
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0 and (out / "progress.jsonl").read_text().splitlines() == lines


def test_progress_of_other_settings_is_set_aside_and_a_line_cut_short_is_dropped(tmp_path):
    """The proxy check's resume file: lines of the same settings are kept, a last line cut
    short by a kill is dropped; progress made with other settings is renamed, not deleted."""
    from pipelines.recipes.check import append, read_progress

    out = tmp_path / "check"
    assert read_progress(out, "k1") == {}
    append(out / "progress.jsonl", {"recipe": 0, "kind": "proxy", "seed": None, "values": {"m": -1.0}})
    append(out / "progress.jsonl", {"recipe": 0, "kind": "full", "seed": 0, "values": {"m": 0.5}})
    with (out / "progress.jsonl").open("a") as f:
        f.write('{"recipe": 1, "kind": "pro')  # SIGKILL mid-write
    done = read_progress(out, "k1")
    assert set(done) == {(0, "proxy", None), (0, "full", 0)} and done[0, "full", 0]["values"] == {"m": 0.5}
    append(out / "progress.jsonl", {"recipe": 1, "kind": "proxy", "seed": None, "values": {"m": -2.0}})
    assert set(read_progress(out, "k1")) == {(0, "proxy", None), (0, "full", 0), (1, "proxy", None)}
    assert read_progress(out, "k2") == {}
    assert [p.name.startswith("progress.") and p.name.endswith(".stale.jsonl") for p in out.iterdir()
            if p.name not in ("check.key",)] == [True]
    assert (out / "check.key").read_text().strip() == "k2"
