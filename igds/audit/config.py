"""The preference-data audit's params: audit.* (issue 17), validated once at the stage entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

from igds.core.config import PAIR_FORMATS, POOLING, SCOPES, SourceConfig, check

PLANT_PLACES = ("start", "end")  # where a planted concept goes in a response
# how the poisoning generator makes an answer wrong (igds.audit.pairs): 'matched' near misses
# keep the right answer's sign and length, and as many wrong answers are 0 as right ones; 'near'
# draws near misses that may cross 0, grow a digit, and are 0 less often than right answers
WRONG_ANSWERS = ("matched", "near")
# the audit's interventions (igds.audit.intervene): every pair; the pairs a flagged concept carries dropped;
# as many dropped at random; every pair with the flagged concepts' score difference as a DPO margin offset
AUDIT_ARMS = ("naive", "filter", "random", "shaping")
# the arms stage oracle@<set> writes from what was planted: the planted pairs dropped; the same pairs
# as they were before anything was planted (and, from a file, the pairs as read)
TRUTH_ARMS = ("oracle", "unpoisoned")


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
    """The audit's tests (igds.audit.stats): discoveries, concepts, badges, intervals, nulls."""

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
    """DPO on each trained arm (igds.audit.dpo): TRL's DPOTrainer, a LoRA adapter on the model."""

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
    # interventions on each set's train pairs (igds.audit.intervene), one intervene@<set>-<arm> stage each;
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
