"""The report stage on planted eval results: IGDS is planted better than random, and the
table, its markdown, the summary metrics and the plots say so, with permutation p-values
below the bootstrap's floor, the variance sources of each row and the share of truncated
generations; with two candidate pools, each pool's own difference and degraded share are
reported under its name; bad inputs are named."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

from igds.core.config import DataConfig, ReportConfig, SourceConfig, SplitsConfig
from igds.params import Params
from igds.core.data import DataError
from igds.core.report import build_table, parse_eval_run, render_markdown
from pipelines.report import read_selection, run

EVAL_IDS = [f"e{i}" for i in range(80)]
PROBE_IDS = [f"p{i}" for i in range(30)]
# planted effect on every metric (igds clearly above random) and on the feature activation
EFFECT = {"base": -0.3, "full": 0.1, "random": 0.0, "igds": 0.4, "loss": -0.05}
AMPLIFY = {"base": 0.0, "full": 0.1, "random": 0.05, "igds": 0.6, "loss": 0.02}


def eval_run(method: str, ratio: float | None, seed: int | None, rng: np.random.Generator, pool: str = "mixed",
             effects: dict | None = None) -> dict:
    difficulty = np.random.default_rng(123).normal(size=len(EVAL_IDS))  # shared by every run: paired
    effect = (effects or EFFECT)[method] + 0.05 * (seed or 0)
    answer = -1.0 + 0.5 * difficulty + effect + rng.normal(0.0, 0.2, len(EVAL_IDS))
    exact = (rng.random(len(EVAL_IDS)) < 0.3 + effect).astype(float)
    probe = -1.5 + effect + rng.normal(0.0, 0.3, len(PROBE_IDS))
    per_example = {"exact_match": dict(zip(EVAL_IDS, exact.tolist())),
                   "answer_loglik": dict(zip(EVAL_IDS, answer.tolist())),
                   "probe_loglik": dict(zip(PROBE_IDS, probe.tolist()))}
    name = "base" if method == "base" else f"full-s{seed}" if method == "full" else f"{method}-{ratio:g}-s{seed}"
    return {"run": name, "method": method, "ratio": ratio, "seed": seed, **({} if method == "base" else {"pool": pool}),
            "n_train": 0 if method == "base" else round(398 * ratio),
            "metrics": {m: float(np.mean(list(v.values()))) for m, v in per_example.items()},
            "per_example": per_example,
            "feature_activation": 1.2 * (1.0 + AMPLIFY[method]) + float(rng.normal(0.0, 0.01)),
            "train_wall_s": 0.0 if method == "base" else 100.0, "eval_wall_s": 50.0,
            "gen_hit_limit_share": 0.05 + 0.1 * (seed or 0),
            "train_loss": [] if method == "base" else [2.0, 1.5, 1.2]}


def write_fixture(root, seeds=(0,), ratios=(0.5,), pool="mixed", effects=None, degraded=None):
    """results/eval/base (if not there yet), results/eval/<pool>/<run> and results/metrics/<pool>
    as the stages write them. `effects`: method -> planted effect (default EFFECT); `degraded`:
    method -> degraded share of its selection, and "pool" -> the pool's degraded share."""
    rng = np.random.default_rng(0)
    base = eval_run("base", None, None, rng)
    runs = [eval_run("full", 1.0, s, rng, pool, effects) for s in seeds]
    runs += [eval_run(m, r, s, rng, pool, effects) for m in ("random", "igds", "loss") for r in ratios for s in seeds]
    if not (root / "eval" / "base").exists():
        runs.append(base)
    for raw in runs:
        path = root / "eval" / ("base" if raw["method"] == "base" else f"{pool}/{raw['run']}") / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(raw))
    metrics = root / "metrics" / pool
    metrics.mkdir(parents=True)
    for m, wall_s in (("igds", 21.0), ("loss", 300.0), ("random", 0.01), ("full", 0.01)):
        (metrics / f"score-{m}.json").write_text(json.dumps({"method": m, "wall_s": wall_s}))
    for m, recall in (("igds", 0.9), ("loss", 0.4), ("random", 0.5)):
        for r in ratios:
            for s in seeds:  # one per training seed; random redraws its subset per seed
                spread = 0.02 * (s - np.mean(seeds))
                extra = {} if degraded is None else {"degraded_share_selected": degraded[m] + spread,
                                                     "degraded_share_pool": degraded["pool"]}
                write_select(metrics, m, r, s, recall * r / 0.5 + spread,
                             selection_seed=s if m == "random" else None, **extra)
    for s in seeds:  # full's subset (subset@<pool>-full-s<seed>): the whole pool
        extra = {} if degraded is None else {"degraded_share_selected": degraded["pool"],
                                             "degraded_share_pool": degraded["pool"]}
        path = metrics / f"select-full-s{s}.json"
        path.write_text(json.dumps({"method": "full", "ratio": 1.0, "seed": s, "selection_seed": None,
                                    "selection_randomness": "none", "n_pool": 398, "n_selected": 398,
                                    "on_task_recall": 1.0, "on_task_share_selected": 0.5, **extra}))


def write_select(metrics, method, ratio, seed, recall, selection_seed=None, spelled=None, **extra):
    """results/metrics/<pool>/select-<method>-<ratio>-s<seed>.json as the select stage writes it."""
    path = metrics / f"select-{method}-{spelled or f'{ratio:g}'}-s{seed}.json"
    path.write_text(json.dumps(
        {"method": method, "ratio": ratio, "seed": seed, "selection_seed": selection_seed,
         "selection_randomness": "per_seed" if selection_seed is not None else "none",
         "n_pool": 398, "n_selected": round(398 * ratio), "on_task_recall": recall,
         "on_task_share_selected": 0.5, **extra}))


def params_for(pools=("mixed",), n_boot=300):
    """Params with data.pools set (the report reads nothing else of data:); one pool: no data section."""
    if pools == ("mixed",):
        return Params(report=ReportConfig(n_boot=n_boot))
    source = SourceConfig(kind="jsonl", path="unused.jsonl")
    return Params(report=ReportConfig(n_boot=n_boot),
                  data=DataConfig(target_task="t", splits=SplitsConfig(source, source, source, source), pools=pools))


def run_report(root, n_boot=300, pools=("mixed",)):
    args = argparse.Namespace(eval=root / "eval", metrics=root / "metrics", out=root / "results",
                              only_params_runs=False)
    run(params_for(pools, n_boot), args)
    return root / "results"


def no_nan(path):
    def refuse(name):
        raise AssertionError(f"{path} has {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def row(table, method, ratio=None, pool="mixed"):
    sel = table["method"] == method
    if "pool" in table.columns:
        sel &= table["pool"] == pool
    if ratio is not None:
        sel &= table["ratio"] == ratio
    (i,) = np.flatnonzero(sel)
    return table.iloc[i]


def test_report_finds_the_planted_igds_gain(tmp_path):
    write_fixture(tmp_path)
    out = run_report(tmp_path)
    for name in ("table.md", "table.csv", "metrics.json", "report.json", "plots/ratio_sweep.csv",
                 "plots/forest.csv", "plots/train_loss.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("forest", "ratio_sweep", "amplification"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name

    table = pd.read_csv(out / "table.csv")
    assert list(table["method"]) == ["base", "igds", "full", "random", "loss"]  # params.methods order (here: the defaults)
    assert table.columns[0] == "pool" and set(table["pool"]) == {"mixed"}
    assert table["degraded_share"].isna().all()  # no degraded examples in this pool
    igds = row(table, "igds", 0.5)
    assert igds["answer_loglik_vs_random"] > 0 and igds["answer_loglik_vs_random_p"] < 0.05
    assert igds["answer_loglik_vs_random_lo"] > 0
    assert igds["answer_loglik_lo"] < igds["answer_loglik"] < igds["answer_loglik_hi"]
    assert igds["feature_amplification"] == pytest.approx(0.6, abs=0.05)
    assert igds["task_gain"] == pytest.approx(0.7, abs=0.1)
    assert igds["on_task_recall"] == 0.9 and igds["selection_s"] == 21.0

    base = row(table, "base")
    diffs = [c for c in table.columns if "_vs_" in c]
    assert base[diffs].isna().all() and math.isnan(base["feature_amplification"])
    assert math.isnan(base["on_task_recall"]) and math.isnan(base["selection_s"])
    full = row(table, "full")
    assert full["on_task_recall"] == 1.0 and math.isnan(full["answer_loglik_vs_full"])
    assert math.isnan(full["answer_loglik_vs_random"])  # no random at ratio 1
    assert math.isnan(row(table, "random")["answer_loglik_vs_random"])
    for c in [c for c in table.columns if c.endswith("_p")]:
        raw, adjusted = table[c].to_numpy(), table[f"{c}_holm"].to_numpy()
        assert (np.isnan(raw) == np.isnan(adjusted)).all()
        assert (adjusted[~np.isnan(raw)] >= raw[~np.isnan(raw)]).all()

    # the headline DVC metrics: the task metric per row, IGDS's differences, the correlation
    headline = json.loads((out / "metrics.json").read_text())
    assert list(headline) == ["mixed"]
    headline = headline["mixed"]
    assert set(headline) == {"answer_loglik", "igds-0.5", "amplification_r"}
    assert set(headline["answer_loglik"]) == {"base", "full-1", "igds-0.5", "loss-0.5", "random-0.5"}
    assert headline["answer_loglik"]["base"] == pytest.approx(base["answer_loglik"], rel=1e-5)
    assert set(headline["igds-0.5"]) == {"vs_random", "vs_random_p_holm", "vs_full", "vs_full_p_holm"}
    assert headline["igds-0.5"]["vs_random"] == pytest.approx(igds["answer_loglik_vs_random"], rel=1e-5)
    n_columns = len(headline["answer_loglik"]) + len(headline["igds-0.5"]) + 1
    assert n_columns == 10  # what `dvc metrics show` prints; the rest is report.json
    summary = no_nan(out / "report.json")["mixed"]
    assert set(summary) == {"base", "full-1", "igds-0.5", "loss-0.5", "random-0.5", "amplification_correlation"}
    assert summary["igds-0.5"]["answer_loglik_vs_random"] > 0
    assert summary["igds-0.5"]["answer_loglik_vs_random_lo"] > 0
    corr = summary["amplification_correlation"]
    assert corr["n"] == 4 and corr["pearson_r"] > 0.5 and headline["amplification_r"] == corr["pearson_r"]
    forest = pd.read_csv(out / "plots/forest.csv")
    assert set(forest["metric"]) == {"answer_loglik"} and "mixed: igds-0.5 − random" in set(forest["row"])
    assert list(forest.columns[:2]) == ["pool", "row"] and set(forest["pool"]) == {"mixed"}
    assert len(forest) == 2 * 2 + 1  # igds and loss vs random and full, random vs full
    loss = pd.read_csv(out / "plots/train_loss.csv")
    assert list(loss.columns) == ["pool", "run", "step", "loss"] and set(loss["run"]) == {
        "mixed/full-s0", "mixed/random-0.5-s0", "mixed/igds-0.5-s0", "mixed/loss-0.5-s0"}
    assert list(loss[loss["run"] == "mixed/igds-0.5-s0"]["step"]) == [1, 2, 3]

    md = (out / "table.md").read_text()
    assert md.startswith("### Pool: mixed\n") and "degraded share" not in md
    assert "percentile bootstrap, B = 300" in md and "Holm" in md and "| igds | 0.5 | 1 | 199 |" in md
    assert "sign-flip permutation test" in md and "10000 random sign flips" in md
    # each difference states the smallest difference it could detect (80% power), wider after Holm
    assert (igds["answer_loglik_vs_random_mdd_holm"] > igds["answer_loglik_vs_random_mdd"]
            > (igds["answer_loglik_vs_random_hi"] - igds["answer_loglik_vs_random_lo"]) / 2)
    assert "MDD (after Holm)" in md and "80% power" in md and " MDD " in md
    sweep = pd.read_csv(out / "plots/ratio_sweep.csv")
    assert list(sweep.columns) == ["pool", "method", "ratio", "metric", "mean", "lo", "hi"] and len(sweep) == 4 * 3
    assert set(sweep["method"]) == {"mixed: full", "mixed: igds", "mixed: random", "mixed: loss"}


def test_report_with_two_seeds_and_two_ratios(tmp_path):
    write_fixture(tmp_path, seeds=(0, 1), ratios=(0.25, 0.5))
    out = run_report(tmp_path)
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 2 + 3 * 2
    assert list(table["n_seeds"]) == [1] + [2] * 7
    for ratio in (0.25, 0.5):
        igds = row(table, "igds", ratio)
        assert igds["answer_loglik_vs_random"] > 0 and igds["answer_loglik_vs_random_p_holm"] < 0.05
        assert row(table, "loss", ratio)["on_task_recall"] == pytest.approx(0.4 * ratio / 0.5)
    assert no_nan(out / "report.json")["mixed"]["amplification_correlation"]["n"] == 2 + 3 * 2 * 2
    assert (out / "plots/ratio_sweep.png").read_bytes().startswith(b"\x89PNG")


def test_mismatched_example_ids_name_the_file(tmp_path):
    write_fixture(tmp_path)
    path = tmp_path / "eval" / "mixed" / "loss-0.5-s0" / "metrics.json"
    raw = json.loads(path.read_text())
    raw["per_example"]["answer_loglik"]["e-unknown"] = raw["per_example"]["answer_loglik"].pop("e3")
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"loss-0\.5-s0/metrics\.json: per_example\.answer_loglik ids differ"):
        run_report(tmp_path)


def test_missing_or_malformed_eval_files_are_named(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(DataError, match=r"eval/base/metrics\.json not found; run `dvc repro evaluate@base`"):
        run_report(tmp_path)
    write_fixture(tmp_path / "x")
    with pytest.raises(DataError, match=r"no .*eval/within/<run>/metrics\.json found; run the evaluate stages "
                                        r"of pool 'within' first \(`dvc repro`\)"):
        run_report(tmp_path / "x", pools=("mixed", "within"))  # a pool with no runs on disk
    path = tmp_path / "x" / "eval" / "mixed" / "igds-0.5-s0" / "metrics.json"
    raw = json.loads(path.read_text())
    raw["pool"] = "within"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"igds-0\.5-s0/metrics\.json: pool 'within' but it is in .*eval/mixed"):
        run_report(tmp_path / "x")
    del raw["pool"]  # written before pools were named: read from its folder
    path.write_text(json.dumps(raw))
    assert (run_report(tmp_path / "x") / "table.csv").is_file()
    path.write_text("{broken")
    with pytest.raises(DataError, match=r"igds-0\.5-s0/metrics\.json: not valid JSON"):
        run_report(tmp_path / "x")
    with pytest.raises(DataError, match="somewhere.json: missing key"):
        parse_eval_run({"run": "x"}, "somewhere.json")


def test_missing_reference_gives_nan_not_an_error():
    rng = np.random.default_rng(0)
    runs = [parse_eval_run(eval_run(m, r, s, rng), f"{m}.json")
            for m, r, s in (("base", None, None), ("igds", 0.5, 0), ("igds", 0.5, 1))]
    table = build_table(runs, {}, np.random.default_rng(1), n_boot=200)
    assert list(table["method"]) == ["base", "igds"] and list(table["n_seeds"]) == [1, 2]
    assert table.filter(like="_vs_").isna().all().all()
    assert table.loc[1, "task_gain"] > 0 and math.isnan(table.loc[1, "on_task_recall"])


def test_the_report_reads_exactly_the_runs_params_ask_for(tmp_path):
    from igds.core.config import FinetuneConfig, SelectConfig
    from pipelines.report import expected_runs, read_eval_runs

    params = Params(select=SelectConfig(ratios=(0.5,), methods=("igds", "random")),
                    finetune=FinetuneConfig(seeds=(0,)))
    assert expected_runs(params) == ["full-s0", "igds-0.5-s0", "random-0.5-s0"]  # in each pool; base is shared
    write_fixture(tmp_path)
    names = [r.run for r in read_eval_runs(tmp_path / "eval" / "mixed", expected_runs(params))]
    assert names == ["full-s0", "igds-0.5-s0", "random-0.5-s0"]  # loss-0.5-s0 is on disk, not asked for
    params = Params(select=SelectConfig(ratios=(0.25,), methods=("igds",)))
    with pytest.raises(DataError, match="mixed/igds-0.25-s0/metrics.json not found"):
        read_eval_runs(tmp_path / "eval" / "mixed", expected_runs(params))
    # selected by loss too, fine-tuned on igds only: loss's runs are not asked for
    params = Params(select=SelectConfig(ratios=(0.5,), methods=("igds", "loss")),
                    finetune=FinetuneConfig(seeds=(0,), methods=("igds",)))
    assert expected_runs(params) == ["full-s0", "igds-0.5-s0"]


def test_p_values_are_not_the_bootstrap_floor():
    # the old p was read off the bootstrap: >= 2 / (n_boot + 1) = 0.00995 here, and Holm multiplied it
    rng = np.random.default_rng(0)
    runs = [parse_eval_run(eval_run(m, r, 0, rng), f"{m}.json") for m, r in (("random", 0.5), ("igds", 0.5))]
    table = build_table(runs, {}, np.random.default_rng(1), n_boot=200, n_perm=10000)
    igds = row(table, "igds")
    assert igds["answer_loglik_vs_random_p"] < 1e-3 and igds["answer_loglik_vs_random_p_holm"] < 2 / 201
    assert igds["answer_loglik_vs_random_n_perm"] == 10000 and igds["answer_loglik_vs_random_p_exact"] is False
    md = render_markdown(table, n_boot=200)
    # the Monte Carlo floor 2 / 10001 is an upper bound and shown as one, Holm's multiple of it too
    assert "10000 random sign flips" in md and "p≤2.0e-04 (Holm p≤" in md and "p=2.0e-04" not in md
    table.loc[table["method"] == "igds", "answer_loglik_vs_random_p"] = 0.03  # off the floor: a plain p
    assert "p=0.030" in render_markdown(table, n_boot=200)


def test_variance_column_names_the_sources(tmp_path):
    write_fixture(tmp_path, seeds=(0, 1), ratios=(0.5,))
    table = pd.read_csv(run_report(tmp_path) / "table.csv")
    assert row(table, "base")["variance"] == "eval examples"
    assert row(table, "full")["variance"] == "eval examples + training seeds"
    assert row(table, "igds")["variance"] == "eval examples + training seeds"  # deterministic: one subset
    assert row(table, "random")["variance"] == "eval examples + training seeds + selection"
    md = (tmp_path / "results" / "table.md").read_text()
    assert "| variance |" in md and "| eval examples + training seeds + selection |" in md
    assert "variance: the sources of variation each row's intervals carry" in md

    write_fixture(tmp_path / "one", seeds=(0,))
    table = pd.read_csv(run_report(tmp_path / "one") / "table.csv")
    assert set(table["variance"]) == {"eval examples"}  # one seed: one training run, one subset


def test_selection_is_read_per_seed_from_exactly_its_runs_files(tmp_path):
    """Each seed's select-<stem>.json as the run identity names it; files of other seeds, ratios,
    spellings or names in the same folder are never read; a missing one names its stage."""
    metrics = tmp_path / "mixed"
    metrics.mkdir()
    write_select(metrics, "random", 0.5, 0, 0.4, selection_seed=0)
    write_select(metrics, "random", 0.5, 1, 0.6, selection_seed=1)
    write_select(metrics, "random", 0.5, 7, 0.0, selection_seed=7)  # a seed params no longer ask for
    write_select(metrics, "random", 0.25, 0, 0.0, selection_seed=0)
    write_select(metrics, "random", 0.5, 1, 0.0, selection_seed=1, spelled="0.50")  # not the run identity's name
    (metrics / "select-random-0.5.json").write_text(json.dumps({"method": "random", "ratio": 0.5,
                                                                "on_task_recall": 0.0}))  # stale, unseeded name
    info = read_selection(metrics, "random", 0.5, seeds={0, 1})
    assert info.on_task_recall == pytest.approx(0.5) and info.selection_seeds == (0, 1)
    assert math.isnan(info.selection_s)  # no score file
    write_select(metrics, "igds", 0.5, 0, 0.8)
    write_select(metrics, "igds", 0.5, 1, 0.8)
    igds = read_selection(metrics, "igds", 0.5, seeds={0, 1})
    assert igds.on_task_recall == pytest.approx(0.8) and igds.selection_seeds == ()  # deterministic
    with pytest.raises(DataError, match=r"select-loss-0\.5-s0\.json not found; run `dvc repro subset@mixed-loss-0\.5-s0`"):
        read_selection(metrics, "loss", 0.5, seeds={0})
    write_select(metrics, "loss", 0.5, 0, 0.3, selection_seed="zero")
    with pytest.raises(DataError, match=r"select-loss-0\.5-s0\.json: selection_seed = 'zero'"):
        read_selection(metrics, "loss", 0.5, seeds={0})
    (metrics / "select-zip-0.5-s0.json").write_text((metrics / "select-igds-0.5-s0.json").read_text())
    with pytest.raises(DataError, match=r"select-zip-0\.5-s0\.json: not zip at 0\.5, seed 0"):
        read_selection(metrics, "zip", 0.5, seeds={0})


def test_full_reads_its_own_selection_not_another_runs_file(tmp_path):
    """The full row's damaged share is its own subset's (select-full-s<seed>.json): a pool
    without damaged examples reports none, even beside another profile's or an older run's
    select file that has one (issue 32: it took the first file that had a share)."""
    write_fixture(tmp_path, seeds=(0,))
    write_select(tmp_path / "metrics" / "mixed", "ifd", 0.5, 0, 0.3, degraded_share_selected=0.1,
                 degraded_share_pool=0.30)  # left over: a method this report does not have
    table = pd.read_csv(run_report(tmp_path) / "table.csv")
    assert table["degraded_share"].isna().all() and row(table, "full")["on_task_recall"] == 1.0


def test_generations_at_the_token_limit_are_shown(tmp_path):
    write_fixture(tmp_path, seeds=(0, 1))
    out = run_report(tmp_path)
    table = pd.read_csv(out / "table.csv")
    assert row(table, "igds")["gen_hit_limit_share"] == pytest.approx(0.1)  # mean of 0.05 and 0.15
    assert row(table, "base")["gen_hit_limit_share"] == pytest.approx(0.05)
    md = (out / "table.md").read_text()
    assert "gen. at token limit" in md and "| 10.0% |" in md
    assert no_nan(out / "report.json")["mixed"]["igds-0.5"]["gen_hit_limit_share"] == pytest.approx(0.1)

    raw = eval_run("igds", 0.5, 0, np.random.default_rng(0))
    del raw["gen_hit_limit_share"]
    assert math.isnan(parse_eval_run(raw, "old.json").gen_hit_limit_share)  # written before it was reported
    raw["gen_hit_limit_share"] = 1.5
    with pytest.raises(DataError, match=r"bad.json: gen_hit_limit_share = 1.5 is not a share"):
        parse_eval_run(raw, "bad.json")


def test_each_pool_is_reported_with_its_own_gain_and_degraded_share(tmp_path):
    # within: igds far above random on every eval example; mixed: igds below random
    within = {**EFFECT, "igds": 3.0}
    mixed = {**EFFECT, "igds": -0.5}
    write_fixture(tmp_path, seeds=(0, 1), pool="mixed", effects=mixed)
    write_fixture(tmp_path, seeds=(0, 1), pool="within", effects=within,
                  degraded={"pool": 0.25, "igds": 0.05, "random": 0.25, "loss": 0.4})
    def answers(pool, run):
        return json.loads((tmp_path / "eval" / pool / run / "metrics.json").read_text())["per_example"]["answer_loglik"]

    for s in (0, 1):  # the planted difference, example by example
        igds, random = answers("within", f"igds-0.5-s{s}"), answers("within", f"random-0.5-s{s}")
        assert all(igds[i] > random[i] for i in EVAL_IDS)
        igds, random = answers("mixed", f"igds-0.5-s{s}"), answers("mixed", f"random-0.5-s{s}")
        assert not all(igds[i] > random[i] for i in EVAL_IDS)
    out = run_report(tmp_path, pools=("mixed", "within"))

    table = pd.read_csv(out / "table.csv")
    assert table.columns[0] == "pool" and list(dict.fromkeys(table["pool"])) == ["mixed", "within"]
    for pool in ("mixed", "within"):
        assert list(table[table["pool"] == pool]["method"]) == ["base", "igds", "full", "random", "loss"]
        # the shared base row is the same model in both pools
        assert row(table, "base", pool=pool)["answer_loglik"] == pytest.approx(row(table, "base")["answer_loglik"])
    assert row(table, "igds", pool="within")["answer_loglik_vs_random"] > 2.5
    assert row(table, "igds", pool="within")["answer_loglik_vs_random_lo"] > 0
    assert row(table, "igds", pool="mixed")["answer_loglik_vs_random_hi"] < 0

    # degraded share kept: mean over seeds (0.04 and 0.06); full keeps the pool's share; none in mixed
    assert row(table, "igds", pool="within")["degraded_share"] == pytest.approx(0.05)
    assert row(table, "random", pool="within")["degraded_share"] == pytest.approx(0.25)
    assert row(table, "loss", pool="within")["degraded_share"] == pytest.approx(0.4)
    assert row(table, "full", pool="within")["degraded_share"] == pytest.approx(0.25)
    assert math.isnan(row(table, "base", pool="within")["degraded_share"])
    assert table[table["pool"] == "mixed"]["degraded_share"].isna().all()

    headline = json.loads((out / "metrics.json").read_text())
    assert set(headline) == {"mixed", "within"}
    assert headline["within"]["igds-0.5"]["vs_random"] > 0 > headline["mixed"]["igds-0.5"]["vs_random"]
    assert headline["within"]["answer_loglik"]["base"] == headline["mixed"]["answer_loglik"]["base"]
    assert all(len(h) == 3 for h in headline.values())  # compact: the task metric per row, igds, the r
    summary = no_nan(out / "report.json")
    assert set(summary) == {"mixed", "within"}
    assert summary["within"]["full-1"]["degraded_share"] == 0.25
    assert summary["mixed"]["full-1"]["degraded_share"] is None
    assert summary["within"]["amplification_correlation"]["n"] == 2 + 3 * 2  # per pool: its own runs

    md = (out / "table.md").read_text()
    assert md.count("### Pool: ") == 2 and md.index("### Pool: mixed") < md.index("### Pool: within")
    mixed_md, within_md = md.split("### Pool: within")
    assert "degraded share" not in mixed_md.split("### How to read")[0]  # no degraded examples: no column
    assert "| degraded share |" in within_md and "| igds | 0.5 | 2 | 199 |" in within_md and "| 0.05 |" in within_md
    assert md.count("percentile bootstrap, B = 300") == 1  # how to read the tables: once, at the end

    forest = pd.read_csv(out / "plots/forest.csv")
    assert forest["row"].is_unique  # the DVC template's y: one row per label
    assert {"mixed: igds-0.5 − random", "within: igds-0.5 − random"} <= set(forest["row"])
    sweep = pd.read_csv(out / "plots/ratio_sweep.csv")
    assert {"mixed: igds", "within: igds"} <= set(sweep["method"]) and set(sweep["pool"]) == {"mixed", "within"}
    loss = pd.read_csv(out / "plots/train_loss.csv")
    assert {"mixed/igds-0.5-s1", "within/igds-0.5-s1"} <= set(loss["run"])
    for name in ("forest", "ratio_sweep", "amplification"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
