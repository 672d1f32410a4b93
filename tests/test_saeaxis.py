"""bench.saeaxis's pieces that need no model: the common text's params (a fresh draw of the SAE
text, the mixed pool alone), a study's per-draw gains, and the summary (a planted monotone
relation between quality and AUROC is found; the gain's interval is over draws)."""

from __future__ import annotations

import json

import pytest

from igds.core.config import ConfigError, from_dict
from igds.params import Params
from tests.conftest import ROOT


def test_the_common_text_is_a_fresh_draw_of_the_sae_tasks_and_the_mixed_pool_alone():
    from bench.saeaxis import TEXT_SEED, common_params
    from igds.params import read_params

    whole = common_params(ROOT / "configs" / "steps-mixed.yaml", ROOT / "configs" / "steps-sae1m.yaml",
                          ROOT / "configs" / "steps-study.yaml", text_n=800, pool_n=400, text_tokens=50_000)
    params = from_dict(Params, whole, "")
    own = read_params(ROOT / "configs" / "steps-sae1m.yaml")["data"]["splits"]["sae"]
    assert params.data.splits.sae.tasks == tuple(own["tasks"]) and params.data.splits.sae.seed == TEXT_SEED != own["seed"]
    assert params.data.splits.sae.n == 800 and params.sae.heldout_tokens == 50_000
    assert params.data.pools == ("mixed",) and params.data.splits.pool.n == 400
    assert params.model.autocast == "bfloat16"  # the model as the studies ran it
    with pytest.raises(ConfigError, match="no data.splits.sae"):
        common_params(ROOT / "configs" / "steps-mixed.yaml", ROOT / "configs" / "steps-study.yaml",
                      ROOT / "configs" / "steps-study.yaml", 800, 400, 50_000)


def test_a_studys_draws_carry_their_own_igds_minus_random(tmp_path):
    from bench.saeaxis import draws_of

    study = {"draw_commits": {"p-d0": "a" * 40, "p-d1": "b" * 40},
             "identify": [{"draw": "p-d0", "n_causal": 3}, {"draw": "p-d1", "n_causal": 0}],
             "pools": {"within": {"comparisons": [
                 {"method": "igds-0.5", "reference": "full", "per_draw": [9, 9]},
                 {"method": "igds-0.5", "reference": "random-0.5", "per_draw": [0.1, -0.2]}]}}}
    (tmp_path / "results" / "study" / "p").mkdir(parents=True)
    (tmp_path / "results" / "study" / "p" / "study.json").write_text(json.dumps(study))
    draws = draws_of(tmp_path / "p.yaml", root=tmp_path)
    assert [(d["name"], d["gain"], d["identify"]["n_causal"]) for d in draws] == [("p-d0", 0.1, 3), ("p-d1", -0.2, 0)]
    with pytest.raises(ConfigError, match="pipelines.study"):
        draws_of(tmp_path / "q.yaml", root=tmp_path)


def _point(name, ce, auroc, gain):
    q = {"explained_variance": ce, "ce_loss_recovered": ce, "dead_share": 0.1, "l0": 32.0}
    return {"name": name, "text": q, "pool": q, "auroc_on_task": auroc, "gain": gain, "identify": {"n_causal": 2}}


def test_the_summary_finds_a_planted_monotone_relation_and_intervals_over_draws():
    from bench.saeaxis import markdown, summarise

    settings = [{"profile": f"s{i}", "train_tokens": 10 ** (4 + i), "text": "plain",
                 "draws": [_point(f"s{i}-d{d}", 0.5 + 0.1 * i + 0.01 * d, 0.6 + 0.1 * i + 0.01 * d, g)
                           for d, g in enumerate([0.05, -0.05, 0.0])]} for i in range(3)]
    doc = summarise(settings)
    rho = doc["spearman"]["text_ce_loss_recovered"]
    assert rho["auroc_on_task"]["rho"] == pytest.approx(1.0) and rho["auroc_on_task"]["p"] < 0.01
    assert abs(rho["gain"]["rho"]) < 0.5
    g = doc["settings"][0]["gain"]
    assert g["mean"] == pytest.approx(0.0) and g["lo"] < -0.05 < 0.05 < g["hi"]  # t on 2 df: wider than the range
    doc.update(date="d", machine="m", commit="c", text={"n_tokens": 50_000}, pool={"n": 400, "on_task": 200})
    text = markdown(doc)
    assert "| s0 (plain) | 3 | 10,000 |" in text and "+0.000 [" in text and "bench-saeaxis.png" in text
