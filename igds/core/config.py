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
from typing import Any

from igds.core import registry


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
# damage done to a share of a within-task pool's examples (igds.core.data.degrade)
DEGRADE_KINDS = ("wrong_answer", "dropped_step", "shuffled_steps", "truncated")
# candidate pools a run selects from, each through its own score/select/finetune/evaluate stages:
# mixed: data.splits.pool's on-task share plus data.mix's distractor tasks (the pool split alone
# without data.mix); within: data.splits.pool.n examples of the target task only, data.degrade
# damaging a share of them
POOLS = ("mixed", "within")
POOLING = ("max", "mean")  # an example's activation over its scoped tokens
RATIO_ALLOWED = "a share in (0, 1) (ratio 1 is the `full` subset)"


def ratio_ok(value: Any) -> bool:
    """The one bound on a selection ratio (select.ratios, search.ratio, a stage's --ratio): a share
    strictly inside (0, 1); the whole pool is the `full` subset, which has no ratio."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < 1.0


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
    if isinstance(tp, type) and hasattr(tp, "parse"):  # a section that parses itself (methods:, recipes:)
        return tp.parse(value, key)
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
            close = registry.closest(key, sorted(names))
            hint = f" (did you mean {_join(where, close)}?)" if close else ""
            raise ConfigError(f"params.yaml: unknown {what} {_join(where, key)}{hint}; allowed {what}s: "
                              f"{', '.join(sorted(names))}")
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
# preference pairs' shapes (igds.audit.pairs): standard {prompt, chosen, rejected} strings (TRL's),
# hh (HH-RLHF: two transcripts that share the prompt), ultrafeedback (UltraFeedback-binarised: message lists)
PAIR_FORMATS = ("auto", "standard", "hh", "ultrafeedback")


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
    # hf hub id: the dataset's commit (a sha from huggingface.co/datasets/<id>/commits/main), so the
    # stage graph changes when the data does; `main` takes whatever it is now (not reproducible)
    revision: str | None = None
    format: str = "auto"  # jsonl/hf record shape: gsm8k (question/answer) or alpaca
    task: str | None = None  # jsonl/hf: task label of the records (default: file stem / dataset id)
    strip_calculator: bool = True  # gsm8k: drop '<<48/2=24>>' calculator annotations
    # reasoning_gym: the datasets' own config for every task of the source (e.g. {max_digits: 2,
    # max_terms: 3} for chain_sum: the difficulty); size and seed are set by the split
    options: dict = field(default_factory=dict)
    # reasoning_gym: answer (the dataset's answer, or its own worked solution where it has one) | steps
    # (a worked solution written from the entry's metadata: igds.core.data.steps, for the tasks it knows)
    solution: str = "answer"

    def __post_init__(self) -> None:
        check(self.kind in SOURCE_KINDS, "kind", self.kind, f"one of {SOURCE_KINDS}")
        check(self.solution in ("answer", "steps"), "solution", self.solution, "answer or steps")
        check(self.solution == "answer" or self.kind == "reasoning_gym", "solution", self.solution,
              "answer: worked steps are written for reasoning_gym sources only")
        if self.solution == "steps":
            from igds.core.data.steps import WRITERS  # noqa: PLC0415

            missing = [t for t in self.tasks if t not in WRITERS]
            check(not missing, "solution", self.solution, f"answer, or tasks with a steps writer ({', '.join(sorted(WRITERS))}"
                  f"; not {', '.join(missing)})")
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
            steps = ", solution=steps" if self.solution == "steps" else ""
            return f"reasoning_gym:{'+'.join(self.tasks)}[seed={self.seed}{options_text(self.options)}{steps}]"
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
    # the SAE's own text, tokenized plain (question, newline, answer: no chat template); null: the SAE
    # trains on general and every pool in the chat template
    sae: SourceConfig | None = None


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


DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # bundled name, hub id or local directory
    device: str = "cpu"
    dtype: str = "float32"  # the weights' dtype
    # mixed precision of the forward passes of fine-tuning (proxy and LESS warm-up included),
    # scoring and evaluation (torch.autocast; weights, optimizer and SAE stay in `dtype`):
    # null (off) | bfloat16 (CPUs with AVX512-BF16 or AMX, CUDA) | float16 (CUDA)
    autocast: str | None = None

    def __post_init__(self) -> None:
        check(self.device.split(":")[0] in DEVICES, "device", self.device, f"one of {DEVICES} (cuda:N allowed)")
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype", self.dtype,
              "one of float32, bfloat16, float16")
        check(self.autocast in (None, "bfloat16", "float16"), "autocast", self.autocast, "null, bfloat16 or float16")
        check(self.autocast != "float16" or self.device.startswith("cuda"), "autocast", self.autocast,
              "bfloat16 or null on a CPU (float16 autocast is for CUDA)")


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
    # activations cached for training / kept out for the metrics: a number is met (a seeded sample of
    # the text's) or the sae stage stops; null: every token the text gives (no request to meet)
    train_tokens: int | None = 100_000
    heldout_tokens: int | None = 10_000
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
        for key in ("width", "k", "steps", "batch_tokens", "max_len", "batch_size", "ce_examples", "checkpoint_every"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        for key in ("train_tokens", "heldout_tokens"):
            check(getattr(self, key) is None or getattr(self, key) > 0, key, getattr(self, key),
                  "a positive integer, or null (every token the text gives)")
        check(self.lr > 0, "lr", self.lr, "a positive number")

    @property
    def pretrained(self) -> bool:
        return self.release is not None


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
        check(len(self.ratios) > 0, "ratios", self.ratios, f"a non-empty list, each {RATIO_ALLOWED}")
        for i, ratio in enumerate(self.ratios):
            check(ratio_ok(ratio), f"ratios[{i}]", ratio, RATIO_ALLOWED)
        check(len(set(self.ratios)) == len(self.ratios), "ratios", self.ratios, "distinct shares")


FINETUNE_KINDS = ("lora", "full")
# finetune.train: what decides what a fine-tune learns (the proxy fine-tunes share it)
TRAIN_KEYS = ("model", "kind", "lr", "batch_size", "warmup_ratio", "weight_decay", "max_grad_norm", "max_len", "lora_r",
              "lora_alpha", "lora_dropout", "target_modules", "share_prefix")


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
    loss_chunk: int = 1024  # response tokens per chunk of LM-head logits in the loss (igds.core.head_loss)
    gradient_checkpointing: bool = False  # true: keep only each layer's input for the backward pass (recompute the rest)
    # true: each step's common token prefix (the chat template's system prompt) runs once, not
    # once per row (igds.core.prefix); same loss and gradients, except that LoRA dropout draws one
    # mask for the prefix positions of the whole batch
    share_prefix: bool = False

    @classmethod
    def parse(cls, raw: Any, where: str) -> FinetuneConfig:
        """params.yaml's finetune section: `train:` holds the keys that decide what a fine-tune
        learns (TRAIN_KEYS), so every stage that trains (finetune, recipe search's proxy, the
        proxy check) depends on `finetune.train` once; seeds, methods, epochs and the memory and
        resume settings sit beside it."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            fail(where, raw, "a mapping")
        train = raw.get("train") or {}
        if not isinstance(train, dict):
            fail(_join(where, "train"), train, f"a mapping of {', '.join(TRAIN_KEYS)}")
        for key in raw:
            if key in TRAIN_KEYS:
                raise ConfigError(f"params.yaml: {_join(where, key)} belongs under {_join(where, 'train')} "
                                  f"(write {_join(where, 'train.' + key)})")
        for key in train:
            if key not in TRAIN_KEYS:
                raise ConfigError(f"params.yaml: unknown key {_join(where, 'train.' + key)}; allowed keys: "
                                  f"{', '.join(sorted(TRAIN_KEYS))}")
        try:
            return from_dict(cls, {**{k: v for k, v in raw.items() if k != "train"}, **train}, where)
        except _KeyError as e:
            tail = e.key.rsplit(".", 1)[-1]
            if tail in TRAIN_KEYS and e.key == _join(where, tail):
                e.key = _join(where, "train." + tail)
            raise

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
    dataclass, found through igds.core.registry); dvc.yaml's score stages iterate over its keys.

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

    @classmethod
    def parse(cls, raw: Any, where: str) -> MethodParams:
        return parse_methods(raw, where)


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


def method_params(name: str, raw: Any = None) -> Any:
    """The params object of method `name` from its params.yaml mapping (None: the defaults)."""
    return parse_methods({name: raw})[name]


def _method_hook(params: Any, hook: str, where: str, *args: Any) -> None:
    """Call a method params object's optional check (see igds.core.registry), keys made absolute."""
    fn = getattr(params, hook, None)
    if fn is None:
        return
    try:
        fn(*args)
    except _KeyError as e:
        e.key = _join(where, e.key)
        raise
