"""One run identity: (pool, subset name, ratio as written, seed) names every subset, checkpoint
and evaluation of the benchmark and the subset@, finetune@ and evaluate@ stages that make them
(pipelines.graph lists them for dvc.yaml), so the stages and the report agree on one name without
each building its own.

A subset's name is a selector's (igds, random, a variant), a recipe's, a search finalist's
(search_<solver>_s<seed>) or `full` (the whole pool: no ratio). The ratio travels as text, as
dvc.yaml writes it into stage names and paths (str of the float: 0.5, 0.25), and is parsed and
checked here once, with one set of bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from igds.core.config import RATIO_ALLOWED, ConfigError, ratio_ok

FULL = "full"  # the subset that is the whole pool (no ratio)


def ratio_text(value: float) -> str:
    """A ratio as dvc.yaml writes it into stage names and paths (0.5, 0.25, 0.001)."""
    return str(float(value))


def parse_ratio(text: str | float, where: str = "--ratio") -> str:
    """The ratio as written, checked: a share in (0, 1), in the spelling dvc.yaml gives it
    (0.5, not 0.50: the spelling names files)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not ratio_ok(value):
        raise ConfigError(f"{where} {text!r} is not allowed; expected {RATIO_ALLOWED}")
    if isinstance(text, str) and text != ratio_text(value):
        raise ConfigError(f"{where} {text!r}: write it as {ratio_text(value)} (the spelling dvc.yaml gives the files "
                          "it names)")
    return ratio_text(value)


@dataclass(frozen=True)
class RunId:
    """One subset of a pool, trained with one seed: its files and stage names."""

    pool: str
    name: str
    ratio: str | None  # as written; None: the whole pool (`full`)
    seed: int

    def __post_init__(self) -> None:
        if (self.ratio is None) != (self.name == FULL):
            raise ConfigError(f"run {self.name!r}: {'full has no ratio' if self.name == FULL else 'needs a ratio'} "
                              "(only the full subset, the whole pool, has none)")
        if self.ratio is not None:
            object.__setattr__(self, "ratio", parse_ratio(self.ratio))

    @property
    def stem(self) -> str:
        """<name>-<ratio>-s<seed>, or full-s<seed>: the file and folder name of the run's artifacts."""
        return f"{self.name}-s{self.seed}" if self.ratio is None else f"{self.name}-{self.ratio}-s{self.seed}"

    @property
    def share(self) -> float:
        """The ratio as a number (1.0 for full)."""
        return 1.0 if self.ratio is None else float(self.ratio)

    def subset(self, root: Path = Path("subsets")) -> Path:
        return root / self.pool / f"{self.stem}.jsonl"

    def selection_metrics(self, root: Path = Path("results/metrics")) -> Path:
        return root / self.pool / f"select-{self.stem}.json"

    def checkpoint(self, root: Path = Path("checkpoints")) -> Path:
        return root / self.pool / self.stem

    def evaluation(self, root: Path = Path("results/eval")) -> Path:
        return root / self.pool / self.stem

    @property
    def key(self) -> str:
        """<pool>-<stem>: the run's key in graph.yaml, and so its stages' names after the @."""
        return f"{self.pool}-{self.stem}"

    def stage(self, kind: str) -> str:
        """The stage of `kind` (subset, finetune, evaluate) that makes this run's artifact:
        <kind>@<pool>-<stem> (dvc.yaml's foreach over graph.yaml)."""
        return f"{kind}@{self.key}"
