"""What the audit's stages share: --set checked against audit.sets, the pairs a stage reads."""

from __future__ import annotations

from pathlib import Path

from igds.core.config import ConfigError
from igds.params import Params
from pipelines.common import read_rows


def set_arg(params: Params, name: str):
    """--set must name a set of pairs under audit.sets; its settings."""
    if name not in params.audit.sets:
        raise ConfigError(f"--set {name!r} is not under audit.sets in params.yaml; expected one of "
                          f"{', '.join(params.audit.sets) or '(none)'}")
    return params.audit.sets[name]


def read_pairs(path: Path) -> list:
    """A prepare-pairs split (pairs/<set>/train.jsonl or heldout.jsonl) as Pair records."""
    from igds.audit.pairs import Pair  # noqa: PLC0415

    return [Pair(**row) for row in read_rows(path, "its prepare-pairs stage")]
