"""The recipe table (igds.recipes.table) on planted eval runs: a solver whose finalists are right
more often than random is found better, with its search seeds x training seeds pooled; the
best single selector on val is the selector its summary names; a row is never compared with
itself; the proxy's verdict leads the section and says so when the proxy does not rank."""

from __future__ import annotations

import math

import numpy as np
import pytest

from igds.recipes.table import best_so_far_long, build_recipe_table, proxy_verdict, render_recipe_markdown, search_rows
from igds.core.report import EvalRun

IDS = [f"e{i}" for i in range(80)]


def run(method: str, seed: int | None, p: float, rng, ratio: float | None = 0.5) -> EvalRun:
    values = {i: float(v) for i, v in zip(IDS, rng.random(len(IDS)) < p)}
    return EvalRun(run=f"{method}-{seed}", method=method, ratio=ratio, seed=seed, n_train=48,
                   per_example={"exact_match": values}, feature_activation=math.nan, train_wall_s=0.0,
                   eval_wall_s=0.0, source=f"{method}-{seed}")


@pytest.fixture
def planted():
    rng = np.random.default_rng(0)
    runs = [run("base", None, 0.05, rng, None), *[run("full", s, 0.4, rng, 1.0) for s in range(3)]]
    runs += [run(m, s, 0.25, rng) for m in ("igds", "random") for s in range(3)]
    finalists = {f"search_{solver}_s{k}": (solver, k) for solver in ("random", "local") for k in range(3)}
    for name, (solver, _) in finalists.items():
        runs += [run(name, s, 0.7 if solver == "local" else 0.25, rng) for s in range(3)]
    searches = [{"solver": solver, "seed": k, "fine_tunes": 8, "best_value": -1.0 - 0.1 * k,
                 "best_so_far": [-2.0, -1.5, -1.0 - 0.1 * k]} for solver, k in finalists.values()]
    single = {"methods": ["igds", "random"], "values": [-1.2, -1.4], "best_method": "igds", "fine_tunes": 2,
              "best_value": -1.2, "best_so_far": [-1.2, -1.2]}
    return runs, finalists, searches, single


def test_a_better_solver_is_found_better_with_its_seeds_pooled(planted):
    runs, finalists, searches, single = planted
    rows = search_rows(runs, ["igds", "random"], 0.5, finalists, searches, single)
    assert [r.label for r in rows] == ["base", "full", "igds", "random", "best single on val (igds)",
                                       "search: random", "search: local"]
    local = rows[-1]
    assert len(local.runs) == 9 and local.proxy_fine_tunes == 24 and local.full_fine_tunes == 9
    assert local.proxy_value == pytest.approx(-1.1)  # the median of the three searches' best
    best = rows[4]
    assert best.runs == rows[2].runs and best.proxy_fine_tunes == 2 and best.full_fine_tunes == 3
    table = build_recipe_table(rows, "exact_match", np.random.default_rng(1), n_boot=500, n_perm=500)
    by = table.set_index("row")
    assert by.loc["search: local", "vs_random"] > 0.3 and by.loc["search: local", "vs_random_lo"] > 0.2
    assert by.loc["search: local", "vs_random_p"] < 0.01 and by.loc["search: local", "vs_best_single_p"] < 0.01
    assert abs(by.loc["search: random", "vs_random"]) < 0.1 and by.loc["search: random", "vs_random_p"] > 0.05
    # never compared with itself: random vs random, the best single vs itself and vs its own selector
    assert math.isnan(by.loc["random", "vs_random"]) and math.isnan(by.loc["igds", "vs_best_single"])
    assert math.isnan(by.loc["best single on val (igds)", "vs_best_single"])
    assert math.isnan(by.loc["base", "vs_random"])
    assert (by["vs_random_p_holm"].dropna() >= by["vs_random_p"].dropna()).all()


def test_the_proxys_verdict_leads_and_says_when_it_does_not_rank(planted):
    runs, finalists, searches, single = planted
    rows = search_rows(runs, ["igds", "random"], 0.5, finalists, searches, single)
    table = build_recipe_table(rows, "exact_match", np.random.default_rng(1), n_boot=200, n_perm=200)

    def check(lo):
        a = {"rho": 0.3, "lo": lo, "hi": 0.7, "ceiling": 0.6, "ceiling_lo": 0.3, "ceiling_hi": 0.8}
        return {"recipes": 12, "seeds": [0, 1], "task_metric": "exact_match", "proxy_metric": "answer_loglik",
                "agreement": {"exact_match": a, "answer_loglik": a}}

    assert proxy_verdict(check(-0.2)).startswith("The proxy does not rank recipes (its rank correlation's CI")
    reverse = check(-0.9)
    reverse["agreement"]["exact_match"].update(rho=-0.66, hi=-0.13)
    assert proxy_verdict(reverse).startswith("The proxy does not rank recipes: it ranks them in reverse")
    undefined = check(0.0)
    undefined["agreement"]["exact_match"].update(rho=None, lo=None, hi=None)
    assert "no ranking" in proxy_verdict(undefined)
    assert proxy_verdict(check(0.1)).startswith("The proxy ranks recipes")
    assert proxy_verdict(None).startswith("The proxy is not validated")
    text = render_recipe_markdown({"within": table}, {"within": check(-0.2)}, "exact_match", 0.95)
    lines = text.splitlines()
    assert lines[0] == "### Pool: within" and lines[2].startswith("The proxy does not rank recipes")
    assert text.index("does not rank") < text.index("| row |")
    assert "| search: local | 9 (3 search seeds x 3 training seeds) |" in text
    assert render_recipe_markdown({}, {}, "exact_match", 0.95).startswith("No recipe search")


def test_best_so_far_curves_hold_every_search_and_the_single_pick(planted):
    _, _, searches, single = planted
    long = best_so_far_long(searches, single)
    assert len(long) == 6 * 3 + 2 and set(long["solver"]) == {"random", "local", "single"}
    assert long[long["solver"] == "local"]["evaluation"].max() == 3
