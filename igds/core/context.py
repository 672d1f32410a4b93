"""What a selector may use besides the pool: the scoring model (loaded once, on first use),
tokenisation cached per context, the artifacts it declared it needs, seeded generators.
The eval split is deliberately absent."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from igds.core.data import Record


@dataclasses.dataclass
class ScoringContext:
    seed: int
    target: list[Record]  # solved target-task examples (the prior split): LESS's validation set
    model_name: str = "smollm2-135m-instruct"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 16
    max_len: int = 384
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)  # e.g. sae/, features/
    loader: Callable[[], Any] | None = None  # returns a LoadedModel; default: igds.core.models.loading.load_model
    _loaded: Any = None
    _tokens: dict = dataclasses.field(default_factory=dict)  # record id -> (input ids, response start)

    def model(self):
        """The scoring model and tokenizer (loaded once, on first use)."""
        if self._loaded is None:
            if self.loader is not None:
                self._loaded = self.loader()
            else:
                from igds.core.models.loading import load_model  # noqa: PLC0415

                self._loaded = load_model(self.model_name, self.device, self.dtype)
        return self._loaded

    def tokenized(self, records: list[Record]):
        """`records` in chat format, tokenised once per context (chunks and shards of a pool
        reuse the ids the length ordering computed)."""
        from igds.core.tokens import Tokenized, tokenize_records  # noqa: PLC0415

        todo = [r for r in records if r.id not in self._tokens]
        if todo:
            tok = tokenize_records(self.model().tokenizer, todo, self.max_len)
            self._tokens.update(zip((r.id for r in todo), zip(tok.input_ids, tok.response_start, tok.content)))
        rows = [self._tokens[r.id] for r in records]
        return Tokenized([ids for ids, _, _ in rows], [start for _, start, _ in rows],
                         [content for _, _, content in rows])

    def artifact(self, name: str) -> Path:
        """The directory of an artifact the selector declared in `needs` (e.g. 'sae')."""
        if name not in self.artifacts:
            raise KeyError(f"the scoring context has no '{name}' artifact; declare it in the selector's `needs`")
        return Path(self.artifacts[name])

    def rng(self, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *salt])
