"""Every stage end to end on the real default model (CI profile sizes): dvc repro through
sae, identify, score and select for every method on both pools (mixed and within-task),
finetune and evaluate for finetune.methods (igds, random) and full, and the report; a second
repro does nothing and a new ratio makes only select and what follows stale."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from igds.params import load_params
from pipelines.graph import write_graph
from tests import reads
from tests.conftest import ROOT, project_copy

pytestmark = pytest.mark.slow


def dvc(work, *args, env=None):
    proc = subprocess.run(["dvc", *args], cwd=work, capture_output=True, text=True,
                          env={**(env or os.environ), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_igds_stages_end_to_end(tmp_path):
    work = project_copy(tmp_path / "clone", ROOT / "configs" / "ci.yaml")
    dvc(work, "repro", env=reads.env(tmp_path / "reads"))
    # every stage read only what its dvc.yaml entry declares (a PEP 578 audit hook logged each open)
    assert reads.undeclared(work, tmp_path / "reads") == {}

    # the preference-data audit (configs/ci: one poisoned set of 24 pairs): pairs, audit, arms, DPO, re-audit
    audit = json.loads((work / "results/metrics/audit-poisoned.json").read_text())
    assert audit["pairs"] == 24 and audit["features"] == 4 * 576 and audit["null_replicates"] == 5
    assert (work / "audit/poisoned/concepts.csv").is_file() and (work / "pairs/poisoned/heldout.jsonl").is_file()
    arms = {arm: json.loads((work / f"arms/poisoned-{arm}/summary.json").read_text())
            for arm in ("naive", "filter", "random", "shaping", "oracle", "unpoisoned")}
    assert arms["naive"]["kept"] == 24 and arms["random"]["dropped"] == arms["filter"]["dropped"]
    truth = json.loads((work / "truth/pairs/poisoned.json").read_text())
    assert arms["oracle"]["dropped"] == len(truth["plant"]["ids"]) == 6
    assert arms["unpoisoned"]["kept"] == 24 and "Great question!" not in (work / "arms/poisoned-unpoisoned/pairs.jsonl").read_text()
    dpo = json.loads((work / "dpo/poisoned-naive-s0/train.json").read_text())
    assert dpo["n_pairs"] == 24 and dpo["n_steps"] == 3 and (work / "dpo/poisoned-naive-s0/adapter_config.json").is_file()
    reaudit = json.loads((work / "reaudit/poisoned-naive-s0/metrics.json").read_text())
    assert len(reaudit["margin"]) == len(reaudit["marker_logprob"]) == len(reaudit["marker_rate_base"]) == 8
    base = json.loads((work / "reaudit-base/poisoned/metrics.json").read_text())  # once per set, shared by the arms
    assert reaudit["marker_logprob_base"] == base["marker_logprob_base"] and len(reaudit["rank_margin"]) == 8
    report = (work / "results/audit/poisoned.md").read_text()
    assert report.startswith("## Audit: poisoned") and "| naive | 1 |" in report
    # the viewer and the feature cards open in headless Chromium and draw what they carry
    from tests.test_pages import drawn, offline, rendered

    page = work / "results/audit/poisoned.html"
    offline(page.read_text(encoding="utf-8"))
    dom = rendered(page, tmp_path / "chromium")
    assert dom.xpath("//table[@id='concept-table']/tbody/tr") and dom.xpath("//div[@class='pair']")
    for plot in ("forest-plot", "topics-plot", "null-plot"):
        drawn(dom, plot)
    cards = work / "features/cards.html"
    offline(cards.read_text(encoding="utf-8"))
    dom = rendered(cards, tmp_path / "chromium")
    assert dom.xpath("//h2") and dom.xpath("//span[@class='tok']")

    sae = json.loads((work / "results/metrics/sae.json").read_text())
    assert sae["l0"] == pytest.approx(32.0) and 0.5 < sae["explained_variance"] <= 1.0
    assert 0.0 < sae["ce_loss_recovered"] <= 1.0 and (work / "sae" / "cfg.json").is_file()

    features = json.loads((work / "features/features.json").read_text())
    assert features["ranking"] and all(
        f["freq_prior"] - f["freq_general"] >= 0.2 for f in features["features"])
    assert 0.0 <= features["stability"]["jaccard_top_n"] <= 1.0
    assert "⟦" in (work / "features/cards.md").read_text()  # firing tokens are marked

    pools = {name: [json.loads(line) for line in (work / f"data/pools/{name}.jsonl").read_text().splitlines()]
             for name in ("mixed", "within")}
    pool = pools["mixed"]
    scores = pd.read_parquet(work / "scores/mixed/igds.parquet")
    assert list(scores["id"]) == [r["id"] for r in pool] and scores["score"].notna().all()
    metrics = json.loads((work / "results/metrics/mixed/score-igds.json").read_text())
    assert metrics["chosen_features"] == features["ranking"][:1] and 0.0 <= metrics["auroc_on_task"] <= 1.0
    subset = [json.loads(line)["id"] for line in (work / "subsets/mixed/igds-0.5-s0.jsonl").read_text().splitlines()]
    assert len(subset) == (len(pool) + 1) // 2
    # the subset is the top of the scores: every id scored above the cut is in, none below it
    # (ties at the cut are broken by a seeded hash, igds.core.selection.tie_key)
    cut = scores["score"].sort_values(ascending=False).iloc[len(subset) - 1]
    assert set(scores["id"][scores["score"] > cut]) <= set(subset)
    assert not set(scores["id"][scores["score"] < cut]) & set(subset)
    select = json.loads((work / "results/metrics/mixed/select-igds-0.5-s0.json").read_text())
    assert 0.0 <= select["on_task_recall"] <= 1.0
    # the within-task pool: the target task only, its degraded share counted in every selection
    within = json.loads((work / "results/metrics/within/select-igds-0.5-s0.json").read_text())
    assert {r["task"] for r in pools["within"]} == {"number_sequence"} and within["degraded_share_pool"] == 0.25
    within_ids = [r["id"] for r in pools["within"]]
    assert list(pd.read_parquet(work / "scores/within/igds.parquet")["id"]) == within_ids

    methods = list(load_params(work / "params.yaml").select.methods)  # configs/ci scores and selects the default's
    assert {"igds", "random", "loss", "ifd", "zip", "kcenter", "less", "rds", "lexical"} <= set(methods)
    for name in pools:
        for method in methods + ["full"]:
            m = json.loads((work / f"results/metrics/{name}/score-{method}.json").read_text())
            assert m["wall_s"] >= 0 and m["peak_rss_bytes"] > 0, (name, method)
        for method in methods:
            assert (work / f"subsets/{name}/{method}-0.5-s0.jsonl").is_file(), (name, method)
        # full is a subset like any other (subset@<pool>-full-s0): the whole pool, in its order
        full = [json.loads(line)["id"] for line in (work / f"subsets/{name}/full-s0.jsonl").read_text().splitlines()]
        assert full == [r["id"] for r in pools[name]], name
        assert json.loads((work / f"results/metrics/{name}/select-full-s0.json").read_text())["n_selected"] == len(full)
        # configs/ci's recipe (igds.recipes.recipe) over the methods' cached scores, IGDS's feature
        # activations and k-center's hidden states: materialised at the ratio's size, not trained
        recipe = json.loads((work / f"results/metrics/{name}/select-filtered-0.5-s0.json").read_text())
        assert recipe["n_selected"] == (len(pools[name]) + 1) // 2, name
        assert [t["operator"] for t in recipe["trace"]] == ["score_filter", "semdedup", "dedup", "mix", "fill"], name

    # fine-tuning: a LoRA adapter per run, trained on exactly the subset (full: the pool), for
    # the methods of finetune.methods only (configs/ci: igds, random; the others stop at select)
    finetuned = ["igds", "random"]
    finalists = ["search_random_s0", "search_local_s0"]  # the searches' best recipes, on the mixed pool only
    for name in pools:
        assert sorted(p.name for p in (work / f"checkpoints/{name}").iterdir() if not p.name.startswith(".")) == sorted(
            [f"{m}-0.5-s0" for m in finetuned + (finalists if name == "mixed" else [])] + ["full-s0"]), name
    runs = [f"{m}-0.5-s0" for m in finetuned] + ["full-s0"]
    for name in pools:
        for run in runs:
            train = json.loads((work / f"checkpoints/{name}/{run}/train.json").read_text())
            assert (work / f"checkpoints/{name}/{run}/adapter_model.safetensors").is_file(), run
            assert train["n_examples"] == (len(pools[name]) if run == "full-s0" else len(subset)), run
            assert train["n_steps"] > 0 and all(map(math.isfinite, train["loss"])), run
            assert train["pool"] == name
    assert not (work / "checkpoints/mixed/.resume/igds-0.5-s0").exists()  # resume state removed on success

    # evaluation through lm-eval: the same eval examples for every model, raw samples kept
    eval_ids = {json.loads(line)["id"] for line in (work / "data/eval.jsonl").read_text().splitlines()}
    base = json.loads((work / "results/eval/base/metrics.json").read_text())
    for run in [f"{name}/{r}" for name in pools for r in runs] + ["base"]:
        m = json.loads((work / f"results/eval/{run}/metrics.json").read_text())
        assert set(m["per_example"]["answer_loglik"]) == eval_ids, run
        assert len(m["per_example"]["exact_match"]) == 12 and len(m["per_example"]["probe_loglik"]) > 0, run
        assert m["metrics"]["answer_loglik"] < 0 and m["feature_activation"] >= 0, run
        assert (work / f"results/eval/{run}/samples.jsonl").stat().st_size > 0, run
        if run != "base":  # a fine-tuned model is not the base model
            assert m["metrics"]["answer_loglik"] != base["metrics"]["answer_loglik"], run

    # the report: a table per pool, csv, metrics, plots
    table = (work / "results/table.md").read_text()
    assert "### Pool: mixed" in table and "### Pool: within" in table and "| degraded share |" in table
    assert "| base |" in table and "igds" in table and "vs random" in table
    csv = pd.read_csv(work / "results/table.csv")
    assert set(csv["method"]) == {"base", "full", *finetuned} and set(csv["pool"]) == set(pools)
    summary = json.loads((work / "results/metrics.json").read_text())
    assert set(summary) == set(pools) and "igds-0.5" in summary["within"] and "amplification_r" in summary["mixed"]
    assert "amplification_correlation" in json.loads((work / "results/report.json").read_text())["within"]
    for plot in ("forest", "ratio_sweep", "amplification"):
        assert (work / f"results/plots/{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    # the recipe search (configs/ci: random and local, 3 proxy fine-tunes each, on the mixed pool): the single
    # selectors' pick on val, each search's best recipe replayed by its finalist and retrained, the recipe table
    single = json.loads((work / "results/metrics/mixed/search-single.json").read_text())
    assert single["methods"] == finetuned and single["best_method"] in finetuned and single["fine_tunes"] == 2
    for solver in ("random", "local"):
        search = json.loads((work / f"results/metrics/mixed/search-{solver}-s0.json").read_text())
        assert search["fine_tunes"] == 3 and len(search["best_so_far"]) == 3, solver
        finalist = json.loads((work / f"results/metrics/mixed/select-search_{solver}_s0-0.5-s0.json").read_text())
        assert finalist["searched_key"] == search["best_key"] and finalist["n_selected"] == (len(pool) + 1) // 2
        assert finalist["same_as_searched"] is True  # training seed 0 replays the searched subset, id for id
        m = json.loads((work / f"results/eval/mixed/search_{solver}_s0-0.5-s0/metrics.json").read_text())
        assert set(m["per_example"]["answer_loglik"]) == eval_ids, solver
    recipes = (work / "results/recipes.md").read_text()
    assert recipes.startswith("### Pool: mixed") and "The proxy is not validated" in recipes
    assert "| search: local | 1 (1 search seeds x 1 training seeds) |" in recipes and "best single on val" in recipes
    assert (work / "results/plots/best_so_far.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = dvc(work, "metrics", "show")
    assert "results/metrics.json" in shown and "results/metrics/" not in shown  # stage metrics are data
    plots = json.loads(dvc(work, "plots", "show", "--json", "--split"))
    assert {"results/plots/forest.csv", "results/plots/ratio_sweep.csv", "results/plots/train_loss.csv"} <= set(plots["data"])

    # every method ran as two shard stages + merge (configs/ci scoring.shards: [0, 1]); one that
    # cannot be sharded scored the whole pool in shard 0 and left shard 1 empty
    assert len(pd.read_parquet(work / "scores/mixed/shards/less/0.parquet")) == len(pool)
    assert len(pd.read_parquet(work / "scores/mixed/shards/less/1.parquet")) == 0
    assert 0 < len(pd.read_parquet(work / "scores/mixed/shards/loss/1.parquet")) < len(pool)
    # IGDS's shards joined equal one process and
    # two data-parallel processes under accelerate (gloo on a CPU machine: `--cpu` would run
    # one process) give the same scores, bit for bit
    merged = pd.read_parquet(work / "scores/mixed/igds.parquet")
    common = ["--pool", "mixed", "--method", "igds", "--data", "data", "--sae", "sae", "--features", "features"]
    for name, launcher in (("one", [sys.executable, "-m"]),
                           ("two", ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "-m"])):
        proc = subprocess.run([*launcher, "pipelines.score", *common, "--out", str(tmp_path / f"scores-{name}"),
                               "--metrics", str(tmp_path / f"metrics-{name}")], cwd=work, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        again = pd.read_parquet(tmp_path / f"scores-{name}/igds.parquet")
        pd.testing.assert_frame_equal(again, merged, check_exact=True)
    assert json.loads((tmp_path / "metrics-two/score-igds.json").read_text())["n_processes"] == 2

    # fine-tuning data-parallel too: two processes train what one does (without LoRA dropout,
    # whose draws are per process), up to float summation order
    no_dropout = tmp_path / "no-dropout.yaml"
    no_dropout.write_text((work / "params.yaml").read_text().replace("lora_dropout: 0.05", "lora_dropout: 0.0"))
    trained = {}
    for name, launcher in (("one", [sys.executable, "-m"]),
                           ("two", ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "-m"])):
        out = tmp_path / f"checkpoints-{name}"
        proc = subprocess.run([*launcher, "pipelines.finetune", "--params", str(no_dropout), "--pool", "mixed",
                               "--method", "igds", "--ratio", "0.5", "--seed", "0", "--subsets", "subsets",
                               "--out", str(out)], cwd=work, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        trained[name] = (json.loads((out / "mixed/igds-0.5-s0/train.json").read_text()),
                         load_file(out / "mixed/igds-0.5-s0/adapter_model.safetensors"))
    (info_one, lora_one), (info_two, lora_two) = trained["one"], trained["two"]
    assert (info_one["n_processes"], info_two["n_processes"]) == (1, 2)
    assert info_two["loss"] == pytest.approx(info_one["loss"], rel=1e-4)
    assert lora_one.keys() == lora_two.keys()
    for key, value in lora_one.items():
        torch.testing.assert_close(lora_two[key], value, rtol=1e-3, atol=1e-5, msg=key)

    assert "Running stage" not in dvc(work, "repro")  # nothing changed, nothing runs
    params = (work / "params.yaml").read_text().replace("ratios: [0.5]", "ratios: [0.5, 0.25]")
    assert "ratios: [0.5, 0.25]" in params  # a ratio added: only its runs (and the report) are stale
    (work / "params.yaml").write_text(params)
    write_graph(work / "params.yaml")  # the new ratio's runs
    stale = set(json.loads(dvc(work, "status", "--json")))
    expected = ({f"subset@{name}-{m}-0.25-s0" for name in pools for m in methods}
                | {f"{stage}@{name}-{m}-0.25-s0" for name in pools for m in finetuned for stage in ("finetune", "evaluate")}
                | {f"subset@{name}-filtered-0.25-s0" for name in pools}  # the recipe is materialised per ratio
                | {"report"})  # the recipe search has its own ratio (search.ratio): not stale
    assert {s.split(":")[-1] for s in stale} == expected, sorted(stale)
