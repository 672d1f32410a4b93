"""Data recipes (DESIGN: Recipe search; AutoSelection's fixed-pool recipes): an ordered
`process:` list of operators in Data-Juicer's convention,

    recipes:
      filtered_igds:
        process:
          - score_filter: {signal: igds, keep: top, share: 0.8}
          - dedup: {kind: minhash, threshold: 0.8}
          - fill: {signal: igds}

materialised over the pool's cached signals (`Signals`: every selector's score, IGDS's pooled
activations of the recalled features, k-center's hidden states, lengths and texts) into a
subset of the fixed pool that the finetune/evaluate/report stages take like a selector's.

Each step maps the current subset (positions in the pool, in an order) to a new one. Shares
and bands are quantiles of the *current* subset, so a recipe's params do not depend on the
pool's size. Where the order matters (dedup and semdedup keep the first of a group), a filter
leaves its subset in its own ranking's order, as AutoSelection's filters do. The last step is
always `fill`, which cuts or tops up to the final size (ceil(ratio x pool), the size a
selector's top-k has), so recipes and selectors are compared at one size; AutoSelection has no
final size. Everything is seeded: a recipe, its signals, the final size and the seed give the
same ids in every run (AutoSelection's truncate step is unseeded). Ties break by the seeded
hash of the id that selection uses (igds.core.selection.tie_key).

A bad recipe (unknown operator, a param out of range, a signal no method provides) is a
one-line ConfigError naming its step; a step that empties the subset is a RecipeError naming
the step, raised while materialising.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igds.core.config import ConfigError, check, fail, from_dict
from igds.core.selection import ranking

LENGTH = "length"  # the built-in signal: characters of prompt + response
SPACES = ("hidden", "features")  # vector spaces: k-center's hidden states, IGDS's feature activations
FEATURE_PREFIX = "a"  # IGDS keeps feature f's pooled activation over every recalled feature as column a<f>
HIDDEN_PREFIX = "h"  # k-center keeps its embedding as columns h0..h<d-1>


class RecipeError(ConfigError):
    """A recipe that cannot be materialised on these signals (a step emptied the subset, say)."""


@dataclass
class Signals:
    """What a recipe reads about the pool: `ids` in pool order, scalar signals by name (every
    selector's score under its method name, and `length`), vector spaces by name, texts."""

    ids: list[str]
    values: dict[str, np.ndarray]  # name -> [n] float (NaN: unscored)
    spaces: dict[str, np.ndarray] = field(default_factory=dict)  # "hidden" / "features" -> [n, d]
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, v in list(self.values.items()) + list(self.spaces.items()):
            if len(v) != n:
                raise ValueError(f"signal {name!r} has {len(v)} rows for {n} pool examples")
        if self.texts and len(self.texts) != n:
            raise ValueError(f"{len(self.texts)} texts for {n} pool examples")

    def value(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise RecipeError(f"signal {name!r} is not cached; available: {', '.join(sorted(self.values))}")
        return self.values[name]

    def space(self, name: str) -> np.ndarray:
        if name not in self.spaces:
            raise RecipeError(f"space {name!r} is not cached (hidden: a kcenter method's scores; features: "
                              f"igds's); available: {', '.join(sorted(self.spaces)) or 'none'}")
        return self.spaces[name]


@dataclass
class Context:
    """A materialisation's fixed inputs: the final size and the seeds."""

    signals: Signals
    final_n: int
    seed: int  # the global seed (ties)
    rng: np.random.Generator  # seeded by (seed, training seed): mix's and diversify's draws

    def order(self, idx: np.ndarray, values: np.ndarray, descending: bool = True) -> np.ndarray:
        """`idx` sorted by `values` (NaN last), ties by the seeded hash of the id (igds.core.selection.ranking)."""
        order = ranking([self.signals.ids[i] for i in idx], values, self.seed, descending)
        return idx[np.asarray(order, dtype=np.int64)] if order else idx


def _n_keep(share: float, n: int) -> int:
    return min(n, math.ceil(share * n))


def _check_share(value: float, key: str) -> None:
    check(0.0 < value <= 1.0, key, value, "a share of the current subset in (0, 1]")


def _check_band(band: Sequence[float], key: str) -> None:
    check(len(band) == 2 and 0.0 <= band[0] < band[1] <= 1.0, key, list(band),
          "[lo, hi] quantiles of the current subset with 0 <= lo < hi <= 1")


def _band(idx: np.ndarray, values: np.ndarray, lo: float, hi: float, ctx: Context) -> np.ndarray:
    """The examples whose rank (ascending) lies in the [lo, hi] quantile band, in descending order."""
    ranked = ctx.order(idx, values, descending=False)
    n = len(ranked)
    start, stop = math.floor(lo * n), max(math.floor(lo * n) + 1, math.ceil(hi * n))
    return ranked[start:stop][::-1]


# ---- operators: a frozen params dataclass with `apply(idx, ctx) -> idx` and `reads()` (its signals) ----

@dataclass(frozen=True)
class ScoreFilter:
    """Keep the top / bottom `share` of the current subset by a signal, or a quantile band of it.
    Examples the signal could not score (NaN) are dropped first, as AutoSelection's filters do."""

    signal: str = "igds"
    keep: str = "top"  # top | bottom | band
    share: float = 0.5  # top / bottom: share of the current subset kept
    band: tuple[float, ...] = (0.25, 0.75)  # band: [lo, hi] quantiles of the signal in the current subset

    def __post_init__(self) -> None:
        check(self.keep in ("top", "bottom", "band"), "keep", self.keep, "one of top, bottom, band")
        _check_share(self.share, "share")
        _check_band(self.band, "band")

    def reads(self) -> list[str]:
        return [self.signal]

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        values = ctx.signals.value(self.signal)[idx]
        scored = ~np.isnan(values)
        idx, values = idx[scored], values[scored]
        if len(idx) == 0:
            return idx
        if self.keep == "band":
            return _band(idx, values, self.band[0], self.band[1], ctx)
        ranked = ctx.order(idx, values, descending=self.keep == "top")
        return ranked[:_n_keep(self.share, len(idx))]


@dataclass(frozen=True)
class Fuse:
    """Keep the top `share` of the current subset by a mix of two signals: `weight` x a + (1 -
    weight) x b, each as its rank in the subset (0..1) or its z-score there."""

    signals: tuple[str, ...] = ("igds", "loss")
    how: str = "rank"  # rank | zsum
    weight: float = 0.5
    share: float = 0.5

    def __post_init__(self) -> None:
        check(len(self.signals) == 2 and self.signals[0] != self.signals[1], "signals", list(self.signals),
              "two different signals")
        check(self.how in ("rank", "zsum"), "how", self.how, "one of rank, zsum")
        check(0.0 <= self.weight <= 1.0, "weight", self.weight, "a weight in [0, 1] on the first signal")
        _check_share(self.share, "share")

    def reads(self) -> list[str]:
        return list(self.signals)

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        parts = []
        for name in self.signals:
            v = ctx.signals.value(name)[idx].astype(float)
            if self.how == "rank":
                from scipy.stats import rankdata  # noqa: PLC0415

                r = rankdata(np.where(np.isnan(v), -np.inf, v), method="average")
                parts.append((r - 1) / max(len(v) - 1, 1))
            else:
                sd = np.nanstd(v)
                parts.append(np.nan_to_num((v - np.nanmean(v)) / (sd if sd > 0 else 1.0), nan=-np.inf))
        fused = self.weight * parts[0] + (1.0 - self.weight) * parts[1]
        return ctx.order(idx, fused)[:_n_keep(self.share, len(idx))]


@dataclass(frozen=True)
class LengthBand:
    """Keep the examples whose length lies in the [lo, hi] quantile band of the current subset."""

    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        _check_band((self.lo, self.hi), "lo")

    def reads(self) -> list[str]:
        return [LENGTH]

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        kept = set(_band(idx, ctx.signals.value(LENGTH)[idx], self.lo, self.hi, ctx).tolist())
        return np.asarray([i for i in idx if i in kept], dtype=np.int64)  # the current order stays


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass(frozen=True)
class Dedup:
    """Drop exact duplicates (normalised text: lower case, whitespace collapsed) or MinHash
    near-duplicates (Jaccard of word n-gram shingles >= threshold, datasketch's MinHashLSH
    with each candidate pair checked on its MinHash estimate), keeping the first in order."""

    kind: str = "minhash"  # exact | minhash
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5  # words per shingle

    def __post_init__(self) -> None:
        check(self.kind in ("exact", "minhash"), "kind", self.kind, "one of exact, minhash")
        check(0.0 < self.threshold < 1.0, "threshold", self.threshold, "a Jaccard similarity in (0, 1)")
        check(16 <= self.num_perm <= 1024, "num_perm", self.num_perm, "an integer in [16, 1024]")
        check(1 <= self.ngram <= 16, "ngram", self.ngram, "an integer in [1, 16]")

    def reads(self) -> list[str]:
        return []

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        texts = ctx.signals.texts
        if self.kind == "exact":
            seen, kept = set(), []
            for i in idx:
                key = hashlib.sha256(_normalised(texts[i]).encode()).digest()
                if key not in seen:
                    seen.add(key)
                    kept.append(i)
            return np.asarray(kept, dtype=np.int64)
        from datasketch import MinHash, MinHashLSH  # noqa: PLC0415

        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        sketches, kept = {}, []
        for i in idx:
            words = _normalised(texts[i]).split(" ")
            shingles = {" ".join(words[j:j + self.ngram]) for j in range(max(1, len(words) - self.ngram + 1))}
            mh = MinHash(num_perm=self.num_perm, seed=ctx.seed)
            mh.update_batch([s.encode() for s in sorted(shingles)])
            if any(sketches[k].jaccard(mh) >= self.threshold for k in lsh.query(mh)):
                continue
            key = str(int(i))
            lsh.insert(key, mh)
            sketches[key] = mh
            kept.append(i)
        return np.asarray(kept, dtype=np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class SemDedup:
    """Drop semantic near-duplicates: an example whose cosine similarity to an already kept
    one (in `space`) is >= threshold, in the current order."""

    space: str = "hidden"  # hidden | features
    threshold: float = 0.95

    def __post_init__(self) -> None:
        check(self.space in SPACES, "space", self.space, f"one of {', '.join(SPACES)}")
        check(0.0 < self.threshold < 1.0, "threshold", self.threshold, "a cosine similarity in (0, 1)")

    def reads(self) -> list[str]:
        return [f"space:{self.space}"]

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        x = _unit(ctx.signals.space(self.space)[idx])
        kept: list[int] = []
        for j in range(len(idx)):
            if kept and float((x[kept] @ x[j]).max()) >= self.threshold:
                continue
            kept.append(j)
        return idx[np.asarray(kept, dtype=np.int64)]


@dataclass(frozen=True)
class Mix:
    """Re-balance the current subset over k-means clusters of `space`: keep `share` of it, each
    cluster's quota proportional to its size ** (1 / temperature) (1: as it is; large: equal
    clusters); within a cluster the top by `signal`, or a seeded draw when it is null.
    The task label is never read (it is for analysis only)."""

    space: str = "hidden"
    clusters: int = 8
    temperature: float = 1.0
    share: float = 0.5
    signal: str | None = None

    def __post_init__(self) -> None:
        check(self.space in SPACES, "space", self.space, f"one of {', '.join(SPACES)}")
        check(2 <= self.clusters <= 1000, "clusters", self.clusters, "an integer in [2, 1000]")
        check(0.05 <= self.temperature <= 100.0, "temperature", self.temperature, "a temperature in [0.05, 100]")
        _check_share(self.share, "share")

    def reads(self) -> list[str]:
        return [f"space:{self.space}"] + ([self.signal] if self.signal else [])

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        from scipy.cluster.vq import kmeans2  # noqa: PLC0415

        n, m = len(idx), _n_keep(self.share, len(idx))
        k = min(self.clusters, n)
        x = _unit(ctx.signals.space(self.space)[idx])
        _, labels = kmeans2(x, k, minit="++", seed=ctx.rng)
        sizes = np.bincount(labels, minlength=k)
        quota = _quotas(sizes, m, self.temperature)
        values = ctx.signals.value(self.signal)[idx] if self.signal else ctx.rng.random(n)
        picked = []
        for c in range(k):
            members = np.flatnonzero(labels == c)
            ranked = ctx.order(members, values[members])
            picked.extend(ranked[:quota[c]].tolist())
        return idx[np.sort(np.asarray(picked, dtype=np.int64))]  # the current order stays


def _quotas(sizes: np.ndarray, m: int, temperature: float) -> np.ndarray:
    """Integer quotas summing to m, proportional to sizes ** (1 / T), none above its size
    (largest remainders; what a full cluster cannot take goes to the others)."""
    quota = np.zeros(len(sizes), dtype=np.int64)
    open_ = sizes > 0
    left = m
    while left > 0 and open_.any():
        w = np.where(open_, sizes.astype(float) ** (1.0 / temperature), 0.0)
        want = w / w.sum() * left
        add = np.minimum(np.floor(want).astype(np.int64), sizes - quota)
        rest = left - int(add.sum())
        order = np.argsort(-(want - np.floor(want)), kind="stable")
        for c in order:
            if rest == 0:
                break
            if open_[c] and quota[c] + add[c] < sizes[c]:
                add[c] += 1
                rest -= 1
        if add.sum() == 0:
            break
        quota += add
        left = m - int(quota.sum())
        open_ = quota < sizes
    return quota


@dataclass(frozen=True)
class Diversify:
    """Keep `share` of the current subset by a greedy diversity order on it: k-center on
    `space` (first center a seeded draw) or ZIP on the texts (igds.core.diversity)."""

    method: str = "kcenter"  # kcenter | zip
    share: float = 0.5
    space: str = "hidden"  # kcenter's space
    k1: int = 200  # zip's stage sizes (baselines.zip.ZipParams)
    k2: int = 20
    k3: int = 10

    def __post_init__(self) -> None:
        check(self.method in ("kcenter", "zip"), "method", self.method, "one of kcenter, zip")
        _check_share(self.share, "share")
        check(self.space in SPACES, "space", self.space, f"one of {', '.join(SPACES)}")
        check(self.k1 >= 1 and 1 <= self.k2 <= self.k1 and 1 <= self.k3 <= self.k2, "k1", [self.k1, self.k2, self.k3],
              "zip's stage sizes with k1 >= k2 >= k3 >= 1")

    def reads(self) -> list[str]:
        return [f"space:{self.space}"] if self.method == "kcenter" else []

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        from igds.core.diversity import kcenter_order, zip_order  # noqa: PLC0415

        m = _n_keep(self.share, len(idx))
        if self.method == "kcenter":
            x = _unit(ctx.signals.space(self.space)[idx])
            order = kcenter_order(x, int(ctx.rng.integers(len(idx))), m)
        else:
            texts = [ctx.signals.texts[i].encode() for i in idx]
            order, _ = zip_order(texts, self.k1, self.k2, self.k3, max_select=m)
        return idx[order[:m]]


@dataclass(frozen=True)
class Fill:
    """Cut or top up to the final size: keep the current subset's top by `signal`, or add the
    rest of the pool's top by it. Always the last step."""

    signal: str = "igds"

    def reads(self) -> list[str]:
        return [self.signal]

    def apply(self, idx: np.ndarray, ctx: Context) -> np.ndarray:
        values = ctx.signals.value(self.signal)
        if len(idx) >= ctx.final_n:
            return ctx.order(idx, values[idx])[:ctx.final_n]
        rest = np.setdiff1d(np.arange(len(ctx.signals.ids)), idx)
        added = ctx.order(rest, values[rest])[:ctx.final_n - len(idx)]
        return np.concatenate([idx, added])


OPERATORS: dict[str, type] = {
    "score_filter": ScoreFilter, "fuse": Fuse, "length_band": LengthBand, "dedup": Dedup,
    "semdedup": SemDedup, "mix": Mix, "diversify": Diversify, "fill": Fill,
}


@dataclass(frozen=True)
class Step:
    operator: str
    params: Any

    def as_dict(self) -> dict:
        raw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.params).items()}
        return {self.operator: raw}


@dataclass(frozen=True)
class Recipe:
    """An ordered `process:` list of steps; `where` names it in errors (recipes.<name>)."""

    steps: tuple[Step, ...]
    where: str = "recipe"

    def signals(self) -> set[str]:
        """Every scalar signal and `space:<name>` the recipe reads."""
        return {s for step in self.steps for s in step.params.reads()}

    def as_dict(self) -> dict:
        """The params.yaml form (what the search writes as its best recipe's YAML)."""
        return {"process": [step.as_dict() for step in self.steps]}


def parse_recipe(raw: Any, where: str = "recipe") -> Recipe:
    """A recipe from its params.yaml mapping {process: [- operator: {params}, ...]}; every
    problem is one line naming the step."""
    if not isinstance(raw, Mapping) or set(raw) != {"process"} or not isinstance(raw["process"], list):
        raise ConfigError(f"params.yaml: {where}: expected a mapping with one key, `process:`, a list of "
                          "`- operator: {params}` steps")
    steps = []
    for i, item in enumerate(raw["process"]):
        key = f"{where}.process[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(f"params.yaml: {key}: expected one `- operator: {{params}}` mapping, got {item!r}")
        (name, params), = item.items()
        if name not in OPERATORS:
            raise ConfigError(f"params.yaml: {key}: unknown operator {name!r}; available: {', '.join(OPERATORS)}")
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise ConfigError(f"params.yaml: {key}.{name} = {params!r} is not allowed; expected a mapping of params")
        steps.append(Step(name, from_dict(OPERATORS[name], dict(params), f"{key}.{name}")))
    if not steps or steps[-1].operator != "fill":
        raise ConfigError(f"params.yaml: {where}.process: the last step must be `fill` (it cuts or tops up to the "
                          "final size, the ratio's share of the pool); add `- fill: {signal: <a method>}`")
    if any(step.operator == "fill" for step in steps[:-1]):
        i = next(j for j, step in enumerate(steps[:-1]) if step.operator == "fill")
        raise ConfigError(f"params.yaml: {where}.process[{i}]: `fill` is the last step only")
    return Recipe(tuple(steps), where)


def signal_sources(params) -> tuple[set[str], dict[str, str]]:
    """What recipes can read under `params` (igds.core.config.Params): the scalar signals (every
    method's score by its name, and `length`) and the vector spaces with the method providing
    each (hidden: k-center's embeddings; features: IGDS's pooled feature activations)."""
    spaces: dict[str, str] = {}
    for name in params.methods:
        space = {"kcenter": "hidden", "igds": "features"}.get(params.methods.kind(name))
        if space and space not in spaces:
            spaces[space] = name
    return {*params.methods, LENGTH}, spaces


def parse_recipes(params) -> dict[str, Recipe]:
    """Every recipe of params.yaml `recipes:` parsed and checked against the signals the
    methods provide; a problem is one line naming the recipe's step."""
    available, spaces = signal_sources(params)
    out = {}
    for name, raw in params.recipes.items():
        out[name] = parse_recipe(raw, f"recipes.{name}")
        check_signals(out[name], available, spaces)
    return out


def check_signals(recipe: Recipe, available: set[str], spaces: Mapping[str, str]) -> None:
    """Every signal the recipe reads is provided: `available` scalar signals (method names and
    `length`); `spaces` maps a space to the method that provides it."""
    for i, step in enumerate(recipe.steps):
        for s in step.params.reads():
            if s.startswith("space:"):
                space = s.split(":", 1)[1]
                if space not in spaces:
                    fail(f"{recipe.where}.process[{i}].{step.operator}.space", space,
                         f"a space some method of methods: provides ({', '.join(sorted(spaces)) or 'none'}: "
                         "hidden comes from kcenter, features from igds)")
            elif s not in available:
                fail(f"{recipe.where}.process[{i}].{step.operator}.signal", s,
                     f"a signal of the pool: one of {', '.join(sorted(available))}")


@dataclass
class Materialised:
    ids: list[str]  # the subset, in its final order
    trace: list[dict]  # per step: operator, n_in, n_out


def materialise(recipe: Recipe, signals: Signals, final_n: int, seed: int, run_seed: int = 0) -> Materialised:
    """Run the recipe's steps over the whole pool; `final_n` is the size `fill` ends at, and
    (seed, run_seed) seed every draw (run_seed: the training seed, as select's per-seed draws)."""
    n = len(signals.ids)
    if not 0 < final_n <= n:
        raise RecipeError(f"{recipe.where}: final size {final_n} is outside 1..{n} (the pool)")
    ctx = Context(signals, final_n, seed, np.random.default_rng([seed, run_seed, 0x52435045]))
    idx = np.arange(n, dtype=np.int64)
    trace = []
    for i, step in enumerate(recipe.steps):
        out = np.asarray(step.params.apply(idx, ctx), dtype=np.int64)
        trace.append({"step": i, "operator": step.operator, "n_in": int(len(idx)), "n_out": int(len(out))})
        if len(out) == 0:
            raise RecipeError(f"{recipe.where}.process[{i}] ({step.operator}): the subset is empty after this step "
                              f"(it had {len(idx)}); loosen the step's params or move it")
        if len(set(out.tolist())) != len(out) or not set(out.tolist()) <= set(range(n)):
            raise RecipeError(f"{recipe.where}.process[{i}] ({step.operator}): returned repeated or unknown examples")
        idx = out
    if len(idx) != final_n:  # fill guarantees it; a guard against an operator's bug
        raise RecipeError(f"{recipe.where}: ended with {len(idx)} examples, not the final size {final_n}")
    return Materialised([signals.ids[i] for i in idx], trace)


def signals_from_scores(pool: Sequence, frames: Mapping[str, Any], spaces: Mapping[str, str]) -> Signals:
    """The Signals of `pool` (records) from the score stages' frames (method name -> the frame of
    scores/<pool>/<method>.parquet: id, score, extras); `spaces` maps a space to the method whose
    frame holds it (signal_sources): hidden = k-center's h<j> columns, features =
    IGDS's a<f> columns."""
    ids = [r.id for r in pool]
    values = {}
    for name, frame in frames.items():
        if list(frame["id"]) != ids:
            raise RecipeError(f"the scores of {name!r} are not of this pool (ids differ); rerun its score stage")
        values[name] = frame["score"].to_numpy(dtype=float)
    texts = [f"{r.prompt}\n\n{r.output}" for r in pool]
    values[LENGTH] = np.array([len(t) for t in texts], dtype=float)
    prefixes = {"hidden": HIDDEN_PREFIX, "features": FEATURE_PREFIX}
    vectors = {}
    for space, name in spaces.items():
        cols = [c for c in frames[name].columns if re.fullmatch(rf"{prefixes[space]}\d+", c)]
        if cols:
            vectors[space] = frames[name][cols].to_numpy(dtype=float)
    return Signals(ids, values, vectors, texts)


def subset_key(ids: Sequence[str]) -> str:
    """A subset's identity (order-free): identical subsets are never fine-tuned twice."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
