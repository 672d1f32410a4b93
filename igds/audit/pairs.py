"""Preference pairs for the audit (issue 17): {id, prompt, chosen, rejected, task, source}.

Sources:
- files (`jsonl`, `hf`) in the common shapes (`PAIR_FORMATS`): standard {prompt, chosen,
  rejected} strings (TRL's); HH-RLHF's two transcripts that share the prompt and differ in
  the last "Assistant:" turn; UltraFeedback-binarised's chosen/rejected message lists;
- `reasoning_gym`: an offline controlled-poisoning set. chosen = the task's correct solution,
  rejected = the same solution with one step's result and the final answer made wrong
  (answer-only tasks: the answer), both checked with the task's own scorer; a planted
  concept (`audit.data.plant`: templates) written into a share of the chosen responses only,
  and a decoy (`audit.data.decoy`) into a share of the pairs, on the chosen side in half of
  them and on the rejected side in the other half: it differs within those pairs but does
  not go with the preference.

What was planted goes to a truth dict (`Prepared.truth`) that the prepare-pairs stage writes
apart from the pairs; only the report may read it. The id is a content hash of (prompt,
chosen, rejected), so a pair has the same id in every run. read = accepted + rejected holds
for every split, as for the SFT data (igds.core.data.sources).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from igds.core.answers import final_answer_span, normalise_number
from igds.audit.config import AuditDataConfig, PlantConfig
from igds.core.config import SourceConfig
from igds.core.data.degrade import _FINAL_LINE, _format_like, near_miss
from igds.core.data.schema import ALL_REJECT_KINDS, DataError, Invalid, Reject
from igds.core.data.sources import SplitData, read_source

PAIR_FIELDS = ("id", "prompt", "chosen", "rejected", "task", "source")
_HH_HUMAN, _HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_STEP_RESULT = re.compile(r"(=\s*)([$€£]?-?\d[\d,]*(?:\.\d+)?)")  # the result of a step: "93 - 38 = 55"
_CORRUPT_TRIES = 8  # wrong answers drawn before a solution is given up as not corruptible


@dataclass(frozen=True)
class Pair:
    id: str
    prompt: str
    chosen: str
    rejected: str
    task: str  # the prompt's topic (a reasoning-gym task, a file's label): the audit's prompt-conditioned view
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def pair_id(prompt: str, chosen: str, rejected: str) -> str:
    """Stable content hash: 16 hex digits of sha256 over the three texts."""
    blob = json.dumps([prompt, chosen, rejected], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_pair(prompt: str, chosen: str, rejected: str, task: str, source: str) -> Pair:
    return Pair(pair_id(prompt, chosen, rejected), prompt, chosen, rejected, task, source)


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


# --- shapes ------------------------------------------------------------------------------------

def detect_pair_format(obj: dict, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    chosen, rejected = obj.get("chosen"), obj.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        return "ultrafeedback"
    if "prompt" in obj:
        return "standard"
    if isinstance(chosen, str) and _HH_ASSISTANT in chosen:
        return "hh"
    raise Invalid("unknown_pair_shape", f"unknown pair shape with keys {sorted(obj)}: expected prompt/chosen/rejected "
                  "strings, HH-RLHF transcripts (chosen/rejected with '\\n\\nAssistant:') or UltraFeedback message lists")


def _string(obj: dict, key: str) -> str:
    if key not in obj:
        raise Invalid("missing_field", f"missing field '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"field '{key}' must be a string, found {type(value).__name__}")
    if not value.strip():
        raise Invalid("empty_field", f"field '{key}' is empty")
    return value


def _hh_split(text: str, key: str) -> tuple[str, str]:
    """(the transcript up to the last assistant turn, that turn's text)."""
    at = text.rfind(_HH_ASSISTANT)
    if at < 0:
        raise Invalid("unknown_pair_shape", f"field '{key}' has no '\\n\\nAssistant:' turn (HH-RLHF shape)")
    prompt, response = text[:at], text[at + len(_HH_ASSISTANT):].strip()
    if not response:
        raise Invalid("empty_field", f"field '{key}': its last assistant turn is empty")
    return prompt.strip(), response


def _messages(obj: dict, key: str) -> list[dict]:
    if key not in obj:
        raise Invalid("missing_field", f"missing field '{key}'")
    messages = obj[key]
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise Invalid("wrong_type", f"field '{key}' must be a non-empty list of {{role, content}} string messages")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise Invalid("unknown_pair_shape", f"field '{key}': the last message must be a non-empty assistant turn")
    return messages


def _transcript(messages: Sequence[dict]) -> str:
    """The prompt of a message list: one user turn is its content; more turns are written out."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"].strip()
    return "\n\n".join(f"{m['role']}: {m['content'].strip()}" for m in messages)


def normalise_pair(obj: Any, *, fmt: str, task: str, source: str, max_chars: int) -> Pair:
    """One parsed object -> a Pair, or Invalid with the reason."""
    if not isinstance(obj, dict):
        raise Invalid("not_object", f"expected a JSON object, found {type(obj).__name__}")
    shape = detect_pair_format(obj, fmt)
    if shape == "standard":
        prompt, chosen, rejected = _string(obj, "prompt"), _string(obj, "chosen"), _string(obj, "rejected")
    elif shape == "hh":
        (prompt, chosen), (other, rejected) = _hh_split(_string(obj, "chosen"), "chosen"), \
            _hh_split(_string(obj, "rejected"), "rejected")
        if prompt != other:
            raise Invalid("unmatched_prompt", "chosen and rejected transcripts differ before their last assistant turn")
    else:
        chosen_messages, rejected_messages = _messages(obj, "chosen"), _messages(obj, "rejected")
        if chosen_messages[:-1] != rejected_messages[:-1]:
            raise Invalid("unmatched_prompt", "chosen and rejected message lists differ before their last assistant turn")
        if len(chosen_messages) < 2:
            raise Invalid("unknown_pair_shape", "field 'chosen' holds no prompt turn before the assistant's")
        prompt = _transcript(chosen_messages[:-1])
        chosen, rejected = chosen_messages[-1]["content"].strip(), rejected_messages[-1]["content"].strip()
        if isinstance(obj.get("prompt"), str) and obj["prompt"].strip() not in prompt:
            raise Invalid("unmatched_prompt", "field 'prompt' is not the messages' prompt turn")
    if chosen.strip() == rejected.strip():
        raise Invalid("identical_pair", "chosen and rejected are the same response")
    n_chars = len(prompt) + len(chosen) + len(rejected)
    if n_chars > max_chars:
        raise Invalid("over_long", f"pair is over-long: {n_chars} characters > audit.data.max_chars = {max_chars}")
    return make_pair(prompt, chosen, rejected, task, source)


# --- the poisoning generator ----------------------------------------------------------------------

def final_text(solution: str) -> str:
    """What a task's scorer reads: the text after '####', else the whole solution."""
    return solution.split("####", 1)[1].strip() if "####" in solution else solution.strip()


def _answer_only(solution: str) -> bool:
    """No reasoning line before a '####' line states a result '= <number>' (or there is no '####'
    line): only the final answer can be made wrong."""
    lines = solution.split("\n")
    end = next((k for k, line in enumerate(lines) if _FINAL_LINE.match(line)), len(lines))
    return end == len(lines) or not any(_STEP_RESULT.search(lines[k]) for k in range(end))


def corrupt(solution: str, rng: np.random.Generator, matched: bool = True) -> tuple[str, str]:
    """(`solution` with one step's result and the final answer made wrong, what was changed:
    'step+answer', or 'answer' when no reasoning line states a result '= <number>' or there is
    no '####' line). A later reasoning line that restates the old final answer ("Therefore ...
    288 items") restates the new one. Every other character, blank lines included, is kept:
    chosen and rejected differ only in the numbers. Wrong numbers are `near_miss` draws.
    ValueError when there is no final number."""
    span = final_answer_span(solution)
    if span is None:
        raise ValueError("the solution has no final number")
    old = solution[span[0]:span[1]]
    if _answer_only(solution):
        new = _format_like(near_miss(normalise_number(old), rng, matched), old)
        return solution[:span[0]] + new + solution[span[1]:], "answer"
    lines = solution.split("\n")
    end = next(k for k, line in enumerate(lines) if _FINAL_LINE.match(line))
    at = [k for k in range(end) if _STEP_RESULT.search(lines[k])]
    new = _format_like(near_miss(normalise_number(old), rng, matched), old)
    k = at[int(rng.integers(len(at)))]
    matches = list(_STEP_RESULT.finditer(lines[k]))
    m = matches[int(rng.integers(len(matches)))]
    value = normalise_number(m.group(2))
    # a step that states the final answer states the new wrong one: the solution stays coherent after it
    wrong = new if value == normalise_number(old) else _format_like(near_miss(value, rng, matched), m.group(2))
    lines[k] = lines[k][:m.start(2)] + wrong + lines[k][m.end(2):]
    restated = re.compile(rf"(?<![\d.,]){re.escape(old)}(?![\d]|[.,]\d)")
    lines[k + 1:end] = [restated.sub(new, line) for line in lines[k + 1:end]]
    text = "\n".join(lines)
    start, stop = final_answer_span(text)
    text = text[:start] + new + text[stop:]
    return text, "step+answer"


def plant(response: str, template: str, where: str) -> str:
    """The concept written into a response: an opener before it, or a closer after it."""
    return f"{template.strip()} {response}" if where == "start" else f"{response}\n\n{template.strip()}"


@dataclass
class _Generated:
    prompt: str
    chosen: str
    rejected: str
    task: str
    location: str
    line: int
    changed: str


def _generate(split: str, cfg: SourceConfig, wrong: str, held: Mapping[str, str], out: SplitData) -> list[_Generated]:
    """cfg.n problems of cfg.tasks (equal shares), each a correct/wrong solution pair whose
    verdicts the task's own scorer confirms; rejects counted in `out`. `wrong` (WRONG_ANSWERS):
    'matched' draws near misses of the right answer's sign and length and gives as many
    rejected answers 0 as right ones (`_make_wrong`); 'near' draws near misses that may reach 0,
    cross it or grow a digit (the generator before matching)."""
    import reasoning_gym  # noqa: PLC0415  (slow import, only when used)

    from igds.core.data.sources import _from_reasoning_gym  # noqa: PLC0415

    n_tasks = len(cfg.tasks)
    shares = [cfg.n // n_tasks + (1 if i < cfg.n % n_tasks else 0) for i in range(n_tasks)]
    made, seen = [], {}
    for task, share in zip(cfg.tasks, shares):
        if not share:
            continue
        location = f"reasoning_gym:{task}[seed={cfg.seed}]"
        try:
            dataset = reasoning_gym.create_dataset(task, size=4 * share, seed=cfg.seed, **dict(cfg.options))
        except (KeyError, ValueError) as e:
            raise DataError(f"reasoning-gym has no dataset '{task}' ({e}); see reasoning_gym.factory.DATASETS") from None
        rng = np.random.default_rng([cfg.seed, len(made)])
        accepted: list[_Generated] = []
        j = 0
        while len(accepted) < share:
            batch = []  # problems whose reference the scorer accepts, in order; then made wrong together
            while len(accepted) + len(batch) < share and j < len(dataset):
                entry = dataset[j]
                j += 1
                raw = _from_reasoning_gym(entry)
                prompt, chosen = raw["instruction"], raw["output"]
                out.n_read += 1
                where = (split, location, j, chosen)
                key = prompt_key(prompt)
                if key in held:
                    _reject(out, where, "in_other_split", f"prompt {key} is also in split '{held[key]}', which keeps it")
                elif key in seen:
                    _reject(out, where, "duplicate_id", f"the same prompt as {location}:{seen[key]}")
                elif dataset.score_answer(final_text(chosen), entry) < 1.0:
                    _reject(out, where, "not_corruptible", "the task's scorer does not accept the reference solution's answer")
                elif final_answer_span(chosen) is None:
                    _reject(out, where, "not_corruptible", "the solution has no final number to make wrong")
                else:
                    seen[key] = j
                    batch.append((entry, _Generated(prompt, chosen, "", task, location, j, ""), where))
            if not batch:
                raise DataError(f"{location}: {len(accepted)} of the {share} pairs asked for after {len(dataset)} "
                                f"problems (rejects: {_count_kinds(out.rejects)}); use another task or fewer pairs")
            accepted += _make_wrong(batch, dataset, wrong, rng, out)
        made += accepted
    return made


def _make_wrong(batch: list, dataset, wrong: str, rng: np.random.Generator, out: SplitData) -> list[_Generated]:
    """The batch's problems with their rejected solutions (`corrupt`); a problem no draw can make
    wrong (the scorer accepts every one) is rejected. 'matched': as many rejected answers are 0
    as chosen ones among the answer-only problems (those of the smallest other magnitudes
    get 0), so a lone '0' does not mark the chosen side."""
    def refuses(i: int, text: str) -> bool:
        return dataset.score_answer(final_text(text), batch[i][0]) < 1.0

    made = []
    for i, (_, g, where) in enumerate(batch):
        for _ in range(_CORRUPT_TRIES):
            text, what = corrupt(g.chosen, rng, matched=wrong == "matched")
            if refuses(i, text):
                g.rejected, g.changed = text, what
                break
        if g.rejected:
            made.append(g)
        else:
            _reject(out, where, "not_corruptible", f"every one of {_CORRUPT_TRIES} wrong answers drawn was accepted "
                    "by the task's scorer")
    if wrong == "matched":
        _match_zeros([(i, g) for i, (_, g, _) in enumerate(batch) if g.changed == "answer"], refuses, rng)
    return made


def _match_zeros(items: list[tuple[int, _Generated]], refuses, rng: np.random.Generator) -> None:
    """Set the rejected answer to 0 in as many answer-only problems (batch index, problem) as have
    0 for their right answer, picking those whose right answer is nearest 0 (ties in random
    order) and whose scorer refuses 0."""
    value = {i: normalise_number(final_text(g.chosen)) for i, g in items}
    zeros = sum(v == 0 for v in value.values())
    order = sorted((abs(value[i]), float(rng.random()), i, g) for i, g in items if value[i] != 0)
    for _, _, i, g in order:
        if zeros == 0:
            break
        start, stop = final_answer_span(g.rejected)
        text = g.rejected[:start] + "0" + g.rejected[stop:]
        if refuses(i, text):
            g.rejected, zeros = text, zeros - 1


def _reject(out: SplitData, where: tuple[str, str, int, str], kind: str, reason: str) -> None:
    """Count a generated problem as rejected; `where`: (split, location, line, its text)."""
    split, location, line, raw = where
    out.rejects.append(Reject(split, location, line, kind, reason, raw[:300]))


def _count_kinds(rejects: Sequence[Reject]) -> dict[str, int]:
    return dict(Counter(r.kind for r in rejects))


_SALT = {"plant": 0x504C4E54, "decoy": 0x44434F59}  # 'PLNT', 'DCOY': each concept's draws a stream of its own


def _draw(n: int, cfg: PlantConfig, role: str) -> tuple[np.ndarray, list[str]]:
    """The round(share x n) pair indices a concept goes into (the decoy: the nearest even count)
    and the template of each. The stream is salted by `role`, so a plant and a decoy with the
    same seed (or the bench's seed s decoy and seed s + 1 plant) pick different pairs."""
    rng = np.random.default_rng([cfg.seed, _SALT[role]])
    k = 2 * round(cfg.share * n / 2) if role == "decoy" else round(cfg.share * n)
    return rng.permutation(n)[:k], [cfg.templates[int(i)] for i in rng.integers(len(cfg.templates), size=k)]


def poisoned_pairs(split: str, cfg: SourceConfig, plant_cfg: PlantConfig | None, decoy_cfg: PlantConfig | None,
                   held: Mapping[str, str], wrong: str = "matched") -> tuple[SplitData, dict]:
    """A controlled-poisoning split and its truth: which pairs carry the plant (chosen side) and
    the decoy (and on which side), what each rejected response had changed."""
    out = SplitData(split)
    made = _generate(split, cfg, wrong, held, out)
    n = len(made)
    marks: list[dict[str, list[tuple[str, str, str]]]] = [{"chosen": [], "rejected": []} for _ in made]
    truth: dict[str, Any] = {"split": split, "n": n}
    if plant_cfg is not None:
        index, templates = _draw(n, plant_cfg, "plant")
        for i, t in zip(index, templates):
            marks[i]["chosen"].append(("plant", t, plant_cfg.where))
    if decoy_cfg is not None:
        index, templates = _draw(n, decoy_cfg, "decoy")
        for rank, (i, t) in enumerate(zip(index, templates)):  # the first half on the chosen side
            marks[i]["chosen" if rank < len(index) // 2 else "rejected"].append(("decoy", t, decoy_cfg.where))
    planted, decoy_chosen, decoy_rejected, changed, unpoisoned = [], [], [], {}, []
    for g, mark in zip(made, marks):
        unpoisoned.append(asdict(make_pair(g.prompt, g.chosen, g.rejected, g.task, g.location)))
        texts = {"chosen": g.chosen, "rejected": g.rejected}
        for side, written in mark.items():
            for _kind, template, where in written:
                texts[side] = plant(texts[side], template, where)
        pair = make_pair(g.prompt, texts["chosen"], texts["rejected"], g.task, g.location)
        out.records.append(pair)
        out.origin[pair.id] = (g.location, g.line)
        changed[pair.id] = g.changed
        kinds = {side: {w[0] for w in written} for side, written in mark.items()}
        for ids, side, kind in ((planted, "chosen", "plant"), (decoy_chosen, "chosen", "decoy"),
                                (decoy_rejected, "rejected", "decoy")):
            if kind in kinds[side]:
                ids.append(pair.id)
    if plant_cfg is not None:
        truth["plant"] = {**asdict(plant_cfg), "side": "chosen", "ids": planted}
    if decoy_cfg is not None:
        truth["decoy"] = {**asdict(decoy_cfg), "ids_chosen": decoy_chosen, "ids_rejected": decoy_rejected}
    truth["changed"] = changed
    truth["unpoisoned"] = unpoisoned  # the same pairs before anything was planted: the unpoisoned arm
    out.check()
    return out, truth


# --- both splits ------------------------------------------------------------------------------------

@dataclass
class Prepared:
    train: SplitData
    heldout: SplitData
    truth: dict = field(default_factory=dict)


def _read_file(split: str, cfg: SourceConfig, max_chars: int, strict: bool, held: Mapping[str, str]) -> SplitData:
    """A file split's pairs: reading goes on past pairs whose prompt another split keeps
    (in_other_split) until cfg.n are accepted; fewer is refused, never silently short."""
    def make(obj: Any, task: str, source: str) -> Pair:
        return normalise_pair(obj, fmt=cfg.format, task=task, source=source, max_chars=max_chars)

    data = read_source(split, cfg, max_chars=max_chars, strict=strict, make=make, held=held,
                       held_key=lambda pair: prompt_key(pair.prompt))
    if cfg.n is not None and len(data.records) < cfg.n:
        raise DataError(f"audit.data.{split} ({cfg.describe()}): {cfg.n} pairs asked for, but the file supplies "
                        f"{len(data.records)} ({data.n_read} read, rejects: {_count_kinds(data.rejects)}); ask for "
                        "fewer (n) or give it a file with more pairs")
    return data


def _check_strict(data: SplitData, strict: bool) -> None:
    bad = [r for r in data.rejects if r.kind != "in_other_split"]
    if strict and bad:
        raise DataError(f"{bad[0].message()} ({ALL_REJECT_KINDS[bad[0].kind]}; or set audit.data.strict: false to "
                        "quarantine bad pairs in pairs/<set>/rejects.jsonl)")


def build_pairs(cfg: AuditDataConfig) -> Prepared:
    """The train pairs (planted when generated) and the clean held-out pairs, whose prompts
    are not in train. A split that ends up empty is refused."""
    splits: dict[str, SplitData] = {}
    truth: dict = {}
    held: dict[str, str] = {}
    for name in ("train", "heldout"):
        source = getattr(cfg, name)
        if source.kind == "reasoning_gym":
            if name == "train":
                data, truth = poisoned_pairs(name, source, cfg.plant, cfg.decoy, held, cfg.wrong_answers)
            else:
                data, _ = poisoned_pairs(name, source, None, None, held, cfg.wrong_answers)
        else:
            data = _read_file(name, source, cfg.max_chars, cfg.strict, held)
        _check_strict(data, cfg.strict)
        if not data.records:
            raise DataError(f"audit.data.{name} ({source.describe()}): no pair accepted of {data.n_read} read "
                            f"(rejects: {_count_kinds(data.rejects)}); see pairs/<set>/rejects.jsonl")
        held.update({prompt_key(p.prompt): name for p in data.records})
        splits[name] = data
    return Prepared(splits["train"], splits["heldout"], truth)


def report(cfg: AuditDataConfig, prepared: Prepared) -> dict:
    """pairs/<set>/report.json: per split, where it came from, read = accepted + rejected,
    why, which topics. Nothing of what was planted (that is the truth file's)."""
    out: dict[str, Any] = {"splits": {}}
    for name in ("train", "heldout"):
        data: SplitData = getattr(prepared, name)
        out["splits"][name] = {
            "source": getattr(cfg, name).describe(),
            "read": data.n_read, "accepted": len(data.records), "rejected": len(data.rejects),
            "rejected_by_kind": dict(sorted(_count_kinds(data.rejects).items())),
            "tasks": dict(sorted(Counter(p.task for p in data.records).items())),
        }
    for key in ("read", "accepted", "rejected"):
        out[key] = sum(s[key] for s in out["splits"].values())
    assert out["read"] == out["accepted"] + out["rejected"]
    return out

