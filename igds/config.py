"""params.yaml -> frozen, validated dataclasses.

Every section is checked once, at the stage entry point: unknown keys, wrong types and
out-of-range values raise ConfigError naming the key, the bad value and what is allowed.
Nothing below the entry point looks a key up in a dict.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from igds import registry


# tokens whose activations count: the response (its template tokens, e.g. the end-of-turn marker,
# included), the response's own text (response_content: no template tokens), the record's own text
# (content: prompt and response, not the chat template's system prompt and role markers), or every
# token
SCOPES = ("response", "response_content", "content", "all")
# the scopes each scope's tokens include: a feature recalled on one scope fires only where a
# scope that includes it looks (identify.scope must be inside methods.igds.scope)
SCOPE_INCLUDES = {"all": frozenset(SCOPES), "response": frozenset({"response", "response_content"}),
                  "content": frozenset({"content", "response_content"}),
                  "response_content": frozenset({"response_content"})}
# damage done to a share of a within-task pool's examples (igds.data.degrade)
DEGRADE_KINDS = ("wrong_answer", "dropped_step", "shuffled_steps", "truncated")
# candidate pools a run selects from, each through its own score/select/finetune/evaluate stages:
# mixed: data.splits.pool's on-task share plus data.mix's distractor tasks (the pool split alone
# without data.mix); within: data.splits.pool.n examples of the target task only, data.degrade
# damaging a share of them
POOLS = ("mixed", "within")
POOLING = ("max", "mean")  # an example's activation over its scoped tokens


class ConfigError(ValueError):
    """A bad parameter: the message names the key, the value and what is allowed."""


class _KeyError(ConfigError):
    """A bad value whose key is still relative to the dataclass that found it."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed

    def __str__(self) -> str:
        return f"params.yaml: {self.key} = {self.value!r} is not allowed; expected {self.allowed}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    """A bad value: `key` relative to the params dataclass raising it (from_dict makes it absolute)."""
    raise _KeyError(key, value, allowed)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
            fail(key, value, "a value")
        return _convert(args[0], value, key)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            fail(key, value, "a list")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # dict[str, <section>]: named sections (audit.sets)
        _, item = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            fail(key, value, "a mapping of names to sections")
        for name in value:
            check(isinstance(name, str) and re.fullmatch(r"[a-z0-9_]+", name) is not None, key, name,
                  "names of lower-case letters, digits and '_' (they name stages and folders)")
        return {name: _convert(item, v, f"{key}.{name}") for name, v in value.items()}
    if tp is MethodParams:
        return parse_methods(value, key)
    if tp is RecipeParams:
        return parse_recipes(value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is dict:
        if not isinstance(value, dict):
            fail(key, value, "a mapping")
        return {k: ({} if v is None else v) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, value, "a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, value, "an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail(key, value, "true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            fail(key, value, "a string")
        return value
    raise TypeError(f"unsupported field type {tp} for {key}")


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a params mapping, rejecting unknown keys by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(where, data, f"a mapping with keys {[f.name for f in dataclasses.fields(cls)]}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            what = "key" if where else "section"
            raise ConfigError(f"params.yaml: unknown {what} {_join(where, key)}; allowed {what}s: {', '.join(sorted(names))}")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except _KeyError as e:
        e.key = _join(where, e.key)  # raised by this class's own checks: make the key absolute
        raise
    except TypeError as e:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"params.yaml: {where or 'top level'} is missing required key(s) {', '.join(missing)}") from e


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """fail(key, value, allowed) unless `ok`: the one-line check every params class uses."""
    if not ok:
        fail(key, value, allowed)


SOURCE_KINDS = ("reasoning_gym", "jsonl", "hf")
RECORD_FORMATS = ("auto", "gsm8k", "alpaca")
# preference pairs' shapes (igds.data.preference): standard {prompt, chosen, rejected} strings (TRL's),
# hh (HH-RLHF: two transcripts that share the prompt), ultrafeedback (UltraFeedback-binarised: message lists)
PAIR_FORMATS = ("auto", "standard", "hh", "ultrafeedback")
PLANT_PLACES = ("start", "end")  # where a planted concept goes in a response
# how the poisoning generator makes an answer wrong (igds.data.preference): 'matched' near misses
# keep the right answer's sign and length, and as many wrong answers are 0 as right ones; 'near'
# draws near misses that may cross 0, grow a digit, and are 0 less often than right answers
WRONG_ANSWERS = ("matched", "near")
# the audit's interventions (igds.intervene): every pair; the pairs a flagged concept carries dropped;
# as many dropped at random; every pair with the flagged concepts' score difference as a DPO margin offset
AUDIT_ARMS = ("naive", "filter", "random", "shaping")
# the arms stage oracle@<set> writes from what was planted: the planted pairs dropped; the same pairs
# as they were before anything was planted (and, from a file, the pairs as read)
TRUTH_ARMS = ("oracle", "unpoisoned")


@dataclass(frozen=True)
class SourceConfig:
    """Where one split's records come from."""

    kind: str
    tasks: tuple[str, ...] = ()  # reasoning_gym dataset names, drawn in equal shares
    # records to take (reasoning_gym: required; files: None = all). Never a key named `size`:
    # DVC's run cache drops params named size/nfiles (treeverse/dvc#10296)
    n: int | None = None
    seed: int = 0
    path: str | None = None  # jsonl: a file; hf: a hub id or a local dataset dir
    name: str | None = None  # hf: config name (e.g. 'main' for openai/gsm8k)
    split: str = "train"  # hf: split
    format: str = "auto"  # jsonl/hf record shape: gsm8k (question/answer) or alpaca
    task: str | None = None  # jsonl/hf: task label of the records (default: file stem / dataset id)
    strip_calculator: bool = True  # gsm8k: drop '<<48/2=24>>' calculator annotations
    # reasoning_gym: the datasets' own config for every task of the source (e.g. {max_digits: 2,
    # max_terms: 3} for chain_sum: the difficulty); size and seed are set by the split
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.kind in SOURCE_KINDS, "kind", self.kind, f"one of {SOURCE_KINDS}")
        check(self.format in RECORD_FORMATS + PAIR_FORMATS[1:], "format", self.format,
              f"one of {RECORD_FORMATS} (SFT records) or {PAIR_FORMATS} (audit.data: preference pairs)")
        check(self.n is None or self.n > 0, "n", self.n, "a positive integer or null (all)")
        if self.kind == "reasoning_gym":
            check(len(self.tasks) > 0, "tasks", self.tasks, "at least one reasoning-gym dataset name")
            check(not {"size", "seed"} & set(self.options), "options", self.options,
                  "the dataset's config without size and seed (the split's n and seed set them)")
        else:
            check(not self.options, "options", self.options, "nothing: options are for kind reasoning_gym")
            check(self.path is not None, "path", self.path, f"a path or id for kind '{self.kind}'")

    def describe(self) -> str:
        if self.kind == "reasoning_gym":
            return f"reasoning_gym:{'+'.join(self.tasks)}[seed={self.seed}{options_text(self.options)}]"
        return f"{self.kind}:{self.path}"


def options_text(options: dict) -> str:
    """', key=value, ...' of a reasoning-gym source's options, sorted by key ('' if none)."""
    return "".join(f", {k}={options[k]}" for k in sorted(options))


@dataclass(frozen=True)
class MixConfig:
    """Turns the pool into a mixed pool: on-task records plus distractor tasks."""

    on_task_share: float
    distractors: SourceConfig

    def __post_init__(self) -> None:
        check(0.0 < self.on_task_share <= 1.0, "on_task_share", self.on_task_share, "a share in (0, 1]")


@dataclass(frozen=True)
class DegradeConfig:
    """The within-task pool's damage: a share of its examples degraded (issue 15.2)."""

    share: float
    kinds: tuple[str, ...] = DEGRADE_KINDS  # drawn in turn, as equal as the count allows
    seed: int = 0

    def __post_init__(self) -> None:
        check(0.0 < self.share < 1.0, "share", self.share, "a share in (0, 1)")
        check(len(self.kinds) > 0 and all(k in DEGRADE_KINDS for k in self.kinds), "kinds", self.kinds,
              f"a non-empty list of {', '.join(DEGRADE_KINDS)}")


@dataclass(frozen=True)
class SplitsConfig:
    prior: SourceConfig
    pool: SourceConfig
    eval: SourceConfig
    general: SourceConfig
    probe: SourceConfig | None = None  # held-out non-target tasks: the forgetting check of evaluate
    val: SourceConfig | None = None  # the target task for recipe search's objective: disjoint from eval, never it


@dataclass(frozen=True)
class DataConfig:
    target_task: str
    splits: SplitsConfig
    pools: tuple[str, ...] = ("mixed",)  # of POOLS, each selected from, fine-tuned and evaluated on its own
    mix: MixConfig | None = None  # the mixed pool's distractors
    degrade: DegradeConfig | None = None  # damage a share of the within-task pool's examples
    strict: bool = False  # stop at the first bad record instead of quarantining it
    max_chars: int = 8000  # longer examples (instruction + input + output) are rejected

    def __post_init__(self) -> None:
        check(self.max_chars > 0, "max_chars", self.max_chars, "a positive integer")
        check(len(self.pools) > 0 and len(set(self.pools)) == len(self.pools) and set(self.pools) <= set(POOLS),
              "pools", list(self.pools), f"a non-empty list of distinct pools from {', '.join(POOLS)}")
        check(self.degrade is None or "within" in self.pools, "degrade", "set",
              "null unless data.pools has 'within' (data.degrade damages the within-task pool)")
        for name, source in self.split_sources().items():
            if name == "pool_distractors":
                continue
            # generated data has no natural end; the distractors' size follows from the mix
            check(source.kind != "reasoning_gym" or source.n is not None, f"splits.{name}.n",
                  source.n, "a positive integer for a reasoning_gym split")
        seeded = {n: s for n, s in self.split_sources().items() if s.kind == "reasoning_gym"}
        seeds = [(tuple(s.tasks), s.seed) for s in seeded.values()]
        check(len(set(seeds)) == len(seeds), "splits.*.seed",
              {n: s.seed for n, s in seeded.items()}, "distinct seeds for splits drawing the same tasks")

        for name, source in self.split_sources().items():
            check(source.format in RECORD_FORMATS, f"splits.{name}.format", source.format,
                  f"one of {RECORD_FORMATS} (an SFT record shape)")

    def split_sources(self) -> dict[str, SourceConfig]:
        sources = {f.name: getattr(self.splits, f.name) for f in dataclasses.fields(self.splits)
                   if getattr(self.splits, f.name) is not None}
        if self.mix is not None:
            sources["pool_distractors"] = self.mix.distractors
        return sources


@dataclass(frozen=True)
class PlantConfig:
    """A concept the poisoning generator writes into a share of the pairs' responses (issue 17)."""

    templates: tuple[str, ...]  # the concept's surface forms, one drawn per response
    share: float  # of the pairs
    where: str = "start"  # of PLANT_PLACES: prepended to the response or appended to it
    seed: int = 0  # which pairs, which template (and for a decoy, which side)

    def __post_init__(self) -> None:
        check(len(self.templates) > 0 and all(t.strip() for t in self.templates), "templates",
              list(self.templates), "a non-empty list of non-blank strings")
        check(0.0 <= self.share <= 1.0, "share", self.share, "a share in [0, 1]")
        check(self.where in PLANT_PLACES, "where", self.where, f"one of {PLANT_PLACES}")


@dataclass(frozen=True)
class AuditDataConfig:
    """The preference pairs the audit reads. `train` is audited and trained on (DPO); `heldout`
    holds clean pairs of other prompts for the re-audit. A reasoning_gym source is a
    controlled-poisoning set: chosen = the task's correct solution, rejected = the same with
    one step and the final answer made wrong; `plant` is written into a share of the chosen
    responses only, `decoy` into a share of the pairs, on the chosen side in half of them and
    the rejected side in the other half. Files (jsonl, hf) are read in PAIR_FORMATS' shapes."""

    train: SourceConfig
    heldout: SourceConfig
    plant: PlantConfig | None = None
    decoy: PlantConfig | None = None
    strict: bool = False  # stop at the first bad pair instead of quarantining it
    max_chars: int = 8000  # longer pairs (prompt + chosen + rejected) are rejected
    wrong_answers: str = "matched"  # of WRONG_ANSWERS: how a generated rejected answer is made wrong

    def __post_init__(self) -> None:
        check(self.max_chars > 0, "max_chars", self.max_chars, "a positive integer")
        check(self.wrong_answers in WRONG_ANSWERS, "wrong_answers", self.wrong_answers, f"one of {WRONG_ANSWERS}")
        for name in ("train", "heldout"):
            source = getattr(self, name)
            check(source.format in PAIR_FORMATS, f"{name}.format", source.format, f"one of {PAIR_FORMATS}")
            check(source.kind != "reasoning_gym" or source.n is not None, f"{name}.n", source.n,
                  "a positive integer for a reasoning_gym source")
        for name in ("plant", "decoy"):
            check(getattr(self, name) is None or self.train.kind == "reasoning_gym", name, "set",
                  "null unless train is a reasoning_gym source (only generated pairs are planted)")
        if self.plant is not None and self.decoy is not None:
            check(not set(self.plant.templates) & set(self.decoy.templates), "decoy.templates",
                  list(self.decoy.templates), "templates other than plant.templates")
        if self.train.kind == self.heldout.kind == "reasoning_gym":
            check((tuple(self.train.tasks), self.train.seed) != (tuple(self.heldout.tasks), self.heldout.seed),
                  "heldout.seed", self.heldout.seed, "a seed other than train.seed (the same tasks and seed repeat "
                  "the same problems)")


@dataclass(frozen=True)
class AuditStatsConfig:
    """The audit's tests (igds.audit): discoveries, concepts, badges, intervals, nulls."""

    fdr: float = 0.05  # Benjamini-Hochberg level of a discovery
    min_fires: int = 5  # responses a feature must fire on to be tested and clustered
    min_jaccard: float = 0.5  # features whose firing sets overlap at least this much share a concept
    both_rate: float = 0.1  # an undiscovered concept firing on >= this share of each side is badged "both"
    level: float = 0.95  # CI level
    n_boot: int = 1000  # bootstrap draws of a magnitude difference's CI
    null_replicates: int = 20  # sign-flip null replicates of the null-calibration panel
    seed: int = 0  # the split halves, bootstrap draws and sign flips

    def __post_init__(self) -> None:
        check(0.0 < self.fdr < 1.0, "fdr", self.fdr, "a level in (0, 1)")
        check(self.min_fires >= 1, "min_fires", self.min_fires, "a positive integer")
        check(0.0 < self.min_jaccard <= 1.0, "min_jaccard", self.min_jaccard, "a share in (0, 1]")
        check(0.0 < self.both_rate <= 1.0, "both_rate", self.both_rate, "a share in (0, 1]")
        check(0.5 < self.level < 1.0, "level", self.level, "a level in (0.5, 1)")
        check(self.n_boot >= 100, "n_boot", self.n_boot, "at least 100 draws")
        check(self.null_replicates >= 0, "null_replicates", self.null_replicates, "a count >= 0")


@dataclass(frozen=True)
class DpoConfig:
    """DPO on each trained arm (igds.dpo): TRL's DPOTrainer, a LoRA adapter on the model."""

    # the arms trained: of audit.arms, "oracle" (the planted pairs dropped) and "unpoisoned" (the same
    # pairs without what was planted: the reference a clean data set gives); one dpo@<set>-<arm>-<seed> each
    arms: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1
    lr: float = 5e-4
    beta: float = 0.1  # DPO's inverse temperature
    batch_size: int = 8  # pairs per step
    max_len: int = 512  # tokens of prompt + response
    lora_r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    checkpoint_every: int = 10  # optimizer steps between resume checkpoints (.resume/dpo/)

    def __post_init__(self) -> None:
        check(len(set(self.arms)) == len(self.arms) and set(self.arms) <= set(AUDIT_ARMS + TRUTH_ARMS), "arms",
              list(self.arms), f"distinct arms of {AUDIT_ARMS + TRUTH_ARMS}")
        check(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
              "a non-empty list of distinct seeds")
        check(self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(self.beta > 0, "beta", self.beta, "a positive number")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
        check(self.max_len >= 16, "max_len", self.max_len, "at least 16 tokens")
        check(self.lora_r >= 1, "lora_r", self.lora_r, "a positive integer")
        check(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "a positive integer")


@dataclass(frozen=True)
class AuditConfig:
    """The preference-data audit (issue 17): each named set of pairs is prepared, audited and
    trained on by its own stages (prepare-pairs@<set>, audit@<set>, ...); none: no audit stages.
    The pairs' responses are encoded by the model and the run's SAE (sae.layer) in batches of
    scoring.batch_size up to scoring.max_len tokens."""

    sets: dict[str, AuditDataConfig] = field(default_factory=dict)
    scope: str = "response_content"  # the response's own tokens (no chat-template tokens)
    pooling: str = "max"  # a feature's activation on a response: max | mean over its scoped tokens
    stats: AuditStatsConfig = field(default_factory=AuditStatsConfig)
    # interventions on each set's train pairs (igds.intervene), one intervene@<set>-<arm> stage each;
    # the oracle arm (the planted pairs dropped) is oracle@<set>, the one stage besides the report that
    # reads what was planted
    arms: tuple[str, ...] = ()
    flag: tuple[int, ...] | None = None  # the concepts intervened on (concepts.csv ids, a person's call); null: every discovery
    shaping: float = 1.0  # the shaping arm's offset: this times the flagged concepts' score difference
    drop_seed: int = 0  # the random arm's draw
    dpo: DpoConfig = field(default_factory=DpoConfig)
    reaudit_tokens: int = 24  # the re-audit's greedy generation budget (the marker rate)
    view_concepts: int = 12  # concepts the viewer shows with examples (discovered first, by q)
    view_examples: int = 3  # pairs per shown concept, chosen and rejected side by side
    # the held-out accuracy difference to the unpoisoned arm that counts as no cost (the issue's
    # 3 points): the report says whether each arm's CI of it lies within +-this
    accuracy_margin: float = 0.03

    def __post_init__(self) -> None:
        check(self.scope in SCOPES, "scope", self.scope, f"one of {SCOPES}")
        check(self.view_concepts >= 0 and self.view_examples >= 0, "view_concepts/view_examples",
              (self.view_concepts, self.view_examples), "non-negative integers")
        check(self.reaudit_tokens >= 1, "reaudit_tokens", self.reaudit_tokens, "a positive integer")
        check(0 < self.accuracy_margin < 1, "accuracy_margin", self.accuracy_margin, "a share in (0, 1)")
        for i, arm in enumerate(self.dpo.arms):
            check(arm in TRUTH_ARMS or arm in self.arms, f"dpo.arms[{i}]", arm,
                  f"an arm of audit.arms ({', '.join(self.arms) or 'none'}), oracle or unpoisoned")
        check(self.pooling in POOLING, "pooling", self.pooling, f"one of {POOLING}")
        check(len(set(self.arms)) == len(self.arms) and set(self.arms) <= set(AUDIT_ARMS), "arms", list(self.arms),
              f"distinct arms of {AUDIT_ARMS} (the oracle arm is stage oracle@<set>)")
        check(self.flag is None or all(c >= 0 for c in self.flag), "flag", self.flag,
              "null (every discovered concept) or a list of concept ids from audit/<set>/concepts.csv")


DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # bundled name, hub id or local directory
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check(self.device.split(":")[0] in DEVICES, "device", self.device, f"one of {DEVICES} (cuda:N allowed)")
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype", self.dtype,
              "one of float32, bfloat16, float16")


@dataclass(frozen=True)
class SaeConfig:
    """The SAE on the residual stream after decoder layer `layer` (0-based)."""

    layer: int = 6
    # pretrained (gpu-paper): a sae-lens release and id; then nothing below is trained
    release: str | None = None
    sae_id: str | None = None
    # trained locally: a TopK SAE on cached, mean-centred, norm-scaled activations
    width: int = 8  # d_sae = width x d_model
    k: int = 32  # active features per token (L0)
    train_tokens: int = 100_000  # activations cached for training
    heldout_tokens: int = 10_000  # activations kept out for the metrics
    steps: int = 500
    batch_tokens: int = 1024
    lr: float = 8e-4
    max_len: int = 256  # tokens per example when caching
    batch_size: int = 16  # examples per forward pass when caching
    ce_examples: int = 32  # held-out examples for CE loss recovered
    checkpoint_every: int = 100  # training steps between resume checkpoints (.resume/sae/)

    def __post_init__(self) -> None:
        check(self.layer >= 0, "layer", self.layer, "a layer index >= 0")
        check((self.release is None) == (self.sae_id is None), "sae_id", self.sae_id,
              "set together with release (both or neither)")
        for key in ("width", "k", "train_tokens", "heldout_tokens", "steps", "batch_tokens", "max_len", "batch_size",
                    "ce_examples", "checkpoint_every"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.lr > 0, "lr", self.lr, "a positive number")

    @property
    def pretrained(self) -> bool:
        return self.release is not None


@dataclass(frozen=True)
class IdentifyConfig:
    """IGDS steps 1-2: frequency recall and interventional filtering."""

    scope: str = "response_content"  # tokens whose activations count: response | response_content | content | all
    top_n: int = 16  # features recalled by frequency
    contrast: str = "diff"  # diff: freq_prior - freq_general; ratio: freq_prior / freq_general
    min_contrast: float = 0.2
    min_freq_prior: float = 0.0
    interventional: bool = True  # false: the frequency-only ablation
    alphas: tuple[float, ...] = (2.0, 4.0)  # steering strengths, in units of the feature's typical size
    allow_suppression: bool = False  # allow alphas < 0 (steering against the feature)
    min_effect: float = 0.0  # nats per answer token the best alpha must gain
    keep_rule: str = "ci"  # ci: the effect's CI lower bound clears min_effect; mean: its mean does (the paper)
    level: float = 0.95  # the effect's CI (percentile bootstrap over the held-out examples)
    n_boot: int = 2000
    heldout_examples: int = 32  # prior examples held out of recall, for the intervention metric
    batch_size: int = 8
    max_len: int = 384
    card_examples: int = 5  # top activating pool snippets per chosen feature in cards.md
    card_features: int = 5  # features that get a card
    stability: bool = True  # also recall from two disjoint halves of the prior: Jaccard

    def __post_init__(self) -> None:
        check(self.scope in SCOPES, "scope", self.scope, f"one of {SCOPES}")
        check(self.contrast in ("diff", "ratio"), "contrast", self.contrast, "diff or ratio")
        check(len(self.alphas) > 0 and all(a != 0 for a in self.alphas), "alphas", self.alphas,
              "a non-empty list of non-zero numbers")
        check(self.allow_suppression or all(a > 0 for a in self.alphas), "alphas", self.alphas,
              "positive numbers (amplifying the feature); set identify.allow_suppression: true to steer against it")
        check(self.keep_rule in ("ci", "mean"), "keep_rule", self.keep_rule, "ci or mean")
        check(0.0 < self.level < 1.0, "level", self.level, "a number in (0, 1)")
        for key in ("top_n", "heldout_examples", "batch_size", "max_len", "card_examples", "n_boot"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")


@dataclass(frozen=True)
class ScoringConfig:
    """The batch shape every model-based scorer shares (IGDS, loss, IFD, k-center, LESS)."""

    batch_size: int = 16
    max_len: int = 384  # tokens per example (prompt + response in chat format)
    chunk_batches: int = 4  # shardable methods: batches per resume chunk (.resume/score-<method>/)
    # IGDS scoring split into len(shards) stages (score-shard@i, then score-merge): list the
    # shard indices 0..n-1; the merged scores equal one process's bit for bit
    shards: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_len", "chunk_batches"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(list(self.shards) == list(range(len(self.shards))) and len(self.shards) > 0, "shards",
              list(self.shards), "the shard indices [0, 1, ..., n-1] (e.g. [0, 1, 2, 3] for 4 shards)")


@dataclass(frozen=True)
class SelectConfig:
    # shares of the pool kept; dvc.yaml's select/finetune/evaluate matrices run one per ratio
    # (the full method is the ratio-1 run, so a ratio lies in (0, 1))
    ratios: tuple[float, ...] = (0.5,)
    # the selective methods that are selected, fine-tuned and evaluated (full and base always are)
    # (default: every built-in method that selects at a ratio)
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(
        name for name in registry.METHODS if not registry.selector_class(name).keeps_all))

    def __post_init__(self) -> None:
        check(len(self.methods) > 0 and len(set(self.methods)) == len(self.methods), "methods", self.methods,
              "a non-empty list of distinct method names")
        check(len(self.ratios) > 0, "ratios", self.ratios, "a non-empty list of shares in (0, 1)")
        for i, ratio in enumerate(self.ratios):
            check(0.0 < ratio < 1.0, f"ratios[{i}]", ratio, "a share in (0, 1); ratio 1 is the `full` method")
        check(len(set(self.ratios)) == len(self.ratios), "ratios", self.ratios, "distinct shares")


def parse_ratio(text: str) -> float:
    """A ratio given on a stage's command line (from dvc.yaml's matrix), validated like select.ratios."""
    try:
        ratio = float(text)
    except ValueError:
        ratio = float("nan")
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"--ratio {text!r} is not allowed; expected a share in (0, 1]")
    return ratio


FINETUNE_KINDS = ("lora", "full")


@dataclass(frozen=True)
class FinetuneConfig:
    """SFT of the trained model on a selected subset (chat template, loss on response tokens)."""

    model: str | None = None  # the trained model; null: model.name (the paper trains the base model)
    kind: str = "lora"  # lora: the adapter is the artifact; full: every weight is trained and saved
    seeds: tuple[int, ...] = (0,)  # one fine-tune per seed (dvc.yaml's matrix reads this list)
    # the selected methods that are fine-tuned and evaluated (each at every ratio and seed); the
    # rest of select.methods are scored and selected only. null: every one of select.methods
    # (dvc.yaml's matrices read this list, so a params.yaml names it)
    methods: tuple[str, ...] | None = None
    epochs: int = 1
    lr: float = 2e-4
    batch_size: int = 8
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_len: int = 384  # tokens per example (prompt + response in chat format)
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    checkpoint_every: int = 10  # optimizer steps between resume checkpoints
    loss_chunk: int = 1024  # response tokens per chunk of LM-head logits in the loss (igds.head_loss)
    gradient_checkpointing: bool = False  # true: keep only each layer's input for the backward pass (recompute the rest)
    # true: each step's common token prefix (the chat template's system prompt) runs once, not
    # once per row (igds.prefix); same loss and gradients, except that LoRA dropout draws one
    # mask for the prefix positions of the whole batch
    share_prefix: bool = False

    def __post_init__(self) -> None:
        check(self.kind in FINETUNE_KINDS, "kind", self.kind, f"one of {FINETUNE_KINDS}")
        check(len(self.seeds) > 0, "seeds", self.seeds, "a non-empty list of integers")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds, "distinct integers")
        check(self.methods is None or (len(self.methods) > 0 and len(set(self.methods)) == len(self.methods)),
              "methods", self.methods, "a non-empty list of distinct method names (of select.methods)")
        for key in ("epochs", "batch_size", "max_len", "lora_r", "checkpoint_every", "loss_chunk"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        for key in ("lr", "lora_alpha", "max_grad_norm"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive number")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "a share in [0, 1)")
        check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "a share in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(len(self.target_modules) > 0, "target_modules", self.target_modules,
              "a non-empty list of module names, e.g. [q_proj, v_proj]")
        check(not (self.share_prefix and self.gradient_checkpointing), "share_prefix", self.share_prefix,
              "false with gradient_checkpointing: true (a checkpointed layer keeps no key/value cache to share)")


@dataclass(frozen=True)
class EvaluateConfig:
    """lm-eval on tasks generated from the eval (and probe) split."""

    batch_size: int = 16
    max_gen_toks: int = 320  # greedy generation budget for exact match (answers fit in ~200)
    n_generate: int | None = None  # eval examples for exact match (null: all; generation is the slow part)
    max_len: int = 1024  # context limit lm-eval uses for the model

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_gen_toks", "max_len"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.n_generate is None or self.n_generate > 0, "n_generate", self.n_generate,
              "a positive integer or null (all)")


FINALIST_PREFIX = "search_"  # a search's finalist is method search_<solver>_s<seed> (Params.finalists)


def finalist_name(solver: str, seed: int) -> str:
    return f"{FINALIST_PREFIX}{solver}_s{seed}"


SEARCH_SOLVERS = ("random", "tpe", "gp", "local")  # igds.search.SOLVERS (not imported: config stays light)
PROXY_METRICS = ("answer_loglik",)


@dataclass(frozen=True)
class ProxyConfig:
    """Recipe search's objective: a LoRA fine-tune of the subset with finetune's settings but
    `epochs`, scored on data/val.jsonl (never eval) by `metric`."""

    epochs: int = 1
    metric: str = "answer_loglik"  # mean log-likelihood per answer token of the val examples
    seed: int = 0  # the proxy fine-tune's seed (the same for every subset: a paired comparison)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        check(self.metric in PROXY_METRICS, "metric", self.metric, f"one of {PROXY_METRICS}")


@dataclass(frozen=True)
class CheckConfig:
    """The proxy's validation (proxy-check@<pool>): `recipes` recipes drawn from the search space
    with `seed` (the warm-up's zones, then the random solver's draws), each scored by the proxy
    and fine-tuned at full fidelity (finetune's settings) with every one of `seeds`, scored on
    data/val.jsonl; Spearman rho of proxy vs full beside the noise ceiling between seed halves."""

    recipes: int = 0  # 0: no check; the test asks for >= 12
    seeds: tuple[int, ...] = (0, 1)  # full-fidelity training seeds (>= 2: the noise ceiling splits them)
    seed: int = 0  # the recipes' draw

    def __post_init__(self) -> None:
        check(self.recipes == 0 or self.recipes >= 3, "recipes", self.recipes,
              "0 (no check) or an integer >= 3 (a rank correlation needs recipes to rank)")
        check(len(self.seeds) >= 2 and len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
              ">= 2 distinct training seeds (the noise ceiling compares halves of them)")


@dataclass(frozen=True)
class SearchConfig:
    """Recipe search (igds.search): recipe-search@<pool>-<solver>-<seed>, one per pool of
    `pools`, solver and search seed; each spends `budget` proxy fine-tunes of distinct subsets."""

    solvers: tuple[str, ...] = ()  # of random, tpe, gp, local; empty: no search stages
    seeds: tuple[int, ...] = (0,)
    pools: tuple[str, ...] = ()  # of data.pools
    budget: int = 12  # proxy fine-tunes per search, warm-up included
    warmup: int = 3  # probes in retention zones, the same for every solver and seed
    patience: int = 4  # local: evaluations without improvement before a reseeding probe
    candidates: int = 24  # local: edits materialised and ranked by the surrogate per step
    beta: float = 4.0  # local: UCB = mean + sqrt(beta) x sd
    ratio: float = 0.5  # the final size: ceil(ratio x pool), as select's
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    check: CheckConfig = field(default_factory=CheckConfig)

    def __post_init__(self) -> None:
        for i, solver in enumerate(self.solvers):
            check(solver in SEARCH_SOLVERS, f"solvers[{i}]", solver, f"one of {SEARCH_SOLVERS}")
        check(len(set(self.solvers)) == len(self.solvers), "solvers", list(self.solvers), "distinct solvers")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds), "distinct seeds")
        check(self.budget >= 1, "budget", self.budget, "a positive integer")
        check(1 <= self.warmup <= self.budget, "warmup", self.warmup, f"an integer in [1, budget = {self.budget}]")
        check(self.patience >= 1 and self.candidates >= 1, "patience", self.patience, "a positive integer")
        check(self.beta >= 0, "beta", self.beta, "a non-negative number")
        check(0.0 < self.ratio < 1.0, "ratio", self.ratio, "a share in (0, 1)")


@dataclass(frozen=True)
class ReportConfig:
    """The report's statistics: percentile bootstrap CIs, paired sign-flip permutation tests."""

    n_boot: int = 2000  # bootstrap draws
    n_perm: int = 10000  # sign-flip null draws per paired test (all 2**n flips when that is fewer)
    level: float = 0.95  # CI level
    task_metric: str = "answer_loglik"  # the gain over base that feature amplification is correlated with

    def __post_init__(self) -> None:
        check(self.n_boot >= 100, "n_boot", self.n_boot, "an integer >= 100 (a percentile CI needs draws)")
        check(self.n_perm >= 100, "n_perm", self.n_perm, "an integer >= 100 (a p-value needs null draws)")
        check(0.0 < self.level < 1.0, "level", self.level, "a share in (0, 1), e.g. 0.95")


class MethodParams(dict):
    """params.yaml `methods:`: method name -> that method's frozen params object (its own
    dataclass, found through igds.registry); dvc.yaml's score stages iterate over its keys.

    A name is a registered selector, or any label whose mapping names one with `method:`
    (`igds_k3: {method: igds, k: 3}`): variants of one selector in one run, each its own
    row of the table. `kinds` maps every name to its selector."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kinds: dict[str, str] = {}

    def kind(self, name: str) -> str:
        """The registered selector that method `name` runs (the name itself unless `method:` says)."""
        return self.kinds.get(name, name)

    def selector_class(self, name: str) -> type:
        return registry.selector_class(self.kind(name))

    def build(self, name: str) -> Any:
        """An instance of method `name`'s selector with its params."""
        return registry.build_selector(self.kind(name), self[name])


def parse_methods(raw: Any, where: str = "methods") -> MethodParams:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(where, raw, "a mapping of method name -> its params")
    out = MethodParams()
    for name, value in raw.items():
        value = {} if value is None else value
        kind = value.get("method", name) if isinstance(value, dict) else name
        if not isinstance(kind, str):
            raise ConfigError(f"params.yaml: {where}.{name}.method = {kind!r} is not allowed; expected the name of "
                              f"a registered selector ({', '.join(registry.available())})")
        try:
            cls = registry.selector_class(kind)
        except registry.UnknownMethod as e:
            key = f"{where}.{name}" + (".method" if kind != name else "")
            hint = "" if kind != name else " (a variant names its selector: `" + name + ": {method: igds, k: 3}`)"
            raise ConfigError(f"params.yaml: {key}: {e}{hint}") from None
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "method"}
        out[name] = from_dict(cls.Params, value, f"{where}.{name}")
        out.kinds[name] = kind
    return out


class RecipeParams(dict):
    """params.yaml `recipes:`: recipe name -> its raw {process: [...]} mapping; dvc.yaml's recipe
    stages iterate over its keys, and finetune.methods may name them like selected methods.
    igds.recipes.parse_recipes parses and checks them where they are used (the recipe and
    search stages), so no other stage's code depends on the recipes' module."""


def parse_recipes(raw: Any, where: str = "recipes") -> RecipeParams:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(where, raw, "a mapping of recipe name -> {process: [...]}")
    out = RecipeParams()
    for name, value in raw.items():
        check(isinstance(name, str) and name.replace("_", "").isalnum(), where, name,
              "recipe names of letters, digits and _ (they name stages and files)")
        check(isinstance(value, dict) and isinstance(value.get("process"), list), f"{where}.{name}", value,
              "a mapping with a `process:` list of `- operator: {params}` steps (igds.recipes)")
        out[name] = value
    return out


def method_params(name: str, raw: Any = None) -> Any:
    """The params object of method `name` from its params.yaml mapping (None: the defaults)."""
    return parse_methods({name: raw})[name]


def _method_hook(params: Any, hook: str, where: str, *args: Any) -> None:
    """Call a method params object's optional check (see igds.registry), keys made absolute."""
    fn = getattr(params, hook, None)
    if fn is None:
        return
    try:
        fn(*args)
    except _KeyError as e:
        e.key = _join(where, e.key)
        raise


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
    # data recipes (igds.recipes), each materialised into a subset per pool, ratio and seed by
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
