"""The Selector protocol and the table of data-selection methods: a leaf module.

It imports nothing of the project, so anything may import it (SAELens's
`saes/registry.py` and lm-eval's lazy registry are the models). A method is one module
with a frozen params dataclass and a class decorated `@register("name", Params)`:

    @register("loss", LossParams)
    class LossSelector:
        shardable = True
        def score(self, pool, ctx) -> SelectorResult: ...

`METHODS` lists the built-in ones as lazy `"module:Class"` entries; any other name `m`
resolves to the module `baselines.m` (a new method is that one module plus one entry under
`methods:` in params.yaml). Nothing is imported until a method is asked for.

Params are checked without loading a model: a method module imports only light things
(numpy, this registry, igds.core.config) at its top and the model stack (torch, transformers,
the SAE) inside `score`. A params class may add checks that need more than its own keys,
as methods the validation calls when they exist (keys relative to the method's section):
`check_with(params)` (other sections of params.yaml), `check_model(n_layers, d_model)`
(the model's config), `check_features(features)` (features.json, for methods that need it).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

METHODS: dict[str, str] = {  # name -> "module:Class"; anything else is baselines.<name>
    "igds": "igds.method.resonance:IgdsSelector",
    "full": "baselines.full:FullSelector",
    "random": "baselines.random:RandomSelector",
    "loss": "baselines.loss:LossSelector",
    "ifd": "baselines.ifd:IfdSelector",
    "zip": "baselines.zip:ZipSelector",
    "kcenter": "baselines.kcenter:KCenterSelector",
    "less": "baselines.less:LessSelector",
    "rds": "baselines.rds:RdsSelector",
    "lexical": "baselines.lexical:LexicalSelector",
}
CONVENTION_PACKAGE = "baselines"
# what a selector may use besides the pool: the scoring model, the SAE, IGDS's features, the
# target task's solved examples (the prior split)
NEEDS = ("model", "sae", "features", "target")
RANDOMNESS = ("", "per_seed", "fixed")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For a method without parameters."""


@dataclasses.dataclass
class SelectorResult:
    """What `score` returns: one score per pool example (pool order, higher = keep, NaN =
    could not score, ranked last), facts about the run for the score metrics (`info`: token
    counts as `n_*`, averages as `mean_*`, so pieces of a pool merge), and per-example
    columns kept beside the score in scores/<method>.parquet (`extras`)."""

    scores: Any  # np.ndarray [n_pool]
    info: dict = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # column -> array [n_pool]


class Selector(Protocol):
    name: ClassVar[str]  # set by @register
    Params: ClassVar[type]  # set by @register
    needs: ClassVar[tuple[str, ...]]  # subset of NEEDS; () for none (the stage loads them before timing)
    shardable: ClassVar[bool]  # an example's score depends only on it and its batch (igds.core.scoring)
    keeps_all: ClassVar[bool]  # selection keeps every example whatever the ratio (full)
    # where the selection's own randomness lives: "" (deterministic: one subset serves every
    # training seed), "per_seed" (the class has `draw`: the select stage redraws it for each
    # training seed from the cached scores), or "fixed" (drawn once in `score`, e.g. LESS's
    # warm-up: the intervals do not cover it, and the report says so)
    randomness: ClassVar[str]

    def __init__(self, params: Any) -> None: ...

    def score(self, pool: list, ctx: Any) -> SelectorResult:
        """Scores of every pool example (igds.core.data.Record, in pool order) given an
        igds.core.context.ScoringContext; see SelectorResult."""
        ...

    # optional, with randomness = "per_seed":
    # def draw(self, frame: pd.DataFrame, seed: int, run_seed: int) -> np.ndarray
    #     scores/<method>.parquet's frame (id, score, extras) -> this training seed's scores,
    #     cheap (no model); `seed` is the global seed, `run_seed` the training seed.


_REGISTERED: dict[str, type] = {}


def register(name: str, params: type = NoParams) -> Callable[[type], type]:
    """Class decorator: `name`'s selector, with its params dataclass and the protocol's defaults."""
    def decorate(cls: type) -> type:
        if name in _REGISTERED and _REGISTERED[name] is not cls:
            raise ValueError(f"selector '{name}' is registered twice ({_REGISTERED[name].__module__} and "
                             f"{cls.__module__})")
        needs = tuple(getattr(cls, "needs", ()))
        unknown = [n for n in needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"selector '{name}' needs {unknown}; a selector may need {NEEDS}")
        cls.name, cls.Params, cls.needs = name, params, needs
        cls.shardable = bool(getattr(cls, "shardable", False))
        cls.keeps_all = bool(getattr(cls, "keeps_all", False))
        cls.randomness = "per_seed" if hasattr(cls, "draw") else str(getattr(cls, "randomness", ""))
        if cls.randomness not in RANDOMNESS:
            raise ValueError(f"selector '{name}' has randomness {cls.randomness!r}; one of {RANDOMNESS}")
        _REGISTERED[name] = cls
        return cls
    return decorate


def entry(name: str) -> str:
    """Where method `name` lives: its METHODS entry, else the module baselines.<name>."""
    return METHODS.get(name, f"{CONVENTION_PACKAGE}.{name}")


def _convention_names() -> list[str]:
    """Modules of the baselines package that the table does not list (found without importing them)."""
    spec = importlib.util.find_spec(CONVENTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    listed = {METHODS[n].split(":")[0] for n in METHODS}
    return [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
            if not m.name.startswith("_") and f"{CONVENTION_PACKAGE}.{m.name}" not in listed]


def available() -> list[str]:
    """Every method name: the table's and any baselines/<name>.py module; nothing is imported."""
    return sorted(set(METHODS) | set(_convention_names()) | set(_REGISTERED))


class UnknownMethod(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.method = name

    def __str__(self) -> str:
        return f"unknown method '{self.method}'{did_you_mean(self.method, available())}; available: {', '.join(available())}"


def closest(name: str, names) -> str | None:
    """The closest of `names` to a typo `name` (difflib), or None: what a message offers instead."""
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, names) -> str:
    """" (did you mean 'x'?)" for the closest of `names` to a typo, or ""."""
    match = closest(name, names)
    return f" (did you mean '{match}'?)" if match else ""


def selector_class(name: str) -> type:
    """The selector class of method `name`, importing its module on first use."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module, _, attr = entry(name).partition(":")
    if name not in METHODS and name not in _convention_names():
        raise UnknownMethod(name)
    importlib.import_module(module)  # the module's @register fills _REGISTERED
    cls = _REGISTERED.get(name)
    if cls is None or (attr and cls.__name__ != attr):
        raise ValueError(f"module {module} does not register a selector '{name}'"
                         + (f" as {attr}" if attr else "") + f" (use @register({name!r}, Params))")
    return cls


def build_selector(name: str, params: Any = None) -> Selector:
    """An instance of method `name` with its (already validated) params object."""
    cls = selector_class(name)
    return cls(cls.Params() if params is None else params)


def needing(methods: Mapping[str, Any], artifact: str) -> list[str]:
    """The methods of `methods` (names in params order) whose selector needs `artifact`
    (a name's selector is `methods.kind(name)` where the mapping has variants, igds.core.config.MethodParams)."""
    kind = getattr(methods, "kind", lambda name: name)
    return [name for name in methods if artifact in selector_class(kind(name)).needs]
