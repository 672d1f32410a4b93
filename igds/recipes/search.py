"""Recipe search (DESIGN: Recipe search): AutoSelection's two-layer search, without an LLM.

Layer 1 is cheap: any candidate recipe (igds.recipes.recipe) materialises from the cached signals into
a subset of the fixed pool in well under a second. Layer 2 is costly: only a budget of subsets
gets the objective (a proxy fine-tune scored on the val split, never on eval; the caller
passes it in). A subset already evaluated (same ids: igds.recipes.recipe.subset_key) reuses its value
and spends nothing, so no subset is fine-tuned twice.

The space: every operator of `SPACE_OPERATORS`, each on or off, with its params and a priority
in [0, 1] always drawn (a fixed-dimension space: the flags decide what runs, as AutoSelection's
encoding [enabled, param] does; the enabled operators run by ascending priority, a random-key
encoding of their order that every sampler can search), then `fill` by a signal. Solvers, on the same space, the same
warm-up probes and the same budget:
- `random`: Optuna's RandomSampler;
- `tpe`: Optuna's TPESampler (multivariate);
- `gp`: Optuna's GPSampler;
- `local`: AutoSelection's loop with programmatic edits in place of the LLM: from the best
  recipe so far, `candidates` local edits (toggle an operator, nudge a param, change a signal
  or another categorical, swap two operators' places in the order), each materialised; a BoTorch GP over the recipe's encoding and
  the realised subset's state (size before fill, signal means, drift of SAE activation rates,
  overlap with evaluated subsets) picks the edit with the best upper confidence bound;
  after `patience` evaluations without improvement a fresh warm-up-style probe is evaluated
  (AutoSelection's reseeding), and the search goes on from the best.

Warm-up (every solver): `warmup` probes in retention zones relative to the final size (the
filters cut the pool to a target share t of it, t drawn from a zone of multiples of the ratio;
`fill` then cuts to the ratio), AutoSelection's zones made relative to the final size; the
probes keep the canonical order.

Beside the solvers: `fixed_recipes`, the recipes the proxy is validated on (proxy-check), and
the single selectors' own subsets (recipe-search-single: the best single selector on val).

Every step is a function of the history (the study's finished trials) and a seed derived from
(search seed, step): samplers are rebuilt per step, so a search killed mid-way and resumed from
Optuna's journal storage proposes exactly what the uninterrupted search would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from igds.recipes.recipe import OPERATORS, Recipe, RecipeError, Signals, Step, materialise, subset_key

log = logging.getLogger(__name__)

SOLVERS = ("random", "tpe", "gp", "local")
# the operators the search switches on and off, in the canonical order (the warm-up's; ties of priority)
SPACE_OPERATORS = ("score_filter", "fuse", "length_band", "dedup", "semdedup", "mix", "diversify")
ZONES = ((1.0, 1.3), (1.3, 1.7), (1.7, 2.2))  # pre-fill retention as multiples of the final share
SHARE_RANGE = (0.3, 1.0)


@dataclass(frozen=True)
class Space:
    """What recipes can read: scalar signals (method names, `length`) and vector spaces."""

    signals: tuple[str, ...]
    spaces: tuple[str, ...] = ()

    def operators(self) -> tuple[str, ...]:
        ops = [op for op in SPACE_OPERATORS if op not in ("semdedup", "mix") or self.spaces]
        return tuple(op for op in ops if op != "fuse" or len(self.signals) >= 2)


# ---- the flat parametrisation (Optuna's params) <-> recipes ----

def _pairs(signals: Sequence[str]) -> list[str]:
    return [f"{a}|{b}" for i, a in enumerate(signals) for b in signals[i + 1:]]


def suggest(trial, space: Space) -> dict:
    """Every param of the space drawn from an Optuna trial: {name: value}."""
    s, p = space.signals, {}
    for op in space.operators():
        p[op] = trial.suggest_categorical(op, [False, True])
    if "score_filter" in space.operators():
        p["score_filter.signal"] = trial.suggest_categorical("score_filter.signal", list(s))
        p["score_filter.keep"] = trial.suggest_categorical("score_filter.keep", ["top", "bottom"])
        p["score_filter.share"] = trial.suggest_float("score_filter.share", *SHARE_RANGE)
    if "fuse" in space.operators():
        p["fuse.signals"] = trial.suggest_categorical("fuse.signals", _pairs(s))
        p["fuse.how"] = trial.suggest_categorical("fuse.how", ["rank", "zsum"])
        p["fuse.weight"] = trial.suggest_float("fuse.weight", 0.0, 1.0)
        p["fuse.share"] = trial.suggest_float("fuse.share", *SHARE_RANGE)
    p["length_band.lo"] = trial.suggest_float("length_band.lo", 0.0, 0.3)
    p["length_band.hi"] = trial.suggest_float("length_band.hi", 0.7, 1.0)
    p["dedup.threshold"] = trial.suggest_float("dedup.threshold", 0.5, 0.95)
    if space.spaces:
        p["semdedup.space"] = trial.suggest_categorical("semdedup.space", list(space.spaces))
        p["semdedup.threshold"] = trial.suggest_float("semdedup.threshold", 0.8, 0.99)
        p["mix.space"] = trial.suggest_categorical("mix.space", list(space.spaces))
        p["mix.clusters"] = trial.suggest_int("mix.clusters", 2, 16)
        p["mix.temperature"] = trial.suggest_float("mix.temperature", 0.5, 10.0, log=True)
        p["mix.share"] = trial.suggest_float("mix.share", *SHARE_RANGE)
    p["diversify.method"] = trial.suggest_categorical(
        "diversify.method", ["kcenter", "zip"] if "hidden" in space.spaces else ["zip"])
    p["diversify.share"] = trial.suggest_float("diversify.share", *SHARE_RANGE)
    p["fill.signal"] = trial.suggest_categorical("fill.signal", list(s))
    for op in space.operators():  # the order: enabled operators run by ascending priority (a random-key encoding)
        p[f"{op}.at"] = trial.suggest_float(f"{op}.at", 0.0, 1.0)
    return p


def canonical_priorities(space: Space) -> dict:
    """Priorities that keep the canonical order (SPACE_OPERATORS'), evenly spaced in [0, 1]."""
    ops = space.operators()
    return {f"{op}.at": i / max(1, len(ops) - 1) for i, op in enumerate(ops)}


def operator_order(p: dict, space: Space) -> list[str]:
    """The enabled operators in the order they run: by priority `<op>.at`, ties (and a point
    without priorities) in the canonical order."""
    ops = space.operators()
    canonical = canonical_priorities(space)
    return sorted((op for op in ops if p.get(op)), key=lambda op: (p.get(f"{op}.at", canonical[f"{op}.at"]),
                                                                  ops.index(op)))


def recipe_from_params(p: dict, space: Space, where: str = "search") -> Recipe:
    """The recipe a flat param dict describes (the operators on, in their priorities' order, then fill)."""
    steps = []
    for op in operator_order(p, space):
        if op == "score_filter":
            params = {"signal": p["score_filter.signal"], "keep": p["score_filter.keep"],
                      "share": p["score_filter.share"]}
        elif op == "fuse":
            params = {"signals": tuple(p["fuse.signals"].split("|")), "how": p["fuse.how"],
                      "weight": p["fuse.weight"], "share": p["fuse.share"]}
        elif op == "length_band":
            params = {"lo": p["length_band.lo"], "hi": p["length_band.hi"]}
        elif op == "dedup":
            params = {"kind": "minhash", "threshold": p["dedup.threshold"]}
        elif op == "semdedup":
            params = {"space": p["semdedup.space"], "threshold": p["semdedup.threshold"]}
        elif op == "mix":
            params = {"space": p["mix.space"], "clusters": p["mix.clusters"], "temperature": p["mix.temperature"],
                      "share": p["mix.share"]}
        else:
            params = {"method": p["diversify.method"], "share": p["diversify.share"], "space": "hidden"}
        steps.append(Step(op, OPERATORS[op](**params)))
    steps.append(Step("fill", OPERATORS["fill"](signal=p["fill.signal"])))
    return Recipe(tuple(steps), where)


def warmup_params(space: Space, ratio: float, index: int, rng: np.random.Generator) -> dict:
    """Warm-up probe `index`: zone index % 3, a target pre-fill share t of the pool drawn in it
    (capped at 1), 1-3 filters each keeping t ** (1 / n_filters) (AutoSelection's base_frac)."""
    lo, hi = ZONES[index % len(ZONES)]
    target = min(1.0, ratio * rng.uniform(lo, hi))
    filters = [op for op in ("score_filter", "fuse", "mix", "diversify") if op in space.operators()]
    chosen = set(rng.choice(filters, size=int(rng.integers(1, min(3, len(filters)) + 1)), replace=False).tolist())
    share = float(np.clip(target ** (1.0 / len(chosen)), *SHARE_RANGE))
    s = list(space.signals)
    p = {op: op in chosen for op in space.operators()}
    p.update(canonical_priorities(space))
    p.update({"score_filter.signal": s[int(rng.integers(len(s)))], "score_filter.keep": "top",
              "score_filter.share": share, "length_band.lo": 0.0, "length_band.hi": 1.0, "dedup.threshold": 0.8,
              "diversify.method": "kcenter" if "hidden" in space.spaces else "zip", "diversify.share": share,
              "fill.signal": s[int(rng.integers(len(s)))]})
    if "fuse" in space.operators():
        pairs = _pairs(s)
        p.update({"fuse.signals": pairs[int(rng.integers(len(pairs)))], "fuse.how": "rank", "fuse.weight": 0.5,
                  "fuse.share": share})
    if space.spaces:
        p.update({"semdedup.space": space.spaces[0], "semdedup.threshold": 0.95, "mix.space": space.spaces[0],
                  "mix.clusters": 8, "mix.temperature": 1.0, "mix.share": share})
    return p


def step_seed(seed: int, step: int, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{salt}".encode()).digest()[:4], "big")


# ---- the realised subset's state and the local solver's edits ----

def subset_state(ids: Sequence[str], pre_fill: int, signals: Signals, evaluated: Sequence[set],
                 final_n: int) -> np.ndarray:
    """The realised subset's state: size before fill over the final size, each scalar signal's
    mean over the subset (as a z-score against the pool), the drift of SAE activation rates
    (RMS difference of per-feature firing rates, subset vs pool) and the largest Jaccard
    overlap with an evaluated subset."""
    pos = {i: j for j, i in enumerate(signals.ids)}
    idx = np.array([pos[i] for i in ids])
    out = [pre_fill / final_n]
    for name in sorted(signals.values):
        v = signals.values[name]
        mu, sd = np.nanmean(v), np.nanstd(v)
        out.append(float((np.nanmean(v[idx]) - mu) / sd) if sd > 0 else 0.0)
    feats = signals.spaces.get("features")
    if feats is not None:
        fired = feats > 0
        out.append(float(np.sqrt(np.mean((fired[idx].mean(0) - fired.mean(0)) ** 2))))
    s = set(ids)
    out.append(max((len(s & e) / len(s | e) for e in evaluated), default=0.0))
    return np.asarray(out, dtype=float)


def encode(p: dict, space: Space) -> np.ndarray:
    """A recipe's flat params as numbers in [0, 1], in the order `suggest` draws them:
    categoricals (the operators' on/off flags among them) one-hot, numbers scaled to their
    range (log-scaled where it is log)."""
    import optuna  # noqa: PLC0415

    out = []
    for name, dist in distributions(space, p).items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            out += [float(p[name] == choice) for choice in dist.choices]
        elif dist.log:
            out.append(math.log(p[name] / dist.low) / math.log(dist.high / dist.low))
        else:
            out.append((p[name] - dist.low) / (dist.high - dist.low))
    return np.asarray(out, dtype=float)


def local_edits(p: dict, space: Space, n: int, rng: np.random.Generator) -> list[dict]:
    """`n` edits of `p`: toggle an operator, nudge a numeric param by up to +-0.15 of its range
    (an operator's priority among them: a small move in the order), change a categorical (a
    signal, a keep side, a space), or swap two enabled operators' places in the order; at
    least one operator stays on."""
    import optuna  # noqa: PLC0415

    ops = list(space.operators())
    dists = distributions(space, p)
    numeric = {k: (d.low, d.high, isinstance(d, optuna.distributions.IntDistribution)) for k, d in dists.items()
               if not isinstance(d, optuna.distributions.CategoricalDistribution)}
    categorical = [k for k in dists if k not in numeric and k not in ops]  # flags are toggled, not switched
    out = []
    for _ in range(n):
        q = dict(p)
        on = [o for o in ops if q[o]]
        move = rng.choice(["toggle", "nudge", "switch", "swap"] if len(on) >= 2 else ["toggle", "nudge", "switch"])
        if move == "toggle":
            op = ops[int(rng.integers(len(ops)))]
            q[op] = not q[op]
            if not any(q[o] for o in ops):
                q[op] = True
        elif move == "nudge":
            key = sorted(numeric)[int(rng.integers(len(numeric)))]
            lo, hi, is_int = numeric[key]
            value = q[key] + rng.uniform(-0.15, 0.15) * (hi - lo)
            q[key] = int(round(min(hi, max(lo, value)))) if is_int else float(min(hi, max(lo, value)))
        elif move == "swap":  # two enabled operators trade places in the order
            a, b = (on[int(i)] for i in rng.choice(len(on), size=2, replace=False))
            q[f"{a}.at"], q[f"{b}.at"] = q[f"{b}.at"], q[f"{a}.at"]
        else:
            key = sorted(categorical)[int(rng.integers(len(categorical)))]
            options = [o for o in dists[key].choices if o != q[key]]
            if options:
                q[key] = options[int(rng.integers(len(options)))]
        out.append(q)
    return out


class _Probe:
    """A stand-in for an Optuna trial that returns p's values (distributions records what is asked)."""

    def __init__(self, p: dict):
        self.p = p

    def suggest_categorical(self, name, choices):
        return self.p[name] if name in self.p else choices[0]

    def suggest_float(self, name, lo, hi, log=False):
        return self.p.get(name, lo)

    def suggest_int(self, name, lo, hi):
        return self.p.get(name, lo)


def ucb_pick(x_hist: np.ndarray, y_hist: np.ndarray, x_cand: np.ndarray, beta: float) -> int:
    """The candidate with the highest upper confidence bound of a BoTorch SingleTaskGP fitted
    to the evaluated history (inputs scaled to the unit cube over history + candidates,
    outputs standardised)."""
    import torch  # noqa: PLC0415
    from botorch.fit import fit_gpytorch_mll  # noqa: PLC0415
    from botorch.models import SingleTaskGP  # noqa: PLC0415
    from botorch.models.transforms.outcome import Standardize  # noqa: PLC0415
    from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: PLC0415

    both = np.vstack([x_hist, x_cand])
    lo, span = both.min(0), np.maximum(both.max(0) - both.min(0), 1e-9)
    scale = lambda x: torch.as_tensor((x - lo) / span, dtype=torch.float64)  # noqa: E731
    y = torch.as_tensor(y_hist, dtype=torch.float64).reshape(-1, 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SingleTaskGP(scale(x_hist), y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        with torch.no_grad():
            post = model.posterior(scale(x_cand))
            ucb = post.mean.squeeze(-1) + math.sqrt(beta) * post.variance.clamp_min(0).sqrt().squeeze(-1)
    return int(torch.argmax(ucb))


# ---- the search loop ----

@dataclass(frozen=True)
class SearchSettings:
    solver: str
    seed: int
    budget: int  # distinct subsets evaluated (fine-tunes), warm-up included
    warmup: int = 3
    patience: int = 4  # local: evaluations without improvement before a reseeding probe
    candidates: int = 24  # local: edits materialised and scored by the surrogate per step
    beta: float = 4.0  # local: UCB's exploration weight (mean + sqrt(beta) x sd)
    max_proposals: int = 0  # stop after this many proposals (0: 20 x budget): a space with few distinct subsets

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r} is not one of {SOLVERS}")
        if not 1 <= self.warmup <= self.budget:
            raise ValueError(f"warmup {self.warmup} must be in 1..budget ({self.budget})")


@dataclass
class Evaluated:
    key: str  # igds.recipes.recipe.subset_key of the ids
    value: float
    params: dict  # the flat params (suggest's names)
    recipe: dict  # the recipe's params.yaml form
    ids: list[str]
    pre_fill: int  # the subset's size before fill


def _sampler(settings: SearchSettings, step: int):
    import optuna  # noqa: PLC0415

    seed = step_seed(settings.seed, step, settings.solver)
    startup = settings.warmup
    if settings.solver == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                          warn_independent_sampling=False)
    if settings.solver == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def distributions(space: Space, p: dict) -> dict:
    """The Optuna distribution of every param of the space (for a trial added with given values)."""
    import optuna  # noqa: PLC0415

    class Recorder(_Probe):
        def __init__(self):
            super().__init__(p)
            self.dists = {}

        def suggest_categorical(self, name, choices):
            self.dists[name] = optuna.distributions.CategoricalDistribution(list(choices))
            return super().suggest_categorical(name, choices)

        def suggest_float(self, name, lo, hi, log=False):
            self.dists[name] = optuna.distributions.FloatDistribution(lo, hi, log=log)
            return super().suggest_float(name, lo, hi, log)

        def suggest_int(self, name, lo, hi):
            self.dists[name] = optuna.distributions.IntDistribution(lo, hi)
            return super().suggest_int(name, lo, hi)

    rec = Recorder()
    suggest(rec, space)
    return rec.dists


def history(study) -> tuple[dict[str, Evaluated], int]:
    """The evaluated subsets recorded in `study` (by key, in order) and the number of steps
    done (finished proposals: complete or pruned). A trial left running by a killed search
    is marked failed: its step is proposed again, identically."""
    import optuna  # noqa: PLC0415

    evaluated: dict[str, Evaluated] = {}
    steps = 0
    for t in study.trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        elif t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            steps += 1
            a = t.user_attrs
            if t.state == optuna.trial.TrialState.COMPLETE and not a.get("reused"):
                evaluated[a["key"]] = Evaluated(a["key"], t.value, dict(t.params), json.loads(a["recipe"]),
                                                json.loads(a["ids"]), a["pre_fill"])
    return evaluated, steps


def run_search(study, settings: SearchSettings, space: Space, signals: Signals, final_n: int,
               objective: Callable[[list[str]], float], data_seed: int = 0, progress: bool = True) -> list[Evaluated]:
    """Spend `settings.budget` evaluations of `objective` (ids -> value, higher is better) on
    recipes of `space`, recording every proposal as a trial of the Optuna `study` (its params,
    and as user attrs the recipe, the subset key and ids, whether the value was reused).
    Resumes from the study's finished trials. Returns the evaluated subsets in order.

    A proposal made by the solver itself (warm-up, local) is added as a finished trial after
    its evaluation; a sampler's is asked for first and told after: either way a kill leaves
    no finished trial for the step, and the resumed search proposes it again."""
    import optuna  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluated, step = history(study)
    max_steps = settings.max_proposals or 20 * settings.budget
    bar = tqdm(total=settings.budget, initial=len(evaluated), desc=f"search {settings.solver}-{settings.seed}",
               disable=not progress)
    while len(evaluated) < settings.budget and step < max_steps:
        rng = np.random.default_rng(step_seed(settings.seed, step, "draw"))
        p, trial = None, None
        if len(evaluated) < settings.warmup:  # the same warm-up probes for every solver and seed
            p = warmup_params(space, final_n / len(signals.ids), len(evaluated), np.random.default_rng(
                step_seed(data_seed, step, "warmup")))  # a probe that repeats a subset is redrawn
        elif settings.solver == "local":
            p = _local_proposal(list(evaluated.values()), space, signals, final_n, settings, rng, data_seed)
        if p is None:
            study.sampler = _sampler(settings, step)
            trial = study.ask()
            p = suggest(trial, space)
        recipe = recipe_from_params(p, space, f"search.{settings.solver}")
        attrs: dict = {"recipe": json.dumps(recipe.as_dict()), "step": step}
        try:
            result = materialise(recipe, signals, final_n, data_seed)
        except RecipeError as e:
            log.info("step %d: %s", step, e)
            _finish(study, trial, space, p, None, {**attrs, "error": str(e)})
            step += 1
            continue
        key = subset_key(result.ids)
        attrs.update(key=key, pre_fill=result.trace[-1]["n_in"], reused=key in evaluated)
        if key in evaluated:
            _finish(study, trial, space, p, evaluated[key].value, attrs)
        else:
            value = float(objective(result.ids))
            _finish(study, trial, space, p, value, {**attrs, "ids": json.dumps(result.ids)})
            evaluated[key] = Evaluated(key, value, p, recipe.as_dict(), result.ids, attrs["pre_fill"])
            bar.update(1)
        step += 1
    bar.close()
    return list(evaluated.values())


def _finish(study, trial, space: Space, p: dict, value: float | None, attrs: dict) -> None:
    """Record a step: tell the asked trial, or add the solver's own proposal as a finished trial
    (pruned when the recipe could not be materialised)."""
    import optuna  # noqa: PLC0415

    state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
    if trial is not None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, value, state=state)
    else:
        study.add_trial(optuna.trial.create_trial(params=p, distributions=distributions(space, p), value=value,
                                                  state=state, user_attrs=attrs))


def _local_proposal(done: list[Evaluated], space: Space, signals: Signals, final_n: int,
                    settings: SearchSettings, rng: np.random.Generator, data_seed: int) -> dict | None:
    """The local solver's next point: a reseeding probe after `patience` evaluations without
    improvement, else the best-UCB edit of the incumbent among those with a new subset."""
    values = [h.value for h in done]
    best_at = int(np.argmax(values))
    since = len(done) - 1 - best_at
    if since >= settings.patience and since % settings.patience == 0:
        return warmup_params(space, final_n / len(signals.ids), int(rng.integers(len(ZONES))), rng)
    incumbent = done[best_at].params
    seen = {h.key for h in done}
    evaluated_sets = [set(h.ids) for h in done]
    cands, xs, keys = [], [], set()
    for q in local_edits(incumbent, space, settings.candidates, rng):
        try:
            result = materialise(recipe_from_params(q, space), signals, final_n, data_seed)
        except RecipeError:
            continue
        key = subset_key(result.ids)
        if key in seen or key in keys:
            continue
        keys.add(key)
        cands.append(q)
        xs.append(np.concatenate([encode(q, space), subset_state(result.ids, result.trace[-1]["n_in"], signals,
                                                                 evaluated_sets, final_n)]))
    if not cands:
        return None  # every edit repeats a subset: an Optuna random draw instead
    hist_x = [np.concatenate([encode(h.params, space), subset_state(
        h.ids, h.pre_fill, signals, [e for e in evaluated_sets if e != set(h.ids)], final_n)]) for h in done]
    return cands[ucb_pick(np.asarray(hist_x), np.asarray(values), np.asarray(xs), settings.beta)]


def fixed_recipes(space: Space, signals: Signals, final_n: int, n: int, seed: int,
                  data_seed: int = 0) -> list[tuple[dict, list[str]]]:
    """`n` recipes of the space with distinct subsets, a function of `seed` alone: the warm-up's
    probes (one per retention zone), then Optuna RandomSampler draws; a recipe that empties the
    subset or repeats one is drawn again. Returns (recipe in params.yaml form, its ids) each,
    materialised as the searches materialise (data_seed). The proxy-check's recipes: spread over
    the space as the searches' first proposals are, so the check covers what the solvers compare."""
    import optuna  # noqa: PLC0415

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=step_seed(seed, 0, "check")))
    out, keys, step = [], set(), 0
    while len(out) < n:
        if step >= 50 * n:
            raise RecipeError(f"proxy check: only {len(out)} of {n} recipes with distinct subsets in {step} draws; "
                              "ask for fewer recipes (search.check.recipes)")
        if step < len(ZONES):
            p = warmup_params(space, final_n / len(signals.ids), step,
                              np.random.default_rng(step_seed(seed, step, "check-warmup")))
        else:
            p = suggest(study.ask(), space)
        step += 1
        recipe = recipe_from_params(p, space, "search.check")
        try:
            ids = materialise(recipe, signals, final_n, data_seed).ids
        except RecipeError:
            continue
        if (key := subset_key(ids)) not in keys:
            keys.add(key)
            out.append((recipe.as_dict(), ids))
    return out
