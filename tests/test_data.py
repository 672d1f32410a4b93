"""Data sources, validation, the mixed pool and split disjointness."""

from __future__ import annotations

import ast
import bz2
import functools
import gzip
import json
import lzma
import re
from pathlib import Path

import pytest

from igds.core.config import ConfigError, DataConfig, SourceConfig, from_dict
from igds.core.data import REJECT_KINDS, DataError, Reject, build_splits, make_record, read_source, record_id, sources
from igds.core.evaluate import extract_answer, normalise_number
from igds.core.data.schema import ALL_REJECT_KINDS, PAIR_REJECT_KINDS
from tests.conftest import GSM8K_SAMPLE, ROOT


def rg(tasks, n, seed):
    return {"kind": "reasoning_gym", "tasks": list(tasks), "n": n, "seed": seed}


def splits(**overrides) -> dict:
    return {
        "prior": rg(["gsm_symbolic"], 20, 1),
        "pool": rg(["gsm_symbolic"], 40, 2),
        "eval": rg(["gsm_symbolic"], 10, 3),
        "general": rg(["syllogism", "word_sorting"], 20, 4),
        **overrides,
    }


def data_cfg(**overrides) -> DataConfig:
    return from_dict(DataConfig, {"target_task": "gsm_symbolic", "splits": splits(), **overrides}, "data")


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            if isinstance(line, str):
                line = line.encode("utf-8")
            f.write(line + b"\n")
    return path


# --- ids -------------------------------------------------------------------------------

def test_record_id_is_a_stable_content_hash():
    # a fixed value: ids must not change across runs, machines or versions
    assert record_id("What is 2+3?", "", "2 + 3 = 5\n#### 5") == "9b04a73dd146804c"
    a = make_record("q", "", "a", task="t1", source="s1")
    b = make_record("q", "", "a", task="t2", source="s2")
    assert a.id == b.id  # same content, same id, whatever the source
    assert make_record("q", "", "a2", "t", "s").id != a.id


def test_same_params_give_identical_splits():
    first, second = build_splits(data_cfg(), seed=0), build_splits(data_cfg(), seed=0)
    assert first.splits == second.splits
    assert first.report == second.report


# --- sources -------------------------------------------------------------------------

def test_reasoning_gym_source_is_seeded_and_gsm_symbolic_has_final_answers():
    cfg = from_dict(SourceConfig, rg(["gsm_symbolic"], 15, 7), "s")
    a = read_source("prior", cfg, max_chars=10_000, strict=True)
    b = read_source("prior", cfg, max_chars=10_000, strict=True)
    c = read_source("prior", from_dict(SourceConfig, rg(["gsm_symbolic"], 15, 8), "s"), max_chars=10_000, strict=True)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert len(a.records) == 15 and a.n_read == 15
    assert not {r.id for r in a.records} & {r.id for r in c.records}
    for r in a.records:
        assert r.task == "gsm_symbolic" and r.instruction and "####" in r.output


def test_reasoning_gym_tasks_share_the_count():
    cfg = from_dict(SourceConfig, rg(["syllogism", "word_sorting", "spell_backward"], 10, 1), "s")
    data = read_source("general", cfg, max_chars=10_000, strict=True)
    counts = {t: sum(r.task == t for r in data.records) for t in cfg.tasks}
    assert counts == {"syllogism": 4, "word_sorting": 3, "spell_backward": 3}


def test_jsonl_gsm8k_format_from_the_sample():
    cfg = SourceConfig(kind="jsonl", path=str(GSM8K_SAMPLE / "train.jsonl"), format="gsm8k", task="gsm8k")
    data = read_source("pool", cfg, max_chars=10_000, strict=True)
    assert len(data.records) == 300 and not data.rejects
    first = json.loads((GSM8K_SAMPLE / "train.jsonl").read_text().splitlines()[0])
    r = data.records[0]
    assert r.instruction == first["question"] and r.input == "" and r.task == "gsm8k"
    assert "<<" not in r.output and r.output.endswith("#### 6")  # calculator annotations dropped
    kept = read_source("pool", SourceConfig(kind="jsonl", path=str(GSM8K_SAMPLE / "train.jsonl"),
                                            strip_calculator=False), max_chars=10_000, strict=True, n=5)
    assert len(kept.records) == 5 and "<<4*3=12>>" in kept.records[0].output


def test_jsonl_instruction_input_output_format(tmp_path):
    path = write_lines(tmp_path / "alpaca.jsonl", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "output": "hi"},  # input is optional
    ])
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(path)), max_chars=1000, strict=True)
    assert [(r.instruction, r.input, r.output, r.task) for r in data.records] == [
        ("Add the numbers.", "2 and 3", "5", "alpaca"), ("Say hi.", "", "hi", "alpaca")]
    assert data.records[0].prompt == "Add the numbers.\n\n2 and 3"


def test_hf_source_reads_a_saved_dataset_and_a_local_data_folder(tmp_path):
    import datasets

    rows = [{"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(6)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    saved = read_source("eval", SourceConfig(kind="hf", path=str(tmp_path / "saved"), task="toy"),
                        max_chars=1000, strict=True)
    assert [r.output for r in saved.records] == [row["answer"] for row in rows]

    folder = tmp_path / "files"
    folder.mkdir()
    write_lines(folder / "train.jsonl", rows[:4])
    loaded = read_source("eval", SourceConfig(kind="hf", path=str(folder), split="train", n=3),
                         max_chars=1000, strict=True)
    assert [r.instruction for r in loaded.records] == [row["question"] for row in rows[:3]]
    assert loaded.records[0].source == f"hf:{folder}"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nope.jsonl not found"):
        read_source("pool", SourceConfig(kind="jsonl", path=str(tmp_path / "nope.jsonl")), max_chars=10, strict=False)


# --- bad input -------------------------------------------------------------------------

GOOD = [{"instruction": f"Task {i}", "input": "", "output": f"Answer {i}"} for i in range(5)]
BAD = [  # (line content, expected kind)
    (b'{"instruction": "broken", "output": ', "malformed_json"),
    ({"instruction": "no output here"}, "missing_field"),
    ({"instruction": "   ", "output": "x"}, "empty_field"),
    (b'{"instruction": "caf\xe9", "output": "latin-1 bytes"}', "not_utf8"),
    ({"instruction": "Task 0", "input": "", "output": "Answer 0"}, "duplicate_id"),
    ({"instruction": "long " * 100, "output": "x"}, "over_long"),
    ({"instruction": 7, "output": "x"}, "wrong_type"),
    (b'["a", "list"]', "not_object"),
    ({"prompt": "p", "completion": "c"}, "unknown_shape"),
]


def mixed_file(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    lines, expected = list(GOOD), {}
    for content, kind in BAD:
        lines.append(content)
        expected[len(lines)] = kind
    lines.insert(2, b"")  # blank lines are skipped, not records
    expected = {(n + 1 if n >= 3 else n): k for n, k in expected.items()}
    return write_lines(tmp_path / "pool.jsonl", lines), expected


def test_lenient_mode_quarantines_every_defect_with_file_and_line(tmp_path):
    path, expected = mixed_file(tmp_path)
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(path)), max_chars=200, strict=False)
    assert [r.instruction for r in data.records] == [g["instruction"] for g in GOOD]
    assert {r.line: r.kind for r in data.rejects} == expected
    assert data.n_read == len(GOOD) + len(BAD) == len(data.records) + len(data.rejects)
    for r in data.rejects:
        assert r.location == str(path) and r.reason and r.raw
    dup = next(r for r in data.rejects if r.kind == "duplicate_id")
    assert f"{path}:1" in dup.reason  # points at the first copy


def test_strict_mode_stops_at_the_first_bad_record_naming_file_and_line(tmp_path):
    path, expected = mixed_file(tmp_path)
    first_bad = min(expected)
    with pytest.raises(DataError) as err:
        read_source("pool", SourceConfig(kind="jsonl", path=str(path)), max_chars=200, strict=True)
    message = str(err.value)
    assert message.startswith(f"{path}:{first_bad}: malformed JSON")
    assert "data.strict: false" in message


def test_gsm8k_answer_without_final_line_is_rejected(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [{"question": "q?", "answer": "just words"}])
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(path), format="gsm8k"), max_chars=100, strict=False)
    assert [r.kind for r in data.rejects] == ["no_final_answer"]


# --- splits ----------------------------------------------------------------------------

def test_mixed_pool_has_the_configured_on_task_share():
    cfg = data_cfg(mix={"on_task_share": 0.3, "distractors": rg(["spell_backward", "letter_counting"], 1, 9)})
    prepared = build_splits(cfg, seed=0)
    pool = prepared.splits["pools/mixed"]
    report = prepared.report["splits"]["pools/mixed"]
    n_on = sum(r.task == "gsm_symbolic" for r in pool)
    assert report["read"] == 40
    assert n_on + sum(1 for r in prepared.rejects if r.split == "pool" and "gsm" in r.location) == 12
    assert abs(report["on_task_share"] - n_on / len(pool)) < 1e-6
    assert 0.25 <= report["on_task_share"] <= 0.35
    assert {r.task for r in pool} == {"gsm_symbolic", "spell_backward", "letter_counting"}
    # shuffled together, not on-task first
    assert [r.task == "gsm_symbolic" for r in pool] != sorted([r.task == "gsm_symbolic" for r in pool], reverse=True)


def test_splits_are_disjoint_and_eval_keeps_shared_examples(tmp_path):
    eval_rows = [{"question": f"Q{i}?", "answer": f"A\n#### {i}"} for i in range(6)]
    prior_rows = eval_rows[:2] + [{"question": f"P{i}?", "answer": f"B\n#### {i}"} for i in range(4)]
    pool_rows = prior_rows[2:3] + eval_rows[5:6] + [{"question": f"C{i}?", "answer": f"C\n#### {i}"} for i in range(5)]
    files = {n: write_lines(tmp_path / f"{n}.jsonl", rows) for n, rows in
             [("eval", eval_rows), ("prior", prior_rows), ("pool", pool_rows)]}
    cfg = data_cfg(splits={
        "prior": {"kind": "jsonl", "path": str(files["prior"]), "task": "gsm_symbolic"},
        "pool": {"kind": "jsonl", "path": str(files["pool"]), "task": "gsm_symbolic"},
        "eval": {"kind": "jsonl", "path": str(files["eval"]), "task": "gsm_symbolic"},
        "general": rg(["syllogism"], 5, 4),
    })
    prepared = build_splits(cfg, seed=0)
    ids = {n: {r.id for r in recs} for n, recs in prepared.splits.items()}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not ids[a] & ids[b], f"{a} and {b} share ids"
    assert len(ids["eval"]) == 6 and len(ids["prior"]) == 4 and len(ids["pools/mixed"]) == 5
    moved = [(r.split, r.location, r.line) for r in prepared.rejects if r.kind == "in_other_split"]
    assert sorted(moved) == sorted([("prior", str(files["prior"]), 1), ("prior", str(files["prior"]), 2),
                                    ("pool", str(files["pool"]), 1), ("pool", str(files["pool"]), 2)])
    rep = prepared.report
    assert rep["read"] == rep["accepted"] + rep["rejected"] == 6 + 6 + 7 + 5


def test_a_split_empty_after_rejection_stops_with_a_clear_message(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [b"not json", {"instruction": ""}])
    cfg = data_cfg(splits={**{n: rg(["gsm_symbolic"], 5, s) for n, s in [("prior", 1), ("eval", 3)]},
                           "pool": {"kind": "jsonl", "path": str(path)}, "general": rg(["syllogism"], 5, 4)})
    with pytest.raises(ValueError, match=r"split 'pools/mixed' \(jsonl:.*bad.jsonl\) is empty after validation: 2 read, 2 rejected \(1 empty_field, 1 malformed_json\); first: .*bad.jsonl:1: malformed JSON"):
        build_splits(cfg, seed=0)


def test_data_config_rejects_shared_seeds():
    with pytest.raises(ConfigError, match=r"data.splits.\*.seed"):
        data_cfg(splits={"prior": rg(["gsm_symbolic"], 5, 1), "pool": rg(["gsm_symbolic"], 5, 1),
                         "eval": rg(["gsm_symbolic"], 5, 3), "general": rg(["syllogism"], 5, 4)})


# --- requested counts: met after de-duplication, or refused ------------------------------

TRAIN = GSM8K_SAMPLE / "train.jsonl"  # 300 GSM8K problems


@functools.cache
def train_ids() -> list[str]:
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(TRAIN), format="gsm8k"), max_chars=10_000,
                       strict=True)
    return [r.id for r in data.records]


def one_file_cfg(prior_n: int, pool_n: int, *, share: float | None = None, strict: bool = False,
                 target: str = "gsm8k") -> DataConfig:
    """prior and pool from the same GSM8K train file (as the gpu-paper profile does), eval from test."""
    gsm8k = {"kind": "jsonl", "format": "gsm8k", "task": "gsm8k"}
    raw = {
        "target_task": target, "strict": strict,
        "splits": {"prior": {**gsm8k, "path": str(TRAIN), "n": prior_n},
                   "pool": {**gsm8k, "path": str(TRAIN), "n": pool_n},
                   "eval": {**gsm8k, "path": str(GSM8K_SAMPLE / "test.jsonl"), "n": 20},
                   "general": rg(["syllogism"], 10, 4)},
    }
    if share is not None:
        raw["mix"] = {"on_task_share": share, "distractors": rg(["spell_backward", "letter_counting"], 1, 9)}
    return from_dict(DataConfig, raw, "data")


def test_splits_from_one_file_get_their_counts_after_de_duplication():
    prepared = build_splits(one_file_cfg(100, 150), seed=0)
    assert [r.id for r in prepared.splits["prior"]] == train_ids()[:100]
    assert [r.id for r in prepared.splits["pools/mixed"]] == train_ids()[100:250]  # read on past what prior keeps
    pool = prepared.report["splits"]["pools/mixed"]
    assert pool["read"] == 250 and pool["accepted"] == 150 and pool["rejected_by_kind"] == {"in_other_split": 100}


def test_a_mixed_pool_from_the_priors_file_keeps_its_on_task_share():
    prepared = build_splits(one_file_cfg(100, 80, share=0.5), seed=0)
    pool = prepared.splits["pools/mixed"]
    assert len(pool) == 80 and prepared.report["splits"]["pools/mixed"]["on_task_share"] == 0.5
    assert {r.id for r in pool if r.task == "gsm8k"} == set(train_ids()[100:140])


@pytest.mark.parametrize("strict", [False, True])
def test_a_source_that_cannot_supply_the_count_is_refused(strict):
    with pytest.raises(DataError, match=r"^split 'pool' \(data.splits.pool.n = 250\): 250 records asked for, but "
                       r"jsonl:.*train.jsonl supplies 100 \(300 read, 200 rejected: in_other_split 200\); ask for "
                       r"fewer .* splits read from one file must fit in it together$"):
        build_splits(one_file_cfg(200, 250, strict=strict), seed=0)
    with pytest.raises(DataError, match=r"^the mixed pool's on-task part \(data.splits.pool.n x data.mix.on_task_share"
                       r" = 480 x 0.5\): 240 records asked for, but jsonl:.*train.jsonl supplies 100 "):
        build_splits(one_file_cfg(200, 480, share=0.5, strict=strict), seed=0)


def test_rejected_records_do_not_count_and_a_short_file_is_refused(tmp_path):
    path = write_lines(tmp_path / "pool.jsonl", GOOD[:3] + [b"not json"] + GOOD[3:])
    four = read_source("pool", SourceConfig(kind="jsonl", path=str(path), n=4), max_chars=100, strict=False)
    assert [r.instruction for r in four.records] == [g["instruction"] for g in GOOD[:4]] and four.n_read == 5
    cfg = data_cfg(splits=splits(pool={"kind": "jsonl", "path": str(path), "n": 6}))
    with pytest.raises(DataError, match=r"6 records asked for, but .* supplies 5 \(6 read, 1 rejected: "
                                        r"malformed_json 1\)"):
        build_splits(cfg, seed=0)


def test_a_generated_source_reads_on_past_what_another_split_holds():
    cfg = from_dict(SourceConfig, rg(["gsm_symbolic"], 6, 7), "s")
    first = read_source("pool", cfg, max_chars=10_000, strict=True, n=9)
    held = {r.id: "eval" for r in first.records[:3]}
    data = read_source("pool", cfg, max_chars=10_000, strict=True, held=held)
    assert [r.id for r in data.records] == [r.id for r in first.records[3:]]  # items 4..9: the same whatever the size
    assert [(r.kind, r.line) for r in data.rejects] == [("in_other_split", 1), ("in_other_split", 2),
                                                       ("in_other_split", 3)]
    assert "also in split 'eval'" in data.rejects[0].reason and data.n_read == 9


def test_a_mixed_pool_without_an_on_task_part_is_refused():
    cfg = data_cfg(splits=splits(pool=rg(["gsm_symbolic"], 4, 2)),
                   mix={"on_task_share": 0.1, "distractors": rg(["spell_backward"], 1, 9)})
    with pytest.raises(ConfigError, match=r"data.mix.on_task_share = 0.1 is not allowed with data.splits.pool.n = 4; "
                                          r"expected a share that leaves the mixed pool an on-task part"):
        build_splits(cfg, seed=0)


def test_a_pool_without_the_target_label_is_refused():
    with pytest.raises(DataError, match=r"no record of the pool \(jsonl:.*train.jsonl\) carries the target task label "
                                        r"data.target_task = 'gsm_8k' \(its labels: gsm8k \(50\)\)"):
        build_splits(one_file_cfg(10, 50, target="gsm_8k"), seed=0)


# --- every file read whole or refused with a reason ---------------------------------------

def read_file(path: Path, **kw):
    return read_source("pool", SourceConfig(kind="jsonl", path=str(path), **kw), max_chars=200, strict=False)


def test_a_byte_order_mark_at_the_start_is_not_a_record_defect(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + write_lines(tmp_path / "plain.jsonl", GOOD[:2]).read_bytes())
    data = read_file(path)
    assert [r.instruction for r in data.records] == ["Task 0", "Task 1"] and not data.rejects


def test_a_gzip_file_is_read_like_the_plain_one(tmp_path):
    plain, expected = mixed_file(tmp_path)
    packed = tmp_path / "pool.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read_file(plain), read_file(packed)
    assert [(r.id, r.task) for r in b.records] == [(r.id, r.task) for r in a.records] and len(a.records) == 5
    assert {r.line: r.kind for r in b.rejects} == expected


@pytest.mark.parametrize("name, content, message", [
    ("cut.jsonl.gz", gzip.compress(b'{"instruction": "a", "output": "b"}\n' * 50)[:-12], "is not a readable gzip file"),
    ("plain.jsonl.gz", b'{"instruction": "a", "output": "b"}\n', "is named .gz but is not gzip-compressed"),
    ("pool.jsonl.xz", lzma.compress(b'{"instruction": "a", "output": "b"}\n'), "is xz-compressed; only UTF-8 JSONL"),
    ("pool.jsonl.bz2", bz2.compress(b'{"instruction": "a", "output": "b"}\n'), "is bzip2-compressed"),
    ("utf16.jsonl", '{"instruction": "a", "output": "b"}\n'.encode("utf-16"), "is UTF-16 (little-endian)"),
])
def test_a_file_that_cannot_be_read_whole_is_refused(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^data file {re.escape(str(path))} {re.escape(message)}"):
        read_file(path)


def test_a_directory_or_an_unreadable_file_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"data file .* is a directory, not a JSONL file"):
        read_file(tmp_path)
    path = write_lines(tmp_path / "locked.jsonl", GOOD[:1])

    def denied(*args, **kwargs):  # chmod 000 does not stop root, who runs CI
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "open", denied, raising=False)
    with pytest.raises(DataError, match=r"^data file .*locked.jsonl cannot be read \(Permission denied\); "
                                        r"check its permissions$"):
        read_file(path)


def test_an_hf_dataset_that_cannot_be_loaded_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"^hf dataset .*missing cannot be loaded \(.*\); check data.splits"):
        read_source("eval", SourceConfig(kind="hf", path=str(tmp_path / "missing")), max_chars=100, strict=False)


def test_duplicate_keys_in_one_object_are_a_reject(tmp_path):
    path = write_lines(tmp_path / "keys.jsonl", [
        b'{"instruction": "first", "instruction": "second", "output": "x"}',
        b'{"instruction": "nested", "output": "x", "meta": {"a": 1, "a": 2}}',
        b'{"instruction": "fine", "output": "x"}',
    ])
    data = read_file(path)
    assert [r.instruction for r in data.records] == ["fine"]
    assert [(r.line, r.kind) for r in data.rejects] == [(1, "duplicate_key"), (2, "duplicate_key")]
    assert "key 'instruction' appears twice" in data.rejects[0].reason


def test_a_gsm8k_answer_whose_final_line_holds_no_number_is_a_reject(tmp_path):
    answers = ["so 40 + 2\n#### forty-two", "it is 42\n####", "#### ?\nthe answer is 42",
               "#### 42", "#### $1,000", "#### -3.5"]
    path = write_lines(tmp_path / "g.jsonl", [{"question": f"Q{i}?", "answer": a} for i, a in enumerate(answers)])
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(path), format="gsm8k"), max_chars=100, strict=False)
    assert [r.output for r in data.records] == answers[3:]
    assert [(r.line, r.kind) for r in data.rejects] == [(1, "no_final_number"), (2, "no_final_number"),
                                                       (3, "no_final_number")]
    assert "'#### forty-two' holds no number the evaluator can read" in data.rejects[0].reason
    # the criterion is the evaluator's own reading of the final-answer line
    assert [normalise_number(a.split("####", 1)[1].split("\n", 1)[0]) for a in answers[:3]] == [None] * 3
    assert all(extract_answer(r.output) is not None for r in data.records)


def reject_kinds_in_the_code() -> set[str]:
    """Every literal kind the readers reject with (igds/core/data: SFT records; igds/audit/pairs.py: preference
    pairs): Invalid(kind, ...), _reject(.., .., kind, ...), Reject(.., kind, ...)."""
    position = {"Invalid": 0, "_reject": 2, "Reject": 3}
    kinds = set()
    for path in [*(ROOT / "igds" / "core" / "data").glob("*.py"), ROOT / "igds" / "audit" / "pairs.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in position:
                arg = node.args[position[node.func.id]] if len(node.args) > position[node.func.id] else None
                if isinstance(arg, ast.Constant):
                    kinds.add(arg.value)
    return kinds


def test_every_reject_kind_is_defined_once_with_its_fix():
    assert reject_kinds_in_the_code() == set(ALL_REJECT_KINDS)  # SFT records' kinds and preference pairs'
    assert all(fix for fix in ALL_REJECT_KINDS.values()) and not set(REJECT_KINDS) & set(PAIR_REJECT_KINDS)
    with pytest.raises(ValueError, match="not one of REJECT_KINDS"):
        Reject("pool", "f", 1, "non_utf8", "a kind nobody counts")


def test_a_within_task_pool_is_the_target_task_only_with_its_share_degraded_and_reported():
    from igds.core.data.degrade import degradation
    from igds.core.selection_metrics import degraded_kept

    cfg = data_cfg(pools=["mixed", "within"], mix={"on_task_share": 0.5, "distractors": rg(["spell_backward"], 1, 9)},
                   degrade={"share": 0.25, "kinds": ["wrong_answer", "dropped_step"], "seed": 7})
    prepared = build_splits(cfg, seed=0)
    within, mixed = prepared.splits["pools/within"], prepared.splits["pools/mixed"]
    kinds = [degradation(r) for r in within]
    assert len(within) == 40 and {r.task for r in within} == {"gsm_symbolic"}
    assert sum(k is not None for k in kinds) == 10  # round(0.25 x 40)
    assert all(degradation(r) is None for r in mixed)  # the damage is the within-task pool's alone
    assert prepared.report["splits"]["pools/within"]["degraded"] == {"dropped_step": 5, "wrong_answer": 5}
    assert "25% of its gsm_symbolic examples degraded" in prepared.report["splits"]["pools/within"]["source"]
    assert "degraded" not in prepared.report["splits"]["pools/mixed"]
    intact = build_splits(data_cfg(pools=["within"]), seed=0).splits["pools/within"]
    assert sum(a.id != b.id for a, b in zip(within, intact)) == 10  # the rest are the same records
    # the pools are alternatives drawn from one source: the mixed pool's on-task part is the within pool's head
    assert {r.id for r in mixed if r.task == "gsm_symbolic"} == {r.id for r in intact[:20]}
    bad = [r.id for r, k in zip(within, kinds) if k is not None]
    kept = degraded_kept(within, bad[:2] + [r.id for r, k in zip(within, kinds) if k is None][:2])
    assert kept["degraded_kept"] == 0.2 and kept["degraded_share_selected"] == 0.5
    assert kept["degraded_share_pool"] == 0.25
    assert degraded_kept(intact, bad) == {}


def test_pools_are_checked_the_within_task_pool_is_the_target_task_only():
    with pytest.raises(ConfigError, match=r"data.pools = \['mixed', 'mixed'\] is not allowed"):
        data_cfg(pools=["mixed", "mixed"])
    with pytest.raises(ConfigError, match=r"data.pools = \['other'\] is not allowed"):
        data_cfg(pools=["other"])
    with pytest.raises(ConfigError, match="data.degrade = 'set' is not allowed; expected null unless data.pools"):
        data_cfg(degrade={"share": 0.5})
    cfg = data_cfg(pools=["within"], splits=splits(pool=rg(["gsm_symbolic", "chain_sum"], 20, 2)))
    with pytest.raises(ConfigError, match=r"holds tasks \['chain_sum'\] besides data.target_task"):
        build_splits(cfg, seed=0)


def test_a_degradation_the_tasks_solutions_cannot_take_is_a_config_error():
    cfg = data_cfg(splits=splits(pool=rg(["chain_sum"], 20, 2)), target_task="chain_sum", pools=["within"],
                   degrade={"share": 0.5, "kinds": ["truncated"]})
    with pytest.raises(ConfigError, match=r"data.degrade.kinds = \['truncated'\].*use \[wrong_answer\]"):
        build_splits(cfg, seed=0)
    with pytest.raises(ConfigError, match="data.degrade.share"):
        data_cfg(pools=["within"], degrade={"share": 1.0})


def test_reasoning_gym_options_set_the_difficulty_and_are_named_in_the_source():
    easy = from_dict(SourceConfig, {**rg(["chain_sum"], 20, 1), "options": {"max_digits": 1, "max_terms": 2}}, "s")
    data = read_source("pool", easy, max_chars=10_000, strict=False)  # few distinct sums: duplicates rejected
    for r in data.records:  # 'a + b =' with one-digit numbers
        assert len(r.instruction.rstrip(" =").split(":")[-1].split()) == 3, r.instruction
        assert all(len(t) == 1 for t in r.instruction.rstrip(" =").split(":")[-1].split() if t.isdigit())
    assert data.records[0].source == "reasoning_gym:chain_sum[seed=1, max_digits=1, max_terms=2]"
    assert easy.describe() == "reasoning_gym:chain_sum[seed=1, max_digits=1, max_terms=2]"
    with pytest.raises(DataError, match="refuses options"):
        read_source("pool", from_dict(SourceConfig, {**rg(["chain_sum"], 2, 1), "options": {"digits": 1}}, "s"),
                    max_chars=10_000, strict=True)
    for bad in ({"size": 5}, {"seed": 3}):
        with pytest.raises(ConfigError, match="splits.pool.options"):
            data_cfg(splits=splits(pool={**rg(["chain_sum"], 20, 2), "options": bad}))


@pytest.mark.parametrize("split, source, message", [
    ("val", rg(["chain_sum"], 5, 7), r"^split 'val' \(.*\) holds 5 of 5 records of other tasks than data.target_task = "
                                     r"'gsm_symbolic': chain_sum \(5\); val is the target task's"),
    ("eval", rg(["gsm_symbolic", "chain_sum"], 10, 3), r"^split 'eval' .* holds 5 of 10 records of other tasks"),
    ("probe", rg(["gsm_symbolic", "chain_sum"], 6, 8), r"^split 'probe' .* holds 3 records of data.target_task = "
                                                       r"'gsm_symbolic'; probe holds other tasks"),
])
def test_a_split_without_its_roles_label_stops_prepare(split, source, message):
    """The issue's cases: a val of another task (a profile that changed the target task kept it),
    an eval half of another task, a probe that holds the target task: before, each passed with
    an on-task share and no word."""
    with pytest.raises(DataError, match=message):
        build_splits(from_dict(DataConfig, {"target_task": "gsm_symbolic", "splits": splits(**{split: source})}, "data"),
                     seed=0)


def test_a_file_labelled_by_its_stem_is_not_silently_off_task(tmp_path):
    """A prior file without `task:` takes its stem as its label: refused, naming the fix."""
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(30)]
    path = write_lines(tmp_path / "train.jsonl", rows)
    cfg = from_dict(DataConfig, {"target_task": "gsm_symbolic", "splits": splits(
        prior={"kind": "jsonl", "path": str(path), "n": 5})}, "data")
    with pytest.raises(DataError, match=r"split 'prior' .* train \(5\); .*a file's records take its `task:`, else the "
                                         r"file's stem"):
        build_splits(cfg, seed=0)
