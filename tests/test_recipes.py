"""Recipes (igds.recipes.recipe): each operator finds what is planted in its signals, shares are
quantiles of the current subset, materialising is seeded, and a bad recipe is one line naming
its step."""

from __future__ import annotations

import numpy as np
import pytest

from igds.core.config import ConfigError
from igds.params import read_params
from igds.recipes.recipe import RecipeError, Signals, check_signals, materialise, parse_recipe, subset_key


def signals(n: int = 40, seed: int = 0, **values) -> Signals:
    rng = np.random.default_rng(seed)
    ids = [f"x{i:03d}" for i in range(n)]
    texts = [f"example {i} " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(30)) for i in range(n)]
    vals = {"igds": rng.random(n), "loss": rng.random(n), "length": np.array([len(t) for t in texts], float)}
    vals.update(values)
    return Signals(ids, vals, {"hidden": rng.normal(size=(n, 8))}, texts)


def run(process: list, sig: Signals, final_n: int, seed: int = 0, run_seed: int = 0):
    return materialise(parse_recipe({"process": process}, "recipes.t"), sig, final_n, seed, run_seed)


def test_score_filter_keeps_the_top_bottom_or_band_share_of_the_current_subset():
    n = 40
    sig = signals(n, igds=np.arange(n, dtype=float))  # x039 scores highest
    top = run([{"score_filter": {"signal": "igds", "share": 0.25}}, {"fill": {"signal": "igds"}}], sig, 10)
    assert top.ids == [f"x{i:03d}" for i in range(39, 29, -1)]
    bottom = run([{"score_filter": {"signal": "igds", "keep": "bottom", "share": 0.25}}, {"fill": {"signal": "loss"}}],
                 sig, 10)
    assert set(bottom.ids) == {f"x{i:03d}" for i in range(10)}
    band = run([{"score_filter": {"signal": "igds", "keep": "band", "band": [0.25, 0.5]}}, {"fill": {"signal": "igds"}}],
               sig, 10)
    assert set(band.ids) == {f"x{i:03d}" for i in range(10, 20)}
    # a share is of the current subset, not of the pool: half of the top half is the top quarter
    halves = run([{"score_filter": {"signal": "igds", "share": 0.5}}, {"score_filter": {"signal": "igds", "share": 0.5}},
                  {"fill": {"signal": "igds"}}], sig, 10)
    assert [t["n_out"] for t in halves.trace] == [20, 10, 10] and set(halves.ids) == set(top.ids)


def test_fill_tops_up_from_the_rest_of_the_pool_by_its_signal():
    n = 40
    loss = np.zeros(n)
    loss[[3, 5, 7]] = [3.0, 2.0, 1.0]
    sig = signals(n, igds=np.arange(n, dtype=float), loss=loss)
    out = run([{"score_filter": {"signal": "igds", "share": 0.1}}, {"fill": {"signal": "loss"}}], sig, 6)
    assert out.ids == ["x039", "x038", "x037", "x036", "x003", "x005"]  # 4 kept, the top 2 by loss added
    assert out.trace[-1] == {"step": 1, "operator": "fill", "n_in": 4, "n_out": 6}


def test_fuse_ranks_two_signals_within_the_subset():
    n = 40
    a, b = np.arange(n, dtype=float), np.arange(n, dtype=float)[::-1].copy()
    b[0] = 1000.0  # x000 is last by a and first by b: a middle rank on a 50/50 mix
    sig = signals(n, igds=a, loss=b)
    only_a = run([{"fuse": {"signals": ["igds", "loss"], "weight": 1.0, "share": 0.1}}, {"fill": {"signal": "igds"}}],
                 sig, 4)
    assert only_a.ids == ["x039", "x038", "x037", "x036"]
    z = np.zeros(n)
    z[[11, 12]] = [5.0, 4.0]
    sig_z = signals(n, igds=z, loss=z * 2)
    zsum = run([{"fuse": {"signals": ["igds", "loss"], "how": "zsum", "share": 0.05}}, {"fill": {"signal": "igds"}}],
               sig_z, 2)
    assert zsum.ids == ["x011", "x012"]


def test_exact_and_minhash_dedup_drop_planted_copies_and_keep_the_first():
    sig = signals(40)
    texts = list(sig.texts)
    texts[20] = "  " + texts[3].upper() + "  "  # an exact copy up to case and whitespace
    words = texts[8].split(" ")
    words[-1] = "changed"
    texts[30] = " ".join(words)  # a near copy: one word of 32 changed
    sig = Signals(sig.ids, sig.values, sig.spaces, texts)
    exact = run([{"dedup": {"kind": "exact"}}, {"fill": {"signal": "igds"}}], sig, 39)
    assert "x020" not in exact.ids and "x003" in exact.ids and "x030" in exact.ids
    near = run([{"dedup": {"kind": "minhash", "threshold": 0.7}}, {"fill": {"signal": "length"}}], sig, 38)
    assert {"x020", "x030"}.isdisjoint(near.ids) and {"x003", "x008"} <= set(near.ids)
    assert near.trace[0]["n_out"] == 38  # nothing else is a near-duplicate


def test_semdedup_drops_planted_near_copies_in_the_hidden_space():
    sig = signals(30)
    hidden = sig.spaces["hidden"].copy()
    hidden[25] = hidden[2] + 1e-3
    hidden[26] = hidden[2] * 3.0  # same direction, other norm: cosine 1
    sig = Signals(sig.ids, sig.values, {"hidden": hidden}, sig.texts)
    out = run([{"semdedup": {"space": "hidden", "threshold": 0.99}}, {"fill": {"signal": "igds"}}], sig, 28)
    assert out.trace[0]["n_out"] == 28 and {"x025", "x026"}.isdisjoint(out.ids) and "x002" in out.ids


def planted_clusters(sizes: tuple[int, ...]) -> Signals:
    rng = np.random.default_rng(1)
    centers = np.eye(8)[:len(sizes)] * 10
    hidden = np.concatenate([c + rng.normal(scale=0.1, size=(s, 8)) for c, s in zip(centers, sizes)])
    return Signals(
        [f"x{i:03d}" for i in range(len(hidden))], {"igds": rng.random(len(hidden)), "length": np.ones(len(hidden))},
        {"hidden": hidden}, [f"t{i}" for i in range(len(hidden))])


def test_mix_temperature_moves_cluster_quotas_from_proportional_to_equal():
    sig = planted_clusters((60, 30, 10))
    cluster = np.repeat([0, 1, 2], [60, 30, 10])

    def counts(temperature):
        out = run([{"mix": {"space": "hidden", "clusters": 3, "temperature": temperature, "share": 0.3}},
                   {"fill": {"signal": "igds"}}], sig, 30)
        return np.bincount(cluster[[int(i[1:]) for i in out.ids]], minlength=3).tolist()

    assert counts(1.0) == [18, 9, 3]  # proportional to size
    assert counts(100.0) == [10, 10, 10]  # nearly equal clusters
    a = run([{"mix": {"clusters": 3, "share": 0.3}}, {"fill": {"signal": "igds"}}], sig, 30, run_seed=0)
    b = run([{"mix": {"clusters": 3, "share": 0.3}}, {"fill": {"signal": "igds"}}], sig, 30, run_seed=1)
    assert a.ids == run([{"mix": {"clusters": 3, "share": 0.3}}, {"fill": {"signal": "igds"}}], sig, 30).ids
    assert set(a.ids) != set(b.ids)  # with no signal a training seed redraws within clusters


def test_diversify_kcenter_takes_one_example_of_each_planted_cluster():
    sig = planted_clusters((20, 20, 20))
    out = run([{"diversify": {"method": "kcenter", "share": 0.05}}, {"fill": {"signal": "igds"}}], sig, 3)
    assert sorted(int(i[1:]) // 20 for i in out.ids) == [0, 1, 2]
    zipped = run([{"diversify": {"method": "zip", "share": 0.5, "k1": 20, "k2": 5, "k3": 2}},
                  {"fill": {"signal": "igds"}}], signals(20), 10)
    assert len(zipped.ids) == 10


def test_materialising_is_deterministic_and_round_trips_through_yaml():
    sig = signals(60)
    process = [{"score_filter": {"signal": "loss", "share": 0.8}}, {"length_band": {"lo": 0.1, "hi": 0.9}},
               {"dedup": {"kind": "minhash"}}, {"diversify": {"share": 0.7}}, {"fill": {"signal": "igds"}}]
    recipe = parse_recipe({"process": process}, "recipes.t")
    first = materialise(recipe, sig, 30, seed=0)
    assert first.ids == materialise(recipe, sig, 30, seed=0).ids and len(first.ids) == 30
    again = parse_recipe(recipe.as_dict(), "recipes.t")
    assert again == recipe and materialise(again, sig, 30, seed=0).ids == first.ids
    assert subset_key(first.ids) == subset_key(list(reversed(first.ids)))


@pytest.mark.parametrize("process, message", [
    ([{"sort": {}}, {"fill": {}}], r"recipes.t.process\[0\]: unknown operator 'sort'; available: score_filter"),
    ([{"score_filter": {"share": 0}}, {"fill": {}}],
     r"recipes.t.process\[0\].score_filter.share = 0.0 is not allowed; expected a share of the current subset"),
    ([{"score_filter": {"shares": 0.5}}, {"fill": {}}], r"recipes.t.process\[0\].score_filter.shares"),
    ([{"dedup": {}}], r"recipes.t.process: the last step must be `fill`"),
    ([{"fill": {}}, {"dedup": {}}, {"fill": {}}], r"recipes.t.process\[0\]: `fill` is the last step only"),
    ([{"dedup": {}, "fill": {}}], r"recipes.t.process\[0\]: expected one `- operator: \{params\}` mapping"),
])
def test_a_bad_recipe_is_one_line_naming_its_step(process, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_recipe({"process": process}, "recipes.t")
    assert "\n" not in str(caught.value)


def test_a_step_that_empties_the_subset_is_named():
    sig = signals(20, loss=np.full(20, np.nan))  # the loss selector scored nothing
    with pytest.raises(RecipeError, match=r"recipes.t.process\[1\] \(score_filter\): the subset is empty after this "
                       r"step \(it had 10\)"):
        run([{"score_filter": {"signal": "igds", "share": 0.5}}, {"score_filter": {"signal": "loss"}},
             {"fill": {"signal": "igds"}}], sig, 5)


def test_signals_a_recipe_reads_must_be_provided():
    recipe = parse_recipe({"process": [{"semdedup": {"space": "features"}}, {"fill": {"signal": "ifd"}}]}, "recipes.t")
    with pytest.raises(ConfigError, match=r"recipes.t.process\[0\].semdedup.space = 'features' is not allowed; "
                       r"expected a space some method"):
        check_signals(recipe, {"igds", "length"}, {"hidden": "kcenter"})
    with pytest.raises(ConfigError, match=r"recipes.t.process\[1\].fill.signal = 'ifd' is not allowed"):
        check_signals(recipe, {"igds", "length"}, {"features": "igds"})
    check_signals(recipe, {"igds", "ifd", "length"}, {"features": "igds"})


def test_the_recipe_stage_writes_a_subset_finetune_takes_like_a_selection(tmp_path):
    """pipelines.recipes.recipe over planted score files: IGDS's scores and feature activations,
    k-center's hidden states, loss; the subset has the ratio's size and the select stage's file
    names, and its metrics carry the trace and the select stage's fields."""
    import dataclasses
    import json
    import math
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from igds.core.artifacts import write_jsonl
    from igds.core.runs import RunId
    from pipelines.finetune import training_records
    from tests.conftest import ROOT, task

    pool = [task(i) for i in range(30)]
    data, scores = tmp_path / "data", tmp_path / "scores"
    write_jsonl(data / "pools" / "within.jsonl", (dataclasses.asdict(r) for r in pool))
    rng = np.random.default_rng(0)
    ids = [r.id for r in pool]
    scores.mkdir()
    igds = pd.DataFrame({"id": ids, "score": np.arange(30.0)})
    for f in (7, 3, 11, 40, 2, 9, 5, 60):
        igds[f"a{f}"] = rng.random(30)
    igds.to_parquet(scores / "igds.parquet")
    kcenter = pd.DataFrame({"id": ids, "score": rng.random(30), **{f"h{j}": rng.normal(size=30) for j in range(4)}})
    kcenter.to_parquet(scores / "kcenter.parquet")
    pd.DataFrame({"id": ids, "score": rng.random(30)}).to_parquet(scores / "loss.parquet")
    raw = read_params(ROOT / "configs/ci.yaml")
    raw["data"]["pools"] = ["within"]
    raw["search"]["pools"] = []  # configs/ci searches the mixed pool
    raw["recipes"] = {"planted": {"process": [
        {"score_filter": {"signal": "igds", "share": 0.5}}, {"semdedup": {"space": "features", "threshold": 0.999}},
        {"mix": {"space": "hidden", "clusters": 2, "share": 0.9}}, {"fill": {"signal": "loss"}}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out, metrics = tmp_path / "subsets", tmp_path / "metrics"
    cmd = [sys.executable, "-m", "pipelines.subset", "--params", str(tmp_path / "params.yaml"), "--pool", "within",
           "--recipe", "planted", "--ratio", "0.4", "--seed", "1", "--data", str(data), "--scores", str(scores),
           "--out", str(out), "--metrics", str(metrics)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [json.loads(line)["id"] for line in (out / "within" / "planted-0.4-s1.jsonl").read_text().splitlines()]
    assert len(kept) == math.ceil(0.4 * 30) and len(set(kept)) == len(kept)
    top = set(ids[15:])  # the share-0.5 filter kept IGDS's top half; fill cut within it
    assert set(kept) <= top
    m = json.loads((metrics / "within" / "select-planted-0.4-s1.json").read_text())
    assert [t["operator"] for t in m["trace"]] == ["score_filter", "semdedup", "mix", "fill"]
    assert m["trace"][0]["n_out"] == 15 and m["n_selected"] == 12 and m["recipe"]["process"][0]["score_filter"]["share"] == 0.5
    assert [r.id for r in training_records(RunId("within", "planted", "0.4", 1), data, out)] == kept
    # a signal no method provides is refused before any work, naming the step
    raw["recipes"]["planted"]["process"][-1] = {"fill": {"signal": "lesss"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "subset: error: params.yaml: recipes.planted.process[3].fill.signal = 'lesss' is not allowed; expected a "
        "signal of the pool: one of " + ", ".join(sorted({*raw["methods"], "length"}))], proc.stderr
