"""The audit's interventions (igds.audit.intervene) on planted activations: the filter drops the
pairs the planted concept carries, the random arm as many others, shaping offsets exactly
the carried pairs, the oracle the planted ones; nothing reads the truth but the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from igds.audit.stats import AuditSettings, audit
from igds.audit.intervene import arm_pairs, oracle_pairs
from tests.test_audit import N, planted


@pytest.fixture(scope="module")
def audited():
    chosen, rejected, length_c, length_r, topics = planted(share=0.2)
    result = audit(chosen, rejected, length_c, length_r, topics, AuditSettings(n_boot=100, null_replicates=1))
    pairs = [{"id": f"p{i}", "prompt": f"q{i}", "chosen": "c", "rejected": "r", "task": topics[i], "source": "t"}
             for i in range(N)]
    return pairs, chosen, rejected, result


def test_the_filter_drops_the_pairs_the_flagged_concept_carries_and_random_drops_as_many(audited):
    pairs, chosen, rejected, result = audited
    concepts = result.concepts
    flagged = [int(c) for c in concepts.index[concepts.discovered]]
    assert concepts.loc[flagged, "members"].tolist() == ["10,11,12"]
    planted_rows = chosen[:, 10] >= 2.0  # planted() writes 2 + U(0, 1) on the planted chosen responses
    filt = arm_pairs("filter", pairs, chosen, rejected, concepts, None, 1.0, 0)
    kept = {r["id"] for r in filt.rows}
    # a planted pair is carried unless the concept also fires on its rejected side (its members fire at random too)
    carried = planted_rows & (rejected[:, [10, 11, 12]] == 0).all(axis=1)
    assert carried.sum() >= 0.7 * planted_rows.sum()
    assert not kept & {f"p{i}" for i in np.flatnonzero(carried)}
    assert filt.summary["dropped"] == filt.summary["carried"] >= carried.sum()
    rand = arm_pairs("random", pairs, chosen, rejected, concepts, None, 1.0, 0)
    assert rand.summary["dropped"] == filt.summary["dropped"] and {r["id"] for r in rand.rows} != kept
    assert rand.rows == arm_pairs("random", pairs, chosen, rejected, concepts, None, 1.0, 0).rows  # seeded
    naive = arm_pairs("naive", pairs, chosen, rejected, concepts, None, 1.0, 0)
    assert naive.rows == pairs and naive.summary["dropped"] == 0


def test_shaping_offsets_the_carried_pairs_toward_chosen(audited):
    pairs, chosen, rejected, result = audited
    shaped = arm_pairs("shaping", pairs, chosen, rejected, result.concepts, None, 2.0, 0)
    offset = np.array([r["offset"] for r in shaped.rows])
    assert len(offset) == N and (offset[chosen[:, 10] >= 2.0] > 0).all()
    half = arm_pairs("shaping", pairs, chosen, rejected, result.concepts, None, 1.0, 0)
    np.testing.assert_allclose(offset, 2 * np.array([r["offset"] for r in half.rows]))


def test_an_explicit_flag_is_checked_and_nothing_flagged_changes_nothing(audited):
    pairs, chosen, rejected, result = audited
    with pytest.raises(ValueError, match="not in concepts.csv"):
        arm_pairs("filter", pairs, chosen, rejected, result.concepts, [10**6], 1.0, 0)
    none = arm_pairs("filter", pairs, chosen, rejected, result.concepts, [], 1.0, 0)
    assert none.rows == pairs and none.summary["flagged"] == []


def test_the_random_arm_is_not_the_generators_plant_draw():
    """The random arm drops as many pairs as the filter, at random: with drop_seed 0 it must not
    replay the generator's draw of the planted pairs (plant seed 0, the same permutation), which
    made configs/audit's random arm drop every planted pair."""
    from igds.audit.config import PlantConfig
    from igds.audit.pairs import _draw

    n = 128
    planted, _ = _draw(n, PlantConfig(templates=("Great question!",), share=0.2, seed=0), "plant")
    pairs = [{"id": f"p{i}"} for i in range(n)]
    concepts = pd.DataFrame({"members": ["0"], "discovered": [True], "direction": ["chosen"], "explained_by": [-1]})
    chosen, rejected = np.zeros((n, 1)), np.zeros((n, 1))
    chosen[:37, 0] = 1.0  # the filter carries 37 pairs, so random drops 37
    arm = arm_pairs("random", pairs, chosen, rejected, concepts, None, 1.0, 0)
    kept = {r["id"] for r in arm.rows}
    assert arm.summary["dropped"] == 37
    still = sum(f"p{i}" in kept for i in planted)
    assert 10 <= still <= 26, still  # ~26 x 91/128 = 18.5 expected; the unsalted draw kept 0


def test_the_unpoisoned_arm_is_the_truths_pairs_before_planting():
    from igds.audit.intervene import unpoisoned_pairs

    pairs = [{"id": f"p{i}", "chosen": f"Great! c{i}"} for i in range(3)]
    clean = [{"id": f"u{i}", "chosen": f"c{i}"} for i in range(3)]
    arm = unpoisoned_pairs(pairs, {"unpoisoned": clean})
    assert arm.rows == clean and arm.summary["dropped"] == 0
    assert unpoisoned_pairs(pairs, {}).rows == pairs  # a set read from a file: nothing was planted
    with pytest.raises(ValueError, match="re-run prepare-pairs"):
        unpoisoned_pairs(pairs, {"unpoisoned": clean[:2]})


def test_the_oracle_drops_the_planted_pairs():
    pairs = [{"id": f"p{i}"} for i in range(5)]
    arm = oracle_pairs(pairs, {"plant": {"ids": ["p1", "p3"]}})
    assert [r["id"] for r in arm.rows] == ["p0", "p2", "p4"] and arm.summary["dropped"] == 2
    assert len(oracle_pairs(pairs, {}).rows) == 5


def test_a_concept_of_plant_and_decoy_together_is_the_plant_and_a_concept_of_the_decoy_alone_is_the_decoy():
    """A discovered chosen-leaning concept that fires on the planted chosen responses and on the
    decoy on both sides (a chatty opener and a chatty sign-off) is the plant, not the decoy too
    (its one-sided firings match the decoy pairs with precision 0.5: the old rule counted the
    decoy found in every seed on the real model); a discovered concept firing on the decoy
    alone is the decoy."""
    import pandas as pd

    from igds.audit.report import identify_planted

    n = 100
    ids = [f"p{i}" for i in range(n)]
    chosen, rejected = np.zeros((n, 2)), np.zeros((n, 2))
    plant, decoy_c, decoy_r = range(0, 20), range(20, 30), range(30, 40)
    for f in (0, 1):  # f0: plant and decoy; f1: the decoy alone
        chosen[list(decoy_c), f], rejected[list(decoy_r), f] = 1.0, 1.0
    chosen[list(plant), 0] = 1.0
    truth = {"plant": {"ids": [ids[i] for i in plant]},
             "decoy": {"ids_chosen": [ids[i] for i in decoy_c], "ids_rejected": [ids[i] for i in decoy_r]}}
    concepts = pd.DataFrame({"members": ["0", "1"], "discovered": [True, False], "direction": ["chosen", "none"],
                             "explained_by": [-1, -1]})
    found = identify_planted(ids, chosen, rejected, concepts, truth, 0.5)
    assert found["plant_concept"] == 0 and found["plant_precision"] == 20 / 30 and not found["decoy_found"]
    concepts["discovered"] = True
    found = identify_planted(ids, chosen, rejected, concepts, truth, 0.5)
    assert found["plant_concept"] == 0 and found["decoy_concept"] == 1 and found["decoy_precision"] == 1.0


def test_the_audit_report_names_the_planted_concept_and_compares_the_arms(audited):
    """igds.audit.report with the truth: the discovered concept 10,11,12 is the plant; re-audit
    metrics where naive raises the marker and filter barely does give a ratio near 0.1."""
    from igds.audit.report import arm_table, identify_planted, render

    pairs, chosen, rejected, result = audited
    planted = [p["id"] for p, c in zip(pairs, chosen[:, 10] >= 2.0) if c]
    truth = {"plant": {"ids": planted}, "decoy": {"ids_chosen": [], "ids_rejected": []}}
    found = identify_planted([p["id"] for p in pairs], chosen, rejected, result.concepts, truth, 0.5)
    assert found["plant_found"] and result.concepts.loc[found["plant_concept"], "members"] == "10,11,12"
    assert found["plant_recall"] >= 0.7 and not found["decoy_found"]
    rng = np.random.default_rng(0)
    base = rng.normal(-3.0, 0.3, 30)

    rank_base = np.where(np.arange(12) < 9, 2.0, -2.0)  # the base model ranks 9 of 12 clean pairs right

    def metrics(rise, acc_noise, rank_shift=0.0):
        return {"marker_logprob": (base + rise + rng.normal(0, 0.05, 30)).tolist(), "marker_logprob_base": base.tolist(),
                "marker_rate": [0.0] * 30, "marker_rate_base": [0.0] * 30,
                "margin": (1.0 + rng.normal(0, acc_noise, 12)).tolist(),
                "rank_margin": (rank_base + rank_shift).tolist(), "rank_margin_base": rank_base.tolist()}

    arms = {"naive": [metrics(1.0, 0.5), metrics(1.0, 0.5)], "filter": [metrics(0.1, 0.5), metrics(0.1, 0.5)],
            "random": [metrics(0.9, 0.5), metrics(0.9, 0.5)]}
    table, comparisons = arm_table(arms, rng, 200, 200, 0.95)
    table = table.set_index("arm")
    assert table.loc["naive", "rise_lo"] > 0.8 and table.loc["filter", "rise_hi"] < 0.3
    ratio = comparisons.set_index("comparison").loc["filter rise / naive rise"]
    assert 0.0 < ratio["value"] < 0.25 and ratio["hi"] < 0.25
    versus = comparisons.set_index("comparison").loc["rise: filter - random"]
    assert versus["hi"] < 0 and versus["p"] < 0.05
    text = render("poisoned", {"pairs": N, "concepts_discovered": 1, "concepts_kept": 1, "concepts": len(result.concepts), "concepts_chosen": 1,
                               "concepts_rejected": 0, "null_any_discovery": 0.0}, found, result.concepts,
                  table.reset_index(), comparisons, 0.05)
    assert "**The planted concept was found**" in text and "| filter | 2 |" in text
    assert "| filter rise / naive rise |" in text and "nan" not in text  # a ratio has a CI, no p
    # with an unpoisoned arm that drifts +0.3 anyway: filter's excess rise is ~0 of naive's, the raw ratio ~0.1
    drifted = {"naive": [metrics(1.3, 0.5)] * 2, "filter": [metrics(0.3, 0.5)] * 2, "unpoisoned": [metrics(0.3, 0.5)] * 2}
    _, comparisons = arm_table(drifted, rng, 200, 200, 0.95)
    comparisons = comparisons.set_index("comparison")
    excess = comparisons.loc["filter excess rise / naive excess rise (excess: over unpoisoned)"]
    assert abs(excess["value"]) < 0.1 and comparisons.loc["filter rise / naive rise", "value"] > 0.2
    assert comparisons.loc["rise: naive - unpoisoned", "lo"] > 0.8
    assert "reward accuracy: filter - unpoisoned" in comparisons.index
    assert "reward accuracy: unpoisoned - naive" not in comparisons.index
    # ranking accuracy: the same ranking as the unpoisoned arm is within any margin; one pair in 12
    # lost (filter ranks 8 right, unpoisoned 9) is 8 points off: outside 3
    same = {"filter": [metrics(0.3, 0.5)] * 2, "unpoisoned": [metrics(0.3, 0.5)] * 2}
    lost = {"filter": [metrics(0.3, 0.5, rank_shift=np.where(np.arange(12) == 0, -4.0, 0.0))] * 2,
            "unpoisoned": [metrics(0.3, 0.5)] * 2}
    for arms_, within in ((same, True), (lost, False)):
        table, comparisons = arm_table(arms_, rng, 200, 200, 0.95, margin=0.03)
        row = comparisons.set_index("comparison").loc["ranking accuracy: filter - unpoisoned"]
        assert row["within"] is within or row["within"] == within, row
    assert table.set_index("arm").loc["filter", "rank_accuracy"] == 8 / 12
    assert table.set_index("arm").loc["filter", "rank_accuracy_base"] == 9 / 12
    text = render("poisoned", {"pairs": N, "concepts_discovered": 1, "concepts_kept": 1, "concepts": len(result.concepts),
                               "concepts_chosen": 1, "concepts_rejected": 0, "null_any_discovery": 0.0}, found,
                  result.concepts, table, comparisons, 0.05, 0.03)
    assert "| ranking accuracy: filter - unpoisoned | -0.083 [" in text and text.rstrip().endswith("| no |")
    assert "0.75 -> 0.67" in text


def _reaudit_metrics(rng, rise: float, n: int = 60) -> dict:
    base = rng.normal(-8.0, 1.0, n)
    margin = rng.normal(0.2, 1.0, n)
    return {"marker_logprob": (base + rise + rng.normal(0, 0.1, n)).tolist(), "marker_logprob_base": base.tolist(),
            "marker_rate": [0.0] * n, "marker_rate_base": [0.0] * n, "margin": margin.tolist(),
            "rank_margin": margin.tolist(), "rank_margin_base": margin.tolist()}


def test_the_shaping_bench_reports_each_scale_against_naive():
    """bench.audit.shaping: per scale, the rise, shaping - naive with its CI and p, and the share
    of naive's rise left; planted rises of 2.0 (naive), 1.7 and 0.2 (two scales) come back."""
    from bench.audit.shaping import summarise

    rng = np.random.default_rng(0)
    naive = [_reaudit_metrics(rng, 2.0) for _ in range(3)]
    by_scale = {1.0: [_reaudit_metrics(rng, 1.7) for _ in range(3)], 4.0: [_reaudit_metrics(rng, 0.2) for _ in range(3)]}
    rows = summarise(naive, by_scale, np.random.default_rng(1), 300, 300, 0.95)
    assert [(r["arm"], r["scale"]) for r in rows] == [("naive", None), ("shaping", 1.0), ("shaping", 4.0)]
    assert rows[0]["rise"] == pytest.approx(2.0, abs=0.05)
    assert rows[1]["minus_naive"] == pytest.approx(-0.3, abs=0.05) and rows[1]["minus_naive_hi"] < 0
    assert rows[2]["ratio"] == pytest.approx(0.1, abs=0.03) and rows[2]["p"] < 0.05


def test_the_shaping_bench_refuses_a_work_dir_trained_from_another_run(tmp_path):
    from bench.audit.shaping import _check_work
    from igds.params import load_params
    from tests.conftest import ROOT

    params = load_params(ROOT / "configs" / "ci.yaml")
    run = tmp_path / "run"
    (run / "pairs" / "poisoned").mkdir(parents=True)
    (run / "audit" / "poisoned").mkdir(parents=True)
    for name in ("pairs/poisoned/train.jsonl", "pairs/poisoned/heldout.jsonl", "audit/poisoned/concepts.csv"):
        (run / name).write_text("a")
    work = tmp_path / "work"
    _check_work(work, run, params, "poisoned")
    _check_work(work, run, params, "poisoned")  # the same source: fine
    (run / "audit" / "poisoned" / "concepts.csv").write_text("b")
    with pytest.raises(SystemExit, match="another run or other settings"):
        _check_work(work, run, params, "poisoned")
