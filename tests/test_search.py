"""Recipe search (igds.recipes.search) on a planted objective: the value of a subset is the mean of a
hidden quality that one signal tracks. Every solver spends exactly its budget on distinct
subsets, shares the warm-up, finds a recipe near the oracle's top-k, and a search killed
mid-way resumes from its journal to the study an uninterrupted run ends with."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from igds.recipes.recipe import Signals, materialise, parse_recipe, subset_key
from igds.recipes.search import SearchSettings, Space, recipe_from_params, run_search, suggest

N, FINAL = 60, 30


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    quality = rng.random(N)
    ids = [f"x{i:03d}" for i in range(N)]
    texts = [f"text {i} " + " ".join(f"w{(i * 13 + j) % 577}" for j in range(20)) for i in range(N)]
    sig = Signals(ids, {"igds": quality + 0.1 * rng.normal(size=N), "loss": rng.random(N),
                        "length": np.array([len(t) for t in texts], float)},
                  {"hidden": rng.normal(size=(N, 6)), "features": rng.random((N, 5))}, texts)
    value = dict(zip(ids, quality))
    oracle = float(np.mean(np.sort(quality)[-FINAL:]))
    return sig, value, oracle


class Objective:
    """The planted value of a subset; counts calls and can stop the search after `kill_after`."""

    def __init__(self, value: dict, kill_after: int | None = None):
        self.value, self.kill_after, self.calls = value, kill_after, []

    def __call__(self, ids):
        if self.kill_after is not None and len(self.calls) == self.kill_after:
            raise KeyboardInterrupt("planted kill during a fine-tune")
        self.calls.append(subset_key(ids))
        return float(np.mean([self.value[i] for i in ids]))


SPACE = Space(("igds", "loss", "length"), ("hidden", "features"))


def study(path=None):
    storage = None
    if path is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(direction="maximize", storage=storage, study_name="s", load_if_exists=True)


@pytest.mark.parametrize("solver, budget", [("random", 8), ("tpe", 8), ("local", 8), ("gp", 5)])
def test_a_solver_spends_its_budget_on_distinct_subsets_after_the_shared_warmup(planted, solver, budget):
    sig, value, oracle = planted
    objective = Objective(value)
    evaluated = run_search(study(), SearchSettings(solver, seed=0, budget=budget, warmup=3), SPACE, sig, FINAL,
                           objective, progress=False)
    assert len(evaluated) == budget == len(objective.calls) == len(set(objective.calls))
    assert all(len(e.ids) == FINAL for e in evaluated)
    warm = run_search(study(), SearchSettings("random", seed=7, budget=3, warmup=3), SPACE, sig, FINAL,
                      Objective(value), progress=False)
    assert [e.key for e in evaluated[:3]] == [e.key for e in warm]  # the warm-up depends on neither solver nor seed
    best = max(e.value for e in evaluated)
    assert best >= max(e.value for e in warm)
    # an evaluated recipe replays to its subset
    top = max(evaluated, key=lambda e: e.value)
    assert materialise(parse_recipe(top.recipe, "replay"), sig, FINAL, 0).ids == top.ids


def test_the_local_solver_climbs_to_near_the_oracle(planted):
    sig, value, oracle = planted
    evaluated = run_search(study(), SearchSettings("local", seed=0, budget=10, warmup=3), SPACE, sig, FINAL,
                           Objective(value), progress=False)
    random_subset = float(np.mean(list(value.values())))
    best = max(e.value for e in evaluated)
    assert best >= random_subset + 0.8 * (oracle - random_subset), (best, oracle, random_subset)


@pytest.mark.parametrize("solver", ["tpe", "local"])
def test_a_killed_search_resumes_to_the_uninterrupted_study(planted, tmp_path, solver):
    sig, value, _ = planted
    settings = SearchSettings(solver, seed=3, budget=7, warmup=3)
    whole = study(tmp_path / "whole.log")
    run_search(whole, settings, SPACE, sig, FINAL, Objective(value), progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_search(study(tmp_path / "killed.log"), settings, SPACE, sig, FINAL, Objective(value, kill_after=4),
                   progress=False)
    objective = Objective(value)
    run_search(study(tmp_path / "killed.log"), settings, SPACE, sig, FINAL, objective, progress=False)
    assert len(objective.calls) == 3  # only what was not evaluated before the kill

    def finished(s):
        return [(t.params, t.value, t.user_attrs["key"]) for t in s.trials
                if t.state == optuna.trial.TrialState.COMPLETE]

    assert finished(study(tmp_path / "killed.log")) == finished(study(tmp_path / "whole.log"))


def test_every_point_of_the_space_is_a_valid_recipe(planted):
    sig, _, _ = planted
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = sampled.ask()
        recipe = recipe_from_params(suggest(trial, SPACE), SPACE)
        assert len(materialise(recipe, sig, FINAL, 0).ids) == FINAL
        assert parse_recipe(recipe.as_dict(), "r").steps == recipe.steps
        sampled.tell(trial, 0.0)


def test_every_subset_is_materialised_with_the_searchs_data_seed(planted, monkeypatch):
    """The local solver's candidates must be the subsets the search evaluates: materialised with
    the same data seed (a stochastic operator draws from it), or their keys and states are another
    subset's."""
    import igds.recipes.search

    sig, value, _ = planted
    seeds = []

    def recording(recipe, signals, final_n, seed, run_seed=0):
        seeds.append(seed)
        return materialise(recipe, signals, final_n, seed, run_seed)

    monkeypatch.setattr(igds.recipes.search, "materialise", recording)
    run_search(study(), SearchSettings("local", seed=0, budget=5, warmup=2), SPACE, sig, FINAL, Objective(value),
               data_seed=7, progress=False)
    assert len(seeds) > 5 and set(seeds) == {7}


def test_fixed_recipes_are_distinct_reproducible_and_span_the_zones(planted):
    """The proxy check's recipes: n distinct subsets, the same for the same seed, other ones
    for another seed; the first three are the warm-up's zone probes."""
    from igds.recipes.search import ZONES, fixed_recipes

    signals, space, final_n = planted[0], SPACE, FINAL
    first = fixed_recipes(space, signals, final_n, 12, seed=0)
    assert len(first) == 12 and len({subset_key(ids) for _, ids in first}) == 12
    assert all(len(ids) == final_n for _, ids in first)
    assert first == fixed_recipes(space, signals, final_n, 12, seed=0)
    assert [ids for _, ids in first] != [ids for _, ids in fixed_recipes(space, signals, final_n, 12, seed=1)]
    for recipe, ids in first:  # each replays from its params.yaml form
        assert materialise(parse_recipe(recipe), signals, final_n, 0).ids == ids
    assert len(ZONES) == 3
    from igds.recipes.recipe import RecipeError

    with pytest.raises(RecipeError, match="distinct subsets"):
        fixed_recipes(space, signals, final_n=len(signals.ids), n=3, seed=0)  # every recipe keeps the whole pool


def test_the_operators_order_is_searched_and_a_swap_edit_reorders_them(planted):
    """The space orders the enabled operators by their priorities: sampled points reach orders
    other than the canonical one, the warm-up keeps the canonical order, and the local solver's
    swap edit trades two enabled operators' places (same operators, other order)."""
    from igds.recipes.search import SPACE_OPERATORS, local_edits, operator_order, warmup_params

    sig, _, _ = planted
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    orders = set()
    for _ in range(30):
        p = suggest(sampled.ask(), SPACE)
        steps = [s.operator for s in recipe_from_params(p, SPACE).steps]
        assert steps[:-1] == operator_order(p, SPACE) and steps[-1] == "fill"
        orders.add(tuple(steps))
    canonical = [tuple(o for o in SPACE_OPERATORS if o in order) for order in orders]
    assert any(tuple(o) != c for o, c in zip(orders, canonical))  # not only the canonical order
    rng = np.random.default_rng(0)
    probe = warmup_params(SPACE, FINAL / len(sig.ids), 0, rng)
    assert operator_order(probe, SPACE) == [o for o in SPACE_OPERATORS if probe.get(o)]
    p = {**probe, **{op: True for op in SPACE.operators()}}
    swaps = [q for q in local_edits(p, SPACE, 60, rng) if sorted(operator_order(q, SPACE)) == sorted(
        operator_order(p, SPACE)) and operator_order(q, SPACE) != operator_order(p, SPACE)]
    assert swaps
    for q in swaps:
        before, after = operator_order(p, SPACE), operator_order(q, SPACE)
        moved = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert len(moved) >= 2 and len(materialise(recipe_from_params(q, SPACE), sig, FINAL, 0).ids) == FINAL
