"""bench.poolsize's pieces that need no model: a size's params (both pools at n, the damage, the
options at every size) and the table (a skipped LESS is said, not shown as a number)."""

from __future__ import annotations

from igds.core.config import from_dict
from igds.params import Params, read_params
from tests.conftest import ROOT


def test_a_size_sets_both_pools_n_the_damage_and_the_options():
    from bench.poolsize import DAMAGE, size_params

    whole = read_params(ROOT / "configs" / "steps-mixed.yaml")
    params = from_dict(Params, size_params(whole, 1000, {"min_terms": 4, "max_terms": 4}), "")
    assert params.data.pools == ("mixed", "within") and params.data.splits.pool.n == 1000
    assert params.data.splits.pool.options["min_terms"] == 4 == params.data.mix.distractors.options["max_terms"]
    assert params.data.degrade.share == DAMAGE["share"] and params.data.splits.eval == from_dict(Params, whole, "").data.splits.eval
    assert whole["data"]["splits"]["pool"]["n"] == 96  # the profile itself is untouched


def test_the_table_marks_what_was_not_scored():
    from bench.poolsize import markdown

    row = {"auroc_on_task": 0.91, "on_task_recall": 0.8, "degraded_kept": 0.2, "wall_s": 3.0, "peak_rss_mb": 900, "n_pool": 100}
    sizes = [{"n": n, "form_auroc": {"response_chars": 0.6},
              "pools": {"mixed": {"igds": row, "less": row if n == 100 else {"skipped": "LESS stops"}},
                        "within": {"igds": row, "less": row if n == 100 else {"skipped": "LESS stops"}}}}
             for n in (100, 1000)]
    text = markdown({"profile": "p", "date": "d", "machine": "m", "commit": "c", "options": {}, "less_max": 100,
                     "sizes": sizes})
    less = next(line for line in text.splitlines() if line.startswith("| less |"))
    assert "0.910 / 0.80" in less and "skipped" in less and "Not scored: less at 1000" in text
    assert "| length-only rule | 0.600 / – | 0.600 / – |" in text
