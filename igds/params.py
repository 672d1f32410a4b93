"""params.yaml -> one frozen, validated Params: the core's sections and each system's (igds.method,
igds.recipes, igds.audit), composed here, the one module that knows every system's schema."""

from __future__ import annotations

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
    # recipe@<pool>-<name>-<ratio>-<seed>, from the cached signals of every method above
    recipes: RecipeParams = field(default_factory=RecipeParams)

    def __post_init__(self) -> None:
        selectable = sorted(n for n in self.methods if not self.methods.selector_class(n).keeps_all)
        for i, name in enumerate(self.select.methods):
            if name not in selectable:
                if name in self.methods:
                    why = "it keeps the whole pool, so it is trained once per seed (finetune-full), not selected"
                elif name in registry.available():
                    why = f"add `{name}: {{}}` under methods: (its score stage comes from there)"
                else:
                    why = "it is not under methods: (a variant is declared there: `igds_k3: {method: igds, k: 3}`)"
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
    """Read and validate params.yaml: every section and key; an unknown one is an error."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {path} is not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"params file {path}: expected a mapping of sections, found {type(raw).__name__}")
    return from_dict(Params, raw or {}, "")
