"""What the bench's parts measure, as dataclasses: one result type per part, the targets and
the run as a whole. bench.json is `to_jsonable(BenchResult)`; `from_jsonable` reads it
back (--resume keeps the parts an interrupted run finished)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """A stopwatch reading (bench.common.stopwatch); cpu_s is None where only wall time is known."""

    wall_s: float
    cpu_s: float | None = None


# --- 1. throughput ----------------------------------------------------------------------------

@dataclass
class PassTime:
    """One throughput pass over the pool: its best run and every run."""

    best_s: float
    tokens_per_s: float
    all_s: list[float]
    cpu_s: float
    tokenize_s: float | None = None  # the bare forward pass only: its split into tokenising + loop
    loop_s: float | None = None


@dataclass
class EncodeProfile:
    """Where IGDS's extra time goes (see bench.parts.encode_profile)."""

    forward_s: float
    encode_s: float
    gated_encode_s: float
    encode_share: float
    gated_encode_share: float
    n_scope_tokens: int
    positive_preact_share: float
    firing_share: float
    gated_max_abs_diff: float


@dataclass
class ThroughputResult:
    repeats: int
    layer: int
    n_layers_run: int
    n_layers_model: int
    d_sae: int
    k: int
    scope: str
    n_pool: int
    n_tokens: int
    batch_size: int
    max_len: int
    torch_threads: int
    bare_forward: PassTime
    igds_score: PassTime
    igds_loop: PassTime
    ratio: float  # the target: IGDS selector.score tokens/s over tokenising + the bare forward's
    ratio_loop: float  # the loops alone, both pre-tokenised
    runs: list[dict] = field(default_factory=list)  # every pass of every repeat, in run order
    encode_profile: EncodeProfile | None = None


# --- 2. selection -----------------------------------------------------------------------------

@dataclass
class MethodTime:
    """One method's scoring of the pool (best of the repeats)."""

    wall_s: float
    all_wall_s: list[float]
    cpu_s: float
    s_per_example: float
    auroc_on_task: float
    other_cores: float | None
    loadavg_start: list[float]
    info: dict  # the scalar entries of the selector's info
    x_igds: float | None = None  # wall time / IGDS's


@dataclass
class SelectionResult:
    n_pool: int
    repeats: int
    chunk_batches: int | None  # scoring.chunk_batches: shardable methods score in chunks, as the stage does
    methods: dict[str, MethodTime]


# --- 3. end to end ----------------------------------------------------------------------------

@dataclass
class IdentifySummary:
    top_n: int
    alphas: list[float]
    n_prior: int
    n_general: int
    n_recalled: int
    n_causal: int | None  # None for the frequency-only ablation (identify.interventional: false)
    n_ranked: int  # features in the ranking IGDS scores with
    ranking: list[int]  # its first 8


@dataclass
class FreshScore:
    """IGDS scoring of the pool with the SAE and features the e2e part made."""

    wall_s: float
    cpu_s: float
    chosen_features: list[int]
    auroc_on_task: float


@dataclass
class Reproduces:
    """Whether the e2e part's SAE and ranking equal the given ones (--sae/--features)."""

    sae_sha256: str
    given_sae_sha256: str | None = None
    given_ranking: list[int] | None = None
    identical_sae: bool | None = None
    identical_ranking: bool | None = None


@dataclass
class EndToEndResult:
    sae_steps: int
    sae_train_tokens: int | None  # sae.train_tokens: met or refused (None: every token the text gives)
    n_train_tokens: int  # token activations the SAE trained on
    n_heldout_tokens: int  # cached for the SAE's metrics
    identify: IdentifySummary
    # sae_cache, sae_train, sae_metrics (not in the fixed cost), sae_save, identify
    steps: dict[str, Timing]
    fixed_s: float
    n_pool: int
    artifacts: dict[str, str]  # sae, features: the folders it wrote
    reproduces: Reproduces
    score: FreshScore | None = None  # None when identification kept fewer than methods.igds.k features
    e2e_s: float | None = None
    sae_metrics: dict = field(default_factory=dict)  # what the sae stage writes to metrics/sae.json


@dataclass
class BreakEven:
    """Pool size above which IGDS end to end costs less than Loss (bench.parts.break_even)."""

    fixed_s: float
    igds_s_per_example: float
    loss_s_per_example: float
    n_break_even: int | None  # None: IGDS is not cheaper than Loss per example
    e2e_igds_s_at_n: float
    loss_s_at_n: float
    n: int
    e2e_over_loss_at_n: float | None


# --- 4. memory, 5. dvc ------------------------------------------------------------------------

@dataclass
class MemoryResult:
    n: int
    factor: int
    baseline: dict  # each probe: bench.child's JSON line
    forward: dict
    scoring: dict[str, dict]  # str(pool size) -> the scoring probe at n and factor x n
    ratio: float  # peak RSS at factor x n / at n
    increment_bytes: dict[str, int]  # forward, str(n), str(factor x n): peak over the baseline's
    increment_ratio: float | None


@dataclass
class DvcResult:
    params: str
    full_repro_s: float
    noop_repro_s: float
    noop_runs: list[dict]
    status_s: float
    clean_status: dict
    ratios_change: dict
    status_after_change_s: float
    stale: list[str]
    n_stale: int
    expected_stale: list[str]
    unexpected_stale: list[str]
    missing_stale: list[str]
    upstream_stale: list[str]


@dataclass
class FinetuneResult:
    """Fine-tuning steps at one batch shape, each probe a fresh process (bench.child train)."""

    batch: int
    seq: int
    steps: int
    probes: dict[str, dict]  # name -> bench.child's JSON line: model_loss, response_loss, bare, low_memory
    default_probe: str  # the probe that runs what params.yaml's finetune: section runs
    tokens_per_s_ratio: float  # default probe / bare forward+backward
    peak_rss_bytes: int  # the default probe's whole-process peak


# --- the run ----------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    measured: float
    op: str
    goal: float
    met: bool
    margin: float  # > 0: room left; < 0: short by
    margin_rel: float | None
    detail: str = ""


@dataclass
class Machine:
    cpu_count: int | None
    torch_threads: int
    platform: str
    python: str
    torch: str
    git: str | None
    loadavg_start: list[float]
    loadavg_end: list[float]
    cpu_share: dict  # bench.common.CpuShare.summary() over the whole run
    parts: dict[str, dict]  # part -> its CpuShare summary, finish time, and whether it was resumed


@dataclass
class RunConfig:
    params: str
    model: str
    device: str
    dtype: str
    n_pool: int
    n_pool_prepared: int
    scoring: dict
    methods_params: dict[str, dict]
    quick: bool
    identify_overrides: dict
    data: str
    sae: str | None
    features: str | None
    setup: dict


@dataclass
class BenchResult:
    created: str
    command: str
    parts: list[str]
    throughput: ThroughputResult | None = None
    selection: SelectionResult | None = None
    e2e: EndToEndResult | None = None
    memory: MemoryResult | None = None
    dvc: DvcResult | None = None
    finetune: FinetuneResult | None = None
    break_even: BreakEven | None = None
    errors: dict[str, str] = field(default_factory=dict)  # part -> the exception of a part that failed
    machine: Machine | None = None
    config: RunConfig | None = None
    notes: str = ""
    targets: list[Target] = field(default_factory=list)


def to_jsonable(result: Any) -> Any:
    return dataclasses.asdict(result)


def from_jsonable(tp: Any, value: Any) -> Any:
    """`value` (as json.load gives it) as type `tp`: dataclasses, `X | None`, dict[str, X] and
    list[X] are rebuilt; anything else is taken as it is. Unknown or missing keys raise TypeError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_jsonable(inner, value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__}: expected a mapping, found {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        return tp(**{key: from_jsonable(hints.get(key, Any), v) for key, v in value.items()})
    if origin is dict and isinstance(value, dict):
        _, item = typing.get_args(tp)
        return {k: from_jsonable(item, v) for k, v in value.items()}
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(tp)
        return [from_jsonable(item, v) for v in value]
    return value
