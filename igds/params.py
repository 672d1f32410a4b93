"""params.yaml -> one frozen, validated Params: the core's sections and each system's (igds.method,
igds.recipes, igds.audit), composed here, the one module that knows every system's schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from igds.audit.config import AuditConfig
from igds.core import registry
from igds.core.config import (ConfigError, DataConfig, EvaluateConfig, FinetuneConfig, MethodParams, ModelConfig,
                              ReportConfig, SaeConfig, ScoringConfig, SelectConfig, _method_hook, check, from_dict,
                              parse_methods)
from igds.method.config import IdentifyConfig
from igds.recipes.config import FINALIST_PREFIX, RecipeParams, SearchConfig, finalist_name

@dataclass(frozen=True)
class Params:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig | None = None
    sae: SaeConfig = field(default_factory=SaeConfig)
    identify: IdentifyConfig = field(default_factory=IdentifyConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    # every method the pool is scored by (one score@<method> stage each), with its params;
    # absent: every built-in method with its defaults
    methods: MethodParams = field(default_factory=lambda: parse_methods({name: {} for name in registry.METHODS}))
    # data recipes (igds.recipes.recipe), each materialised into a subset per pool, ratio and seed by
    # subset@<pool>-<name>-<ratio>-s<seed>, from the cached signals of every method above
    recipes: RecipeParams = field(default_factory=RecipeParams)

    def __post_init__(self) -> None:
        selectable = sorted(n for n in self.methods if not self.methods.selector_class(n).keeps_all)
        for i, name in enumerate(self.select.methods):
            if name not in selectable:
                if name in self.methods:
                    why = "it keeps the whole pool, so it is trained once per seed (its subset is full-s<seed>), not selected"
                elif name in registry.available():
                    why = f"add `{name}: {{}}` under methods: (its score stage comes from there)"
                else:
                    close = registry.closest(name, selectable)
                    why = ("it is not under methods: (a variant is declared there: `igds_k3: {method: igds, k: 3}`)"
                           + (f"; did you mean '{close}'?" if close else ""))
                raise ConfigError(f"params.yaml: select.methods[{i}] = {name!r} is not allowed; expected one of "
                                  f"{', '.join(selectable)} ({why})")
        pools = self.data.pools if self.data is not None else ("mixed",)
        for i, pool in enumerate(self.search.pools):
            check(pool in pools, f"search.pools[{i}]", pool, f"one of data.pools ({', '.join(pools)})")
        if self.search.pools and (self.search.solvers or self.search.check.recipes):
            ratios = [i for i, r in enumerate(self.select.ratios) if abs(r - self.search.ratio) < 1e-9]
            check(bool(ratios), "search.ratio", self.search.ratio,
                  f"one of select.ratios {list(self.select.ratios)} (the recipe table compares the searches' "
                  "finalists with every single selector at the same final size)")
        for name in self.recipes:
            if name.startswith(FINALIST_PREFIX) or name in self.methods or name in ("full", "base"):
                raise ConfigError(f"params.yaml: recipes.{name}: the name is a method's or a search finalist's "
                                  f"({FINALIST_PREFIX}<solver>_s<seed>); recipes, methods and finalists name the same "
                                  "subsets/ files, so give the recipe another name")
        subsets = (*self.select.methods, *self.recipes)
        for i, name in enumerate(self.finetuned_methods):
            if name not in subsets:
                raise ConfigError(f"params.yaml: finetune.methods[{i}] = {name!r} is not selected; expected some of "
                                  f"select.methods or recipes ({', '.join(subsets)}): add it there, or drop it here")
        for name, method_params in self.methods.items():
            _method_hook(method_params, "check_with", f"methods.{name}", self)
        check(not self.audit.sets or len(self.audit.dpo.arms) > 0, "audit.dpo.arms", list(self.audit.dpo.arms),
              "at least one arm when audit.sets is set (report-audit@<set> reads the re-audits of the trained arms)")

    @property
    def finetuned_methods(self) -> tuple[str, ...]:
        """The selected methods and recipes that are fine-tuned and evaluated: finetune.methods,
        or every one of select.methods and recipes when it is null."""
        return (*self.select.methods, *self.recipes) if self.finetune.methods is None else self.finetune.methods

    @property
    def finalists(self) -> dict[str, tuple[str, int]]:
        """The searches' best recipes retrained at full fidelity: name -> (solver, search seed);
        the name is the method name of their subsets, checkpoints and eval runs."""
        return {finalist_name(s, k): (s, k) for s in self.search.solvers for k in self.search.seeds}

    def check_model(self, n_layers: int, d_model: int) -> None:
        """What the model's config decides: sae.layer and every method's layer settings."""
        check(0 <= self.sae.layer < n_layers, "sae.layer", self.sae.layer,
              f"a decoder layer of {self.model.name}: 0..{n_layers - 1}")
        for name, method_params in self.methods.items():
            _method_hook(method_params, "check_model", f"methods.{name}", n_layers, d_model)

    def check_features(self, features: dict, source: str) -> None:
        """What features.json decides, for every method that reads it."""
        for name in registry.needing(self.methods, "features"):
            _method_hook(self.methods[name], "check_features", f"methods.{name}", features, source)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml, or a profile of overrides (read_params): every section and
    key; an unknown one is an error."""
    return from_dict(Params, read_params(path), "")


# --- profiles: a file of overrides on top of another (lm-eval's `include:`, nanoGPT's configs) ----

INCLUDE, DELETE = "include", "delete"


class _Loader(yaml.SafeLoader):
    """PyYAML with YAML 1.2's exponent floats: 1e-05 is a number, as DVC (ruamel) reads it and
    writes it (`dvc exp run -S`), not the string PyYAML's YAML 1.1 makes of it."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {path} is not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"params file {path}: expected a mapping of sections, found {type(raw).__name__}")
    return raw or {}


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied: mappings merge key by key, anything else (a list, a
    value, null) replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def delete(params: dict, dotted: str, source: Path, _where: str = "") -> dict:
    """`params` without the key `dotted` (a.b.c); a key that is not there is an error."""
    head, _, rest = dotted.partition(".")
    if not isinstance(params, dict) or head not in params:
        raise ConfigError(f"{source}: delete: {_where + dotted!r} names no key of the params it includes")
    out = dict(params)
    if rest:
        out[head] = delete(params[head], rest, source, f"{_where}{head}.")
    else:
        del out[head]
    return out


def read_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw params a file stands for. A file without `include:` is whole (params.yaml); a
    profile holds `include: <file>` (relative to it, e.g. ../params.yaml), the keys it changes
    (mappings merge into the included params, anything else replaces) and `delete: [a.b, ...]`,
    keys of the included params it drops."""
    path = Path(path)
    raw = _read_yaml(path)
    if INCLUDE not in raw:
        check(DELETE not in raw, f"{path}: delete", raw.get(DELETE), "only in a profile (a file with include:)")
        return raw
    base_path = (path.parent / str(raw.pop(INCLUDE))).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: include: {base_path} includes itself")
    base = read_params(base_path, (*_seen, path.resolve()))
    drops = raw.pop(DELETE, None) or []
    check(isinstance(drops, list) and all(isinstance(d, str) for d in drops), f"{path}: delete", drops,
          "a list of dotted keys of the included params (data.mix, methods.kcenter)")
    for dotted in drops:
        base = delete(base, dotted, path)
    return merge(base, raw)


def diff(base: dict, full: dict) -> tuple[dict, list[str]]:
    """(the keys of `full` that differ from `base`, the dotted keys of `base` that `full` lacks):
    the profile that turns base into full."""
    changed: dict = {}
    dropped: list[str] = []
    for key, value in full.items():
        if isinstance(value, dict) and value and isinstance(base.get(key), dict) and base[key]:
            sub, sub_dropped = diff(base[key], value)
            if sub:
                changed[key] = sub
            dropped += [f"{key}.{d}" for d in sub_dropped]
        elif key not in base or base[key] != value:
            changed[key] = value
    dropped += [key for key in base if key not in full]
    return changed, dropped


class _Dumper(yaml.SafeDumper):
    """Lists of plain values on one line ([0, 1]), as params.yaml writes them."""


_Dumper.add_representer(list, lambda d, data: d.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(not isinstance(x, (dict, list)) for x in data)))


def dump_params(raw: dict) -> str:
    """Whole params (read_params) as the text of a params.yaml."""
    return yaml.dump(raw, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
