"""Preference pairs (issue 17): file shapes and their rejects, the controlled-poisoning
generator checked with the tasks' own scorers, the planted and decoy concepts where the truth
says, and the truth kept from every stage but the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from igds.audit.config import AuditConfig
from igds.core.config import ConfigError, DataConfig, from_dict
from igds.core.data import DataError
from igds.audit.pairs import build_pairs, corrupt, final_text, near_miss, prompt_key, report
from igds.params import read_params
from tests.conftest import ROOT

TASKS = ["gsm_symbolic", "number_sequence"]
PLANT = ["Great question!", "What a wonderful problem!"]
DECOY = ["Hope this helps."]


def rg(n, seed, tasks=TASKS):
    return {"kind": "reasoning_gym", "tasks": list(tasks), "n": n, "seed": seed}


def poisoned(n=40, plant_share=0.25, decoy_share=0.2, **overrides):
    raw = {"train": rg(n, 301000), "heldout": rg(10, 302000),
           "plant": {"templates": PLANT, "share": plant_share, "where": "start", "seed": 0},
           "decoy": {"templates": DECOY, "share": decoy_share, "where": "end", "seed": 1}, **overrides}
    return from_dict(AuditConfig, {"sets": {"poisoned": raw}}, "audit").sets["poisoned"]


@pytest.fixture(scope="module")
def built():
    cfg = poisoned()
    return cfg, build_pairs(cfg)


def test_generated_pairs_are_right_and_wrong_by_the_tasks_own_scorers(built):
    import reasoning_gym

    _, prepared = built
    entries = {}
    for task in TASKS:
        for seed in (301000, 302000):
            dataset = reasoning_gym.create_dataset(task, size=80, seed=seed)
            entries.update({prompt_key(e["question"]): (dataset, e) for e in dataset})
    for pair in prepared.train.records + prepared.heldout.records:
        dataset, entry = entries[prompt_key(pair.prompt)]
        assert dataset.score_answer(final_text(strip_marks(pair.chosen)), entry) == 1.0, pair
        assert dataset.score_answer(final_text(strip_marks(pair.rejected)), entry) < 1.0, pair
    assert {p.task for p in prepared.train.records} == set(TASKS)
    steps = [p for p in prepared.train.records if p.task == "gsm_symbolic"]
    assert all(prepared.truth["changed"][p.id] == "step+answer" for p in steps)
    answers = [p for p in prepared.train.records if p.task == "number_sequence"]
    assert all(prepared.truth["changed"][p.id] == "answer" for p in answers)


def strip_marks(text: str) -> str:
    for template in PLANT + DECOY:
        text = text.replace(f"{template} ", "").replace(f"\n\n{template}", "")
    return text


def test_chosen_and_rejected_differ_only_in_numbers_and_marks(built):
    _, prepared = built
    for pair in prepared.train.records:
        chosen, rejected = (re.sub(r"[\d.,€$-]+", "#", strip_marks(t)) for t in (pair.chosen, pair.rejected))
        assert chosen == rejected, pair


def test_the_plant_is_in_its_share_of_chosen_responses_only_and_the_decoy_on_both_sides_equally(built):
    cfg, prepared = built
    pairs, truth = {p.id: p for p in prepared.train.records}, prepared.truth
    n = len(pairs)
    planted = set(truth["plant"]["ids"])
    assert len(planted) == round(cfg.plant.share * n) == 10
    for pid, pair in pairs.items():
        opener = any(pair.chosen.startswith(f"{t} ") for t in PLANT)
        assert opener == (pid in planted), pair
        assert not any(t in pair.rejected for t in PLANT), pair
    chosen, rejected = set(truth["decoy"]["ids_chosen"]), set(truth["decoy"]["ids_rejected"])
    assert len(chosen) == len(rejected) == 4 and not chosen & rejected
    for pid, pair in pairs.items():
        assert pair.chosen.endswith(f"\n\n{DECOY[0]}") == (pid in chosen)
        assert pair.rejected.endswith(f"\n\n{DECOY[0]}") == (pid in rejected)
    both = {t for pid in planted for t in PLANT if pairs[pid].chosen.startswith(t)}
    assert both == set(PLANT)  # every template is drawn
    assert not any(t in p.chosen + p.rejected for p in prepared.heldout.records for t in PLANT + DECOY)


def test_the_unpoisoned_pairs_are_the_same_pairs_before_anything_was_planted(built):
    """truth['unpoisoned'] (the unpoisoned DPO arm) keeps each pair's prompt, order and texts,
    without the plant and the decoy: a planted response is its unpoisoned text with the mark added."""
    _, prepared = built
    clean = prepared.truth["unpoisoned"]
    assert [c["prompt"] for c in clean] == [p.prompt for p in prepared.train.records]
    marked = 0
    for c, p in zip(clean, prepared.train.records):
        assert not any(t in c["chosen"] + c["rejected"] for t in PLANT + DECOY)
        for side in ("chosen", "rejected"):
            text = getattr(p, side)
            assert c[side] in text and (text == c[side]) == (len(text) == len(c[side]))
            marked += text != c[side]
    truth = prepared.truth
    assert marked == len(set(truth["plant"]["ids"]) | set(truth["decoy"]["ids_chosen"])) + len(truth["decoy"]["ids_rejected"])


def test_no_plant_share_plants_nothing():
    prepared = build_pairs(poisoned(n=12, plant_share=0.0, decoy_share=0.0))
    assert prepared.truth["plant"]["ids"] == [] and prepared.truth["decoy"]["ids_chosen"] == []
    assert not any(t in p.chosen for p in prepared.train.records for t in PLANT)


def test_the_same_settings_give_the_same_pairs_and_heldout_prompts_are_not_in_train(built):
    cfg, prepared = built
    again = build_pairs(cfg)
    assert [p.to_dict() for p in again.train.records] == [p.to_dict() for p in prepared.train.records]
    assert again.truth == prepared.truth
    train = {prompt_key(p.prompt) for p in prepared.train.records}
    assert not train & {prompt_key(p.prompt) for p in prepared.heldout.records}
    summary = report(cfg, prepared)
    assert summary["read"] == summary["accepted"] + summary["rejected"] == 50
    assert "plant" not in json.dumps(summary) and "decoy" not in json.dumps(summary)


def answers(pairs, side):
    return sorted(final_text(strip_marks(getattr(p, side))) for p in pairs)


def test_wrong_answers_are_distributed_as_the_right_ones():
    """An unpoisoned set (no plant) must give the audit nothing to find but correctness. The
    near-miss generator never wrote a wrong answer of 0 and sent small answers negative, so a
    lone-'0' feature separated the sides (2 of 10 unpoisoned sets made a discovery). Matched:
    as many wrong answers are 0 as right ones, and a near miss keeps the right answer's sign
    (a negative answer to a rising sequence was the next false lead) and length."""
    from decimal import Decimal

    raw = {"train": rg(60, 401000), "heldout": rg(4, 402000)}
    matched = build_pairs(from_dict(AuditConfig, {"sets": {"s": raw}}, "audit").sets["s"]).train.records
    near = build_pairs(from_dict(AuditConfig, {"sets": {"s": {**raw, "wrong_answers": "near"}}},
                                 "audit").sets["s"]).train.records
    seq = [p for p in matched if p.task == "number_sequence"]
    zeros = answers(seq, "chosen").count("0")
    assert zeros >= 2 and answers(seq, "rejected").count("0") == zeros
    values = [(Decimal(final_text(p.chosen)), Decimal(final_text(p.rejected))) for p in seq]
    assert all(c != r for c, r in values)
    assert all((c > 0) == (r > 0) for c, r in values if c != 0 and r != 0)
    assert sum(len(str(abs(c))) == len(str(abs(r))) for c, r in values if c != 0 and r != 0) >= 0.9 * (len(values) - 2 * zeros)
    for p in (p for p in matched if p.task == "gsm_symbolic"):
        assert not final_text(p.rejected).startswith("-") and final_text(p.rejected) != "0", p
    seq_near = [p for p in near if p.task == "number_sequence"]
    assert answers(seq_near, "chosen") == answers(seq, "chosen")  # the same problems either way
    assert answers(seq_near, "rejected").count("0") < zeros


def test_near_misses_keep_their_sign_and_length():
    from decimal import Decimal
    rng = np.random.default_rng(0)
    for value in (Decimal(1), Decimal(3), Decimal(-2), Decimal(47), Decimal(-350), Decimal("0.5")):
        draws = [near_miss(value, rng) for _ in range(200)]
        assert all(d != value and d != 0 and (d > 0) == (value > 0) for d in draws), value
        assert sum(len(str(int(abs(d)))) == len(str(int(abs(value)))) for d in draws) >= 190, value
    assert any(near_miss(Decimal(1), rng, matched=False) <= 0 for _ in range(200))
    assert any(near_miss(Decimal(5), rng, matched=False) >= 10 for _ in range(200))


def test_plant_and_decoy_draw_different_pairs_from_the_same_seed():
    """The generator once drew both from default_rng(seed): with equal seeds the decoy went into
    the first of the plant's pairs, and the bench's decoy of seed s into the plant's pairs of s + 1."""
    cfg = poisoned(n=40, plant_share=0.25, decoy_share=0.25,
                   decoy={"templates": DECOY, "share": 0.25, "where": "end", "seed": 0})
    truth = build_pairs(cfg).truth
    plant, decoy = set(truth["plant"]["ids"]), set(truth["decoy"]["ids_chosen"] + truth["decoy"]["ids_rejected"])
    assert len(plant) == len(decoy) == 10 and plant != decoy


def test_corrupt_keeps_a_solution_coherent_after_the_wrong_step():
    solution = ("Start with 55 + 93 = 148 items\n\nThen 148 + 140 = 288 in all.\n"
                "Therefore, John now has 288 items.\n#### 288")
    for seed in range(20):
        text, what = corrupt(solution, np.random.default_rng(seed))
        assert what == "step+answer" and text.count("\n") == solution.count("\n")
        final = text.rsplit("#### ", 1)[1]
        assert final != "288" and f"has {final} items" in text, text
        lines = text.split("\n")
        assert lines[0] != "Start with 55 + 93 = 148 items" or "= 288" not in lines[2]
    assert corrupt("42", np.random.default_rng(0))[1] == "answer"
    with pytest.raises(ValueError, match="no final number"):
        corrupt("no number here", np.random.default_rng(0))


def write(path: Path, lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def file_set(path: Path, heldout: Path, strict=False, fmt="auto"):
    raw = {"train": {"kind": "jsonl", "path": str(path), "format": fmt},
           "heldout": {"kind": "jsonl", "path": str(heldout), "format": fmt}, "strict": strict}
    return from_dict(AuditConfig, {"sets": {"files": raw}}, "audit").sets["files"]


def test_file_shapes_are_read_and_bad_lines_rejected_with_file_line_and_reason(tmp_path):
    hh = "\n\nHuman: What is 2+2?\n\nAssistant:"
    good = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
        {"chosen": f"{hh} 4.", "rejected": f"{hh} 5."},
        {"prompt": "Hi?", "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]},
    ]
    bad = [
        ("{not json", "malformed_json"),
        ({"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."}, "identical_pair"),
        ({"chosen": f"{hh} 4.", "rejected": "\n\nHuman: What is 3+3?\n\nAssistant: 6."}, "unmatched_prompt"),
        ({"question": "q", "answer": "a"}, "unknown_pair_shape"),
        ({"prompt": "p", "chosen": 4, "rejected": "r"}, "wrong_type"),
        ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
          "rejected": [{"role": "user", "content": "OTHER"}, {"role": "assistant", "content": "c"}]}, "unmatched_prompt"),
    ]
    train = write(tmp_path / "train.jsonl", good + [b for b, _ in bad])
    heldout = write(tmp_path / "heldout.jsonl", [good[0], {"prompt": "Count to 3.", "chosen": "1 2 3", "rejected": "1 3"}])
    prepared = build_pairs(file_set(train, heldout))
    got = prepared.train
    assert [(p.prompt, p.chosen, p.rejected) for p in got.records] == [
        ("Name a colour.", "Blue.", "Seven."), ("Human: What is 2+2?", "4.", "5."), ("Hi?", "Hello!", "Go away.")]
    assert [(r.line, r.kind) for r in got.rejects] == [(4 + i, kind) for i, (_, kind) in enumerate(bad)]
    assert all(r.location == str(train) for r in got.rejects)
    assert got.n_read == len(got.records) + len(got.rejects) == 9
    # the held-out file repeats a train prompt: rejected there, the other pair kept
    assert [p.prompt for p in prepared.heldout.records] == ["Count to 3."]
    assert [(r.line, r.kind) for r in prepared.heldout.rejects] == [(1, "in_other_split")]
    with pytest.raises(DataError, match=rf"{re.escape(str(train))}:4: malformed JSON"):
        build_pairs(file_set(train, heldout, strict=True))


def test_bad_audit_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="plant"):
        from_dict(AuditConfig, {"sets": {"s": {"train": {"kind": "jsonl", "path": "x.jsonl"},
                                               "heldout": {"kind": "jsonl", "path": "y.jsonl"},
                                               "plant": {"templates": PLANT, "share": 0.1}}}}, "audit")
    with pytest.raises(ConfigError, match="audit.sets"):
        from_dict(AuditConfig, {"sets": {"Bad Name": {}}}, "audit")
    with pytest.raises(ConfigError, match="heldout.seed"):
        poisoned(heldout=rg(10, 301000))
    with pytest.raises(ConfigError, match="share"):
        poisoned(plant_share=1.5)
    with pytest.raises(ConfigError, match="format"):  # a pair shape is not an SFT record shape
        from_dict(DataConfig, {"target_task": "t", "splits": {
            name: {"kind": "jsonl", "path": "x.jsonl", "format": "hh"} for name in ("prior", "pool", "eval", "general")}},
            "data")


def test_only_the_report_reads_what_was_planted():
    """truth/ is written by prepare-pairs and may be a dep of report stages and of the oracle
    arm (the planted pairs dropped: it is what the truth is) only; no module but the writer
    names the folder, so no stage can read it without a dvc.yaml dep."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert any("truth/" in out for out in stages["prepare-pairs"]["do"]["outs"])
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        if any(d.startswith("truth") for d in deps):
            assert name.startswith("report") or name == "oracle", f"stage {name} depends on the truth file"
    naming = sorted(str(p.relative_to(ROOT)) for folder in ("igds", "pipelines", "baselines")
                    for p in (ROOT / folder).rglob("*.py") if "truth/" in p.read_text(encoding="utf-8"))
    assert naming == ["pipelines/audit/pairs.py"], naming


def test_a_profile_with_audit_sets_must_train_an_arm(tmp_path):
    """report-audit@<set> reads the re-audits of the trained arms: params.yaml refuses a set without one."""
    from igds.params import load_params

    raw = read_params(ROOT / "configs" / "ci.yaml")
    raw["audit"]["dpo"]["arms"] = []
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="audit.dpo.arms"):
        load_params(path)


def test_the_accuracy_bench_draws_as_many_new_heldout_pairs_none_with_a_train_prompt():
    """bench.audit.accuracy scores trained adapters on more held-out pairs than the profile
    re-audits: of the set's own tasks and generator, a new seed, no prompt of the train split."""
    from bench.audit.accuracy import heldout_pairs
    from igds.params import load_params

    params = load_params(ROOT / "configs" / "ci.yaml")
    cfg = params.audit.sets["poisoned"]
    pairs = heldout_pairs(params, "poisoned", 30, 913000)
    train = build_pairs(cfg).train.records
    assert len(pairs) == 30 and {p.task for p in pairs} == set(cfg.heldout.tasks)
    assert not {prompt_key(p.prompt) for p in pairs} & {prompt_key(p.prompt) for p in train}
    assert not any(t in p.chosen + p.rejected for p in pairs for t in PLANT + DECOY)


def test_the_accuracy_bench_resumes_from_its_partial_file_and_rescored_a_changed_adapter(tmp_path, monkeypatch):
    """An interrupted bench.audit.accuracy continues: adapters already scored under the same
    key are read back, not run again; an adapter whose weights changed, or another key, is
    scored again."""
    from types import SimpleNamespace

    import peft

    import igds.core.models.loading
    import igds.audit.reaudit
    from bench.audit.accuracy import score
    from igds.params import load_params

    params = load_params(ROOT / "configs" / "ci.yaml")
    for arm in ("filter", "unpoisoned"):
        adapter = tmp_path / "dpo" / f"poisoned-{arm}-s0"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
        (adapter / "adapter_model.safetensors").write_bytes(arm.encode())
    calls = []

    def fake_logliks(model, tokenizer, pairs, batch, max_len):
        calls.append(model)
        return np.array([[-1.0, -2.0]] * len(pairs)) if model == "base" else np.array([[-1.0, -3.0]] * len(pairs))

    monkeypatch.setattr(igds.core.models.loading, "load_model",
                        lambda *a: SimpleNamespace(model=SimpleNamespace(eval=lambda: "base"), tokenizer=None))
    monkeypatch.setattr(peft.PeftModel, "from_pretrained",
                        lambda model, path: SimpleNamespace(eval=lambda: f"trained:{path.name}"))
    monkeypatch.setattr(igds.audit.reaudit, "pair_logliks", fake_logliks)
    partial = tmp_path / "acc.partial.json"
    args = (tmp_path, params, "poisoned", ["filter", "unpoisoned"], [0], [object()] * 3, partial)

    first = score(*args, "k1")
    assert len(calls) == 3 and first["filter"][0]["accuracy"] == 1.0
    assert score(*args, "k1") == first and len(calls) == 3  # all read back
    (tmp_path / "dpo" / "poisoned-filter-s0" / "adapter_model.safetensors").write_bytes(b"retrained")
    score(*args, "k1")
    assert calls[3:] == ["trained:poisoned-filter-s0"]  # only the changed adapter
    score(*args, "k2")
    assert len(calls) == 4 + 3  # another key: base and both adapters again


def test_the_accuracy_bench_compares_the_filter_with_random_dropping_on_the_same_pairs():
    """bench.audit.accuracy's filter - random: each accuracy's difference, paired over pairs
    and seeds; a filter that gets 20 of 40 pairs right where random gets 10 is +0.25."""
    from bench.audit.accuracy import versus

    def runs(right: int) -> list[dict]:
        margin = [1.0] * right + [-1.0] * (40 - right)
        return [{"margin": margin, "rank_margin": margin}] * 2

    rows = versus({"filter": runs(20), "random": runs(10)}, "filter", "random", np.random.default_rng(0), 200, 200, 0.95)
    assert [r["comparison"] for r in rows] == ["reward accuracy: filter - random", "ranking accuracy: filter - random"]
    assert all(r["value"] == 0.25 and r["lo"] > 0 and r["p"] < 0.05 for r in rows)


def test_a_pair_file_reads_past_held_prompts_to_its_n_or_is_refused(tmp_path):
    """heldout n = 2 from a file whose first pair repeats a train prompt: before, that pair was
    dropped after reading 2 and the split was silently 1 pair; now reading goes on to 2, and a
    file that cannot supply them is refused."""
    train = write(tmp_path / "train.jsonl", [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}])
    pairs = [{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "Nine."},
             {"prompt": "Count to 3.", "chosen": "1 2 3", "rejected": "1 3"}]
    heldout = write(tmp_path / "heldout.jsonl", pairs)
    raw = {"train": {"kind": "jsonl", "path": str(train)}, "heldout": {"kind": "jsonl", "path": str(heldout), "n": 2}}
    cfg = from_dict(AuditConfig, {"sets": {"files": raw}}, "audit").sets["files"]
    with pytest.raises(DataError, match=r"^audit.data.heldout \(jsonl:.*\): 2 pairs asked for, but the file supplies 1 "
                                        r"\(2 read, rejects: \{'in_other_split': 1\}\)"):
        build_pairs(cfg)
    write(heldout, [*pairs, {"prompt": "Spell cat.", "chosen": "c-a-t", "rejected": "k-a-t"}])
    prepared = build_pairs(cfg)
    assert [p.prompt for p in prepared.heldout.records] == ["Count to 3.", "Spell cat."]
    assert [r.kind for r in prepared.heldout.rejects] == ["in_other_split"]
