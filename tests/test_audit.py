"""The audit's statistics (igds.audit.stats) on planted activations: a concept written into a share
of the chosen responses is found, as one concept of its co-firing features, and a decoy on
both sides equally is not; the tests agree with scipy's; nulls stay quiet."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from igds.audit.stats import AuditSettings, audit, cluster_features, sign_test, wilcoxon

N, F = 240, 300
PLANT, DECOY = (10, 11, 12), (40, 41)


def noise(rng, n=N, f=F, rate=0.05):
    return rng.exponential(1.0, (n, f)) * (rng.random((n, f)) < rate)


def planted(seed=0, share=0.2, topics_only=None):
    rng = np.random.default_rng(seed)
    chosen, rejected = noise(rng), noise(rng)
    topics = np.where(rng.random(N) < 0.5, "algebra", "sequences")
    plant = rng.random(N) < share
    if topics_only is not None:
        plant &= topics == topics_only
    for f in PLANT:  # co-firing features: one concept
        chosen[plant, f] = 2.0 + rng.random(plant.sum())
    decoy = np.flatnonzero(rng.random(N) < 0.2)
    side = np.arange(len(decoy)) < len(decoy) // 2
    for f in DECOY:
        chosen[decoy[side], f] = 2.0 + rng.random(side.sum())
        rejected[decoy[~side], f] = 2.0 + rng.random((~side).sum())
    lengths = rng.integers(40, 90, N)
    return chosen, rejected, lengths, lengths.copy(), topics


def test_a_planted_concept_is_found_as_one_concept_and_the_decoy_is_not():
    result = audit(*planted(), settings=AuditSettings(n_boot=200, null_replicates=5))
    found = result.concepts[result.concepts.discovered]
    assert found["members"].tolist() == ["10,11,12"], found
    row = found.iloc[0]
    assert row.badge == "chosen" and row.direction == "chosen" and row.split_half_agree
    assert row.chosen_share_lo > 0.5 and row.mean_diff_lo > 0  # members also fire at random (5% each)
    decoy = result.concepts[result.concepts["members"] == "40,41"].iloc[0]
    assert not decoy.discovered and decoy.badge == "both" and decoy.chosen_share_lo < 0.5 < decoy.chosen_share_hi
    features = result.features
    assert set(features.index[features.discovered]) == set(PLANT)


def test_without_a_plant_nothing_is_found_and_sign_flips_stay_quiet():
    discoveries = 0
    for seed in range(10):
        result = audit(*planted(seed, share=0.0), settings=AuditSettings(n_boot=100, null_replicates=10, seed=seed))
        discoveries += int(result.concepts.discovered.any())
        assert (result.null.discoveries > 0).mean() <= 0.2
    assert discoveries <= 1


def test_the_prompt_conditioned_view_finds_the_topic_that_carries_the_plant():
    result = audit(*planted(share=0.5, topics_only="algebra"), settings=AuditSettings(n_boot=100, null_replicates=2))
    concept = int(result.concepts.index[result.concepts["members"] == "10,11,12"][0])
    cells = result.topics[result.topics.concept == concept].set_index("topic")
    assert cells.loc["algebra", "q_sign"] < 0.05 and cells.loc["sequences", "q_sign"] > 0.05


def test_the_length_controlled_test_explains_away_a_length_effect():
    rng = np.random.default_rng(3)
    length_c, length_r = rng.integers(40, 90, N), rng.integers(40, 90, N)
    chosen, rejected = noise(rng), noise(rng)
    chosen[:, 5], rejected[:, 5] = 0.05 * length_c + 1, 0.05 * length_r + 1  # a length feature
    chosen[:, 6], rejected[:, 6] = 3.0 + rng.normal(0, 0.1, N), 2.0 + rng.normal(0, 0.1, N)  # not a length one
    length_c = length_c + 10  # chosen responses are longer, and the length feature follows
    chosen[:, 5] += 0.5 + rng.normal(0, 0.2, N)
    rejected[:, 5] += rng.normal(0, 0.2, N)
    result = audit(chosen, rejected, length_c, length_r, ["t"] * N, AuditSettings(n_boot=100, null_replicates=1))
    f = result.features
    assert f.loc[5, "p_wilcoxon"] < 1e-6 and f.loc[5, "p_wilcoxon_length"] > 0.05
    assert f.loc[6, "p_wilcoxon_length"] < 1e-6


@pytest.mark.parametrize("n_rows", [6, 30, 140])
def test_the_vectorised_tests_equal_scipys(n_rows):
    rng = np.random.default_rng(n_rows)
    d = rng.normal(0.3, 1.0, (n_rows, 60)) * (rng.random((n_rows, 60)) < 0.6)
    expected = []
    for j in range(d.shape[1]):
        x = d[:, j][d[:, j] != 0]
        expected.append(1.0 if len(x) == 0 else stats.wilcoxon(x, method="exact" if len(x) <= 50 else "approx",
                                                               correction=True).pvalue)
    np.testing.assert_allclose(wilcoxon(d), expected, rtol=1e-12, atol=1e-14)
    fires_c, fires_r = rng.random((n_rows, 60)) < 0.3, rng.random((n_rows, 60)) < 0.2
    only_c, only_r, p = sign_test(fires_c, fires_r)
    for j in range(60):
        n = only_c[j] + only_r[j]
        assert p[j] == pytest.approx(stats.binomtest(int(only_c[j]), int(n)).pvalue if n else 1.0, rel=1e-12)


def test_features_that_co_fire_form_one_concept():
    rng = np.random.default_rng(0)
    fires = rng.random((200, 20)) < 0.1
    on = rng.random(200) < 0.3
    fires[:, 3] = fires[:, 7] = fires[:, 9] = on
    fires[:, 19] = False  # never fires: not in any concept
    concepts = cluster_features(fires, min_fires=5, min_jaccard=0.5)
    assert [3, 7, 9] in concepts and all(19 not in c for c in concepts)
    assert sorted(f for c in concepts for f in c) == [f for f in range(19)]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n_pairs, n_features"):
        audit(np.zeros((3, 2)), np.zeros((3, 3)), [1, 2, 3], [1, 2, 3], ["a"] * 3)
    with pytest.raises(ValueError, match="3 pairs"):
        audit(np.zeros((3, 2)), np.zeros((3, 2)), [1, 2], [1, 2, 3], ["a"] * 3)


def test_the_audit_of_encoded_pairs_finds_the_planted_opener_through_the_model_and_sae(planted, tok):
    """End to end on a tiny model: '#' (only in the planted opener) carries direction u and '@'
    (only in the decoy) direction w; the SAE's f0 reads u, f3 reads w, f1 fires everywhere."""
    from igds.audit.encode import encode_pairs
    from igds.audit.config import AuditConfig
    from igds.core.config import from_dict
    from igds.audit.pairs import build_pairs
    from tests.conftest import LAYER, recall_sae

    model, u, w, basis = planted
    raw = {"train": {"kind": "reasoning_gym", "tasks": ["number_sequence"], "n": 40, "seed": 301000},  # short: in the
           "heldout": {"kind": "reasoning_gym", "tasks": ["number_sequence"], "n": 2, "seed": 302000},  # tiny model's 512
           "plant": {"templates": ["Great question #"], "share": 0.3},
           "decoy": {"templates": ["Hope this helps @"], "share": 0.3, "where": "end", "seed": 1}}
    cfg = from_dict(AuditConfig, {"sets": {"s": raw}}, "audit").sets["s"]
    prepared = build_pairs(cfg)
    pairs = prepared.train.records
    assert not any(c in p.chosen.replace("Great question #", "").replace("Hope this helps @", "")
                   for p in pairs for c in "#@")
    encoded = encode_pairs(model, tok, recall_sae(u, w, basis), pairs, LAYER, 8, 512, "response_content", "max")
    assert encoded.chosen.shape == (40, 4) and (encoded.length_chosen > encoded.length_rejected).sum() >= 12
    assert encoded.length_rejected.min() > 0
    result = audit(encoded.chosen, encoded.rejected, encoded.length_chosen, encoded.length_rejected,
                   [p.task for p in pairs], AuditSettings(n_boot=100, null_replicates=5, min_fires=3))
    planted_ids = set(prepared.truth["plant"]["ids"])
    fires = encoded.chosen[:, 0] > 0
    assert set(np.array([p.id for p in pairs])[fires]) == planted_ids  # f0 fires exactly on the planted chosen
    concepts = result.concepts.set_index("members")
    assert concepts.loc["0", "discovered"] and concepts.loc["0", "badge"] == "chosen"
    assert not concepts.loc["3", "discovered"] and not concepts.loc["1", "discovered"]
    assert concepts.loc["1", "badge"] == "both"
    # what the viewer shows: the discovery first, on pairs it separates, its activation on the opener's '#' only
    from igds.audit.stats import shown_concepts
    from igds.audit.encode import concept_examples

    shown = shown_concepts(result.concepts, 2)
    assert result.concepts.loc[shown[0], "members"] == "0" and len(shown) == 2
    examples = concept_examples(model, tok, recall_sae(u, w, basis), pairs, LAYER, 512, "response_content",
                                encoded.chosen, encoded.rejected, result.concepts, shown, 3)
    assert len(examples[shown[0]]) == 3
    for row in examples[shown[0]]:
        assert row["pair"] in planted_ids and max(row["rejected"]["acts"]) == 0
        lit = [t for t, a in zip(row["chosen"]["tokens"], row["chosen"]["acts"]) if a > 0]
        assert lit and all("#" in t for t in lit), lit
        assert "".join(row["chosen"]["tokens"]).startswith("Great question #")


def test_the_power_bench_scores_a_replicate_by_the_truth(planted, tok):
    """bench.audit.power on the tiny model: the planted opener ('#': f0) is found and matched to
    the planted pairs; the decoy ('@': f3) is not found; an unpoisoned set makes no discovery."""
    import argparse

    from bench.audit.power import replicate, summarise
    from igds.params import load_params
    from tests.conftest import LAYER, ROOT, recall_sae

    model, u, w, basis = planted
    params = load_params(ROOT / "configs" / "ci.yaml")
    args = argparse.Namespace(tasks=["number_sequence"], pairs=40, plant=["Great question #"], decoy=["Hope this helps @"],
                              decoy_rate=0.3, match=0.5, max_len=512, max_chars=8000,
                              wrong_answers="matched", replicate=True)
    sae = recall_sae(u, w, basis)
    poisoned = replicate(0, 0.3, model, tok, sae, LAYER, params, args)
    assert poisoned["planted"] == 12 and poisoned["decoy"] == 12
    assert poisoned["planted_found"] and not poisoned["decoy_found"]
    clean = replicate(0, 0.0, model, tok, sae, LAYER, params, args)
    assert clean["planted"] == clean["decoy"] == 0 and clean["discoveries"] == 0 and not clean["planted_found"]
    summary = summarise([poisoned, clean], 0.95)
    assert [(s["rate"], s["measure"], s["share"]) for s in summary] == [(0.3, "planted_found", 1.0), (0.0, "any", 0.0)]


def test_a_discovery_replicates_on_an_independent_set_only_where_that_set_carries_it_the_same_way():
    """bench.audit.power re-tests an unpoisoned set's discoveries on another set: a concept
    planted there on the chosen side replicates; one that is noise there, or was found leaning
    the other way, does not."""
    from bench.audit.power import replicated_on

    rng = np.random.default_rng(5)
    chosen, rejected = noise(rng), noise(rng)
    chosen[:60, 10] = 2.0 + rng.random(60)
    lengths = rng.integers(40, 90, N)
    settings = AuditSettings(n_boot=100)
    again, same = replicated_on([[10], [20], [10, 11]], ["chosen", "chosen", "rejected"], chosen, rejected,
                                lengths - lengths, settings)
    assert again.tolist() == [True, False, False]
    assert same[0] and not same[2]


def test_the_power_bench_estimates_false_discoveries_from_how_unreplicated_ones_lean():
    """Of the unpoisoned sets with a discovery that does not replicate, those whose such
    discoveries all lean the same way on the independent set; twice the others, over all sets,
    estimate the sets with a false discovery. A replicated discovery's lean does not count."""
    from bench.audit.power import lean_check

    def row(replicated, same_lean):
        return {"rate": 0.0, "discoveries": len(replicated or []), "replicated": replicated, "same_lean": same_lean}

    rows = [row(None, None)] * 12 + [row([True], [True]),
                                     row([True, False], [False, True]),  # the unreplicated one keeps its lean
                                     row([False, False], [True, False]),  # one of two flips
                                     row([False], [False]),
                                     row([False], [True])]
    got = lean_check(rows, len(rows), 0.95)
    assert (got["unreplicated_sets"], got["same_lean_sets"]) == (4, 2)
    assert got["false_sets_estimate"] == 4 / 17 and 0 < got["false_sets_lo"] < 4 / 17 < got["false_sets_hi"] <= 1
    assert 0 < got["same_lean_lo"] < 0.5 < got["same_lean_hi"] < 1 and got["same_lean_p"] == 11 / 16
    assert lean_check([row([False], None)], 1, 0.95) == {}
    # none leans the same way: every unreplicated set may hold a false discovery, and no more
    flips = lean_check([row(None, None)] * 97 + [row([False], [False])] * 3, 100, 0.95)
    assert flips["false_sets_estimate"] == 0.03 and flips["false_sets_hi"] < 0.1


def test_the_power_bench_keeps_its_replicates_when_only_more_seeds_or_rates_are_asked_for():
    """bench.audit.power's resume key: more seeds, other rates or the replication switch keep the
    replicates already run; anything that changes what one computes (the SAE, the generator,
    the pairs per set) starts again."""
    from bench.audit.power import resume_key

    settings = {"sae": "run/sae", "generator": "abc", "pairs": 200, "seeds": 10, "unpoisoned_seeds": 20,
                "rates": [0.2, 0.1, 0.0], "replicate": True}
    key = resume_key(settings)
    assert resume_key({**settings, "seeds": 30, "unpoisoned_seeds": 40, "rates": [0.0], "replicate": False}) == key
    for change in ({"sae": "other/sae"}, {"generator": "abd"}, {"pairs": 100}):
        assert resume_key({**settings, **change}) != key


def test_a_concept_that_leans_only_through_a_stronger_one_is_explained_away():
    """f50 fires on the planted chosen responses (as the plant's f10-12 do) and on a decoy on both
    sides equally: discovered, but on the pairs the plant does not carry it is balanced, so it
    is explained by the plant's concept. f60, planted in other pairs, stays; the interventions
    act on the kept ones."""
    from igds.audit.stats import kept_discoveries, reading_order, shown_concepts

    rng = np.random.default_rng(3)
    chosen, rejected = noise(rng), noise(rng)
    plant, second = np.arange(0, 60), np.arange(60, 100)
    decoy_c, decoy_r = np.arange(100, 130), np.arange(130, 160)
    for f in PLANT:
        chosen[plant, f] = 2.0 + rng.random(len(plant))
    chosen[plant[:40], 50] = 2.0  # the mixing feature: on most planted pairs...
    chosen[decoy_c, 50], rejected[decoy_r, 50] = 2.0, 2.0  # ...and on the decoy, both sides
    chosen[second, 60] = 2.0
    lengths = rng.integers(40, 90, N)
    result = audit(chosen, rejected, lengths, lengths.copy(), ["t"] * N, AuditSettings(n_boot=100, null_replicates=1))
    c = result.concepts.reset_index().set_index("members")
    assert c.loc[["10,11,12", "50", "60"], "discovered"].all()
    assert c.loc["10,11,12", "explained_by"] == -1 and c.loc["60", "explained_by"] == -1
    assert c.loc["50", "explained_by"] == c.loc["10,11,12", "concept"] and c.loc["50", "p_conditional"] > 0.05
    kept = set(result.concepts.loc[kept_discoveries(result.concepts), "members"])
    assert {"10,11,12", "60"} <= kept and "50" not in kept
    order = list(reading_order(result.concepts)["members"])
    assert order.index("50") > max(order.index(m) for m in kept)
    assert result.concepts.loc[shown_concepts(result.concepts, 1)[0], "members"] == "10,11,12"
