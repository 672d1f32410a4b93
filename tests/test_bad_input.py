"""The bad-input sweep through the prepare stage (`python -m pipelines.prepare`), no model.

One pool file (plain, and gzipped) starts with a UTF-8 byte-order mark and holds good
records mixed with every defect igds/core/data rejects (and blank lines, which are skipped);
the stage must keep every good record, quarantine every bad one in data/rejects.jsonl
with its file, line, kind and reason, and reconcile read = accepted + rejected in
data/report.json. A file that cannot be read whole stops the stage with one line. tests/test_data.py covers read_source
line by line; this covers the stage's files end to end, the variants of each defect,
cross-split and mixed-pool duplicates, and how the stage stops.
"""

from __future__ import annotations

import gzip
import json
import re
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from igds.core.config import DataConfig, SourceConfig, from_dict
from igds.core.data import REJECT_KINDS, build_splits, read_source, record_id
from tests.conftest import GSM8K_SAMPLE, ROOT

MAX_CHARS = 300
SPLIT_FILES = ("prior", "eval", "general")


def gsm(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}


PRIOR = [gsm(f"Prior {i}: what is {i} + 1?", f"{i} + 1 = {i + 1}\n#### {i + 1}") for i in range(3)]
EVAL = [gsm(f"Eval {i}: what is {i} + 2?", f"{i} + 2 = {i + 2}\n#### {i + 2}") for i in range(3)]
GENERAL = [{"instruction": f"Sort the words: b{i} a{i}", "input": "", "output": f"a{i} b{i}"} for i in range(3)]

# The pool: (line bytes, what it is). "good": (instruction, input, output) as normalised;
# "bad": (kind, a phrase its reason must hold); "blank": skipped, not a record.
AT_LIMIT = "x" * (MAX_CHARS - len("ok"))  # instruction + output == max_chars: accepted
POOL = [
    (gsm("Pool 0: 2 + 2?", "2 + 2 = <<2+2=4>>4\n#### 4"), ("good", ("Pool 0: 2 + 2?", "", "2 + 2 = 4\n#### 4"))),
    ({"instruction": "Pool 1", "input": "context", "output": "out 1"}, ("good", ("Pool 1", "context", "out 1"))),
    (b"", ("blank", None)),
    ({"instruction": "Pool 2", "input": None, "output": "out 2", "extra": [1]}, ("good", ("Pool 2", "", "out 2"))),
    ({"instruction": "Caf\u00e9 \u2615 3", "output": "\u00fc\u00df"}, ("good", ("Caf\u00e9 \u2615 3", "", "\u00fc\u00df"))),
    ({"instruction": AT_LIMIT, "output": "ok"}, ("good", (AT_LIMIT, "", "ok"))),
    # malformed JSON
    (b'{"question": "cut off", "answer": ', ("bad", ("malformed_json", "malformed JSON"))),
    (b'{"instruction": "a", "output": "b"} {"instruction": "c"}', ("bad", ("malformed_json", "Extra data"))),
    (b"{'instruction': 'single quotes', 'output': 'x'}", ("bad", ("malformed_json", "malformed JSON"))),
    (b'{"instruction": "a raw \x00 NUL", "output": "x"}', ("bad", ("malformed_json", "raw control character U+0000"))),
    (b'\xef\xbb\xbf{"instruction": "joined", "output": "x"}', ("bad", ("malformed_json", "byte-order mark (U+FEFF) starts this line"))),
    (b"   \t", ("blank", None)),
    # not UTF-8: a Latin-1 byte, a truncated multi-byte sequence
    (b'{"instruction": "caf\xe9", "output": "latin-1"}', ("bad", ("not_utf8", "not valid UTF-8 (byte 20)"))),
    (b'{"instruction": "euro \xe2\x82", "output": "x"}', ("bad", ("not_utf8", "not valid UTF-8"))),
    (b'{"instruction": "half a pair \\ud800", "output": "x"}', ("bad", ("not_utf8", "half a UTF-16 surrogate pair"))),
    # a key twice in one object (json.loads would keep the last silently), also when nested
    (b'{"instruction": "twice", "output": "a", "output": "b"}', ("bad", ("duplicate_key", "key 'output' appears twice"))),
    (b'{"instruction": "meta", "output": "x", "meta": {"k": 1, "k": 2}}', ("bad", ("duplicate_key", "key 'k'"))),
    # missing / empty / mistyped fields (GSM8K and instruction/output shapes)
    ({"question": "No answer?"}, ("bad", ("missing_field", "'answer'"))),
    ({"instruction": "No output"}, ("bad", ("missing_field", "'output'"))),
    (gsm("Blank answer?", "  \n "), ("bad", ("empty_field", "'answer' is empty"))),
    ({"instruction": "", "output": "x"}, ("bad", ("empty_field", "'instruction' is empty"))),
    # empty once control and invisible characters (escaped in JSON) are removed
    ({"instruction": "\u200b\u200d\ufeff", "output": "x"},
     ("bad", ("empty_field", "'instruction' is empty once control and invisible characters are removed (U+200B"))),
    (b'{"instruction": "Control", "output": "\\u0000\\u0007 "}', ("bad", ("empty_field", "'output' is empty once"))),
    # decomposed Unicode is stored composed (NFC)
    ({"instruction": "Cafe\u0301 4", "output": "o"}, ("good", ("Caf\u00e9 4", "", "o"))),
    (gsm("Numeric answer?", 42), ("bad", ("wrong_type", "'answer' must be a string, found int"))),
    ({"instruction": ["a list"], "output": "x"}, ("bad", ("wrong_type", "'instruction' must be a string, found list"))),
    ({"instruction": "Null output", "output": None}, ("bad", ("wrong_type", "'output' must be a string, found NoneType"))),
    ({"instruction": "Int input", "input": 3, "output": "x"}, ("bad", ("wrong_type", "'input' must be a string, found int"))),
    (b"\r", ("blank", None)),
    # duplicates: the same line again, and the same content in the other shape (GSM8K
    # question/answer = instruction/output after the calculator annotation is stripped)
    ({"instruction": "Pool 1", "input": "context", "output": "out 1"}, ("bad", ("duplicate_id", ":2"))),
    ({"output": "2 + 2 = 4\n#### 4", "input": "", "instruction": "Pool 0: 2 + 2?"}, ("bad", ("duplicate_id", ":1"))),
    # over-long (instruction + input + output > data.max_chars), both shapes
    ({"instruction": AT_LIMIT + "y", "output": "ok"}, ("bad", ("over_long", f"{MAX_CHARS + 1} characters > data.max_chars = {MAX_CHARS}"))),
    (gsm("Long?", "step " * 80 + "\n#### 1"), ("bad", ("over_long", "data.max_chars"))),
    # GSM8K answer without '#### <final answer>'
    (gsm("No final line?", "The answer is 5."), ("bad", ("no_final_answer", "'#### <final answer>'"))),
    # ... or with one that holds no number the evaluator can read
    (gsm("Words?", "2 + 2 = 4\n#### four"), ("bad", ("no_final_number", "'#### four' holds no number"))),
    (gsm("Empty final?", "2 + 2 = 4\n####"), ("bad", ("no_final_number", "the evaluator can read"))),
    # ... or with two: which is the reference?
    (gsm("Two finals?", "2 + 2 = 4\n#### 4\n#### 5"), ("bad", ("ambiguous_final_answer", "2 '####' final-answer markers"))),
    # not an object, unknown shape
    (b'["a", "list"]', ("bad", ("not_object", "found list"))),
    (b'"just a string"', ("bad", ("not_object", "found str"))),
    (b"null", ("bad", ("not_object", "found NoneType"))),
    ({"prompt": "p", "completion": "c"}, ("bad", ("unknown_shape", "['completion', 'prompt']"))),
    ({}, ("bad", ("unknown_shape", "unknown record shape"))),
    # in another split: eval and prior keep their copy, the pool's is rejected
    (EVAL[1], ("bad", ("in_other_split", "also in split 'eval'"))),
    (PRIOR[2], ("bad", ("in_other_split", "also in split 'prior'"))),
    # the last line, without a trailing newline
    ({"instruction": "Pool last", "output": "out last"}, ("good", ("Pool last", "", "out last"))),
]


def as_bytes(content) -> bytes:
    return content if isinstance(content, bytes) else json.dumps(content, ensure_ascii=False).encode("utf-8")


def write_jsonl(path: Path, rows, final_newline: bool = True, bom: bool = False) -> Path:
    data = b"\xef\xbb\xbf" * bom + b"\n".join(as_bytes(r) for r in rows) + b"\n" * final_newline
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def write_params(tmp_path: Path, pool: Path, **data) -> Path:
    splits = {name: {"kind": "jsonl", "path": str(write_jsonl(tmp_path / f"{name}.jsonl", rows)),
                     **({"task": "pool"} if name != "general" else {})}  # prior and eval: the target task
              for name, rows in (("prior", PRIOR), ("eval", EVAL), ("general", GENERAL))}
    splits["pool"] = {"kind": "jsonl", "path": str(pool)}
    params = {"seed": 0, "data": {"target_task": "pool", "strict": False, "max_chars": MAX_CHARS,
                                  "splits": splits, **data}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


def prepare(params: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.prepare", "--params", str(params), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["pool.jsonl", "pool.jsonl.gz"])
def test_every_defect_is_quarantined_with_file_line_and_reason(tmp_path, name):
    pool = write_jsonl(tmp_path / name, [c for c, _ in POOL], final_newline=False, bom=True)
    out = tmp_path / "data"
    proc = prepare(write_params(tmp_path, pool), out)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = {n: what for n, (_, what) in enumerate(POOL, start=1)}
    good = [v for _, (k, v) in lines.items() if k == "good"]
    bad = {n: v for n, (k, v) in lines.items() if k == "bad"}
    blank = [n for n, (k, _) in lines.items() if k == "blank"]

    # every good record arrives, in file order, normalised
    rows = read_rows(out / "pools" / "mixed.jsonl")
    assert [(r["instruction"], r["input"], r["output"]) for r in rows] == good
    assert [r["id"] for r in rows] == [record_id(*g) for g in good]
    assert all(r["task"] == "pool" and r["source"] == f"jsonl:{pool}" for r in rows)

    # every bad one is quarantined with its file, line, kind and reason; blank lines are not records
    rejects = read_rows(out / "rejects.jsonl")
    assert {r["split"] for r in rejects} == {"pool"}
    assert {r["line"]: r["kind"] for r in rejects} == {n: kind for n, (kind, _) in bad.items()}
    assert not set(blank) & {r["line"] for r in rejects}
    for r in rejects:
        _, phrase = bad[r["line"]]
        assert r["location"] == str(pool), r
        assert phrase in r["reason"], (r["line"], r["reason"])
        assert r["raw"], r
    for r in rejects:  # a duplicate names the first copy's file and line
        if r["kind"] == "duplicate_id":
            assert f"same content as {pool}{bad[r['line']][1]}" in r["reason"], r["reason"]
    latin1 = next(r for r in rejects if r["kind"] == "not_utf8")
    assert "\ufffd" in latin1["raw"]  # the raw bytes are kept, readable

    # read = accepted + rejected, per split and in total; blank lines are not read
    report = json.loads((out / "report.json").read_text())
    s = report["splits"]["pools/mixed"]
    assert s["read"] == len(good) + len(bad) == len(POOL) - len(blank)
    assert s["accepted"] == len(good) and s["rejected"] == len(bad)
    assert s["rejected_by_kind"] == dict(Counter(kind for kind, _ in bad.values()))
    for name in SPLIT_FILES:
        assert report["splits"][name]["accepted"] == report["splits"][name]["read"] == 3, name
        assert len(read_rows(out / f"{name}.jsonl")) == 3, name
    for split in report["splits"].values():
        assert split["read"] == split["accepted"] + split["rejected"]
    assert report["read"] == report["accepted"] + report["rejected"]
    assert report["rejected"] == len(rejects) == len(bad)
    # the kinds this sweep covers: every kind igds/core/data rejects a record with
    assert set(s["rejected_by_kind"]) == set(REJECT_KINDS)


def test_strict_mode_stops_the_stage_at_the_first_bad_line(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [c for c, _ in POOL])
    out = tmp_path / "data"
    proc = prepare(write_params(tmp_path, pool, strict=True), out)
    first_bad = next(n for n, (_, (k, _)) in enumerate(POOL, start=1) if k == "bad")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"prepare: error: {pool}:{first_bad}: malformed JSON"), last
    assert "data.strict: false" in last
    assert not out.exists()  # nothing half-written


def test_a_pool_empty_after_rejection_stops_with_one_clear_line(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [b"not json", {"instruction": "", "output": "x"}, b""])
    out = tmp_path / "data"
    proc = prepare(write_params(tmp_path, pool), out)
    assert not out.exists()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prepare: error: ") and "empty" in last and "2 rejected" in last, last
    assert str(pool) in last, last  # names the file whose records were all rejected


def test_a_lone_surrogate_escape_is_quarantined_not_fatal(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", [
        b'{"instruction": "Pool 0", "output": "x"}',
        b'{"instruction": "half a pair \\ud800", "output": "x"}',
        b'{"instruction": "Pool 2", "output": "x"}',
    ])
    data = read_source("pool", SourceConfig(kind="jsonl", path=str(path)), max_chars=MAX_CHARS, strict=False)
    assert [r.instruction for r in data.records] == ["Pool 0", "Pool 2"]
    assert [(r.location, r.line, r.kind) for r in data.rejects] == [(str(path), 2, "not_utf8")]  # one kind per defect


# --- the mixed pool: a distractor with the same content as an on-task record ------------

ON_TASK = [gsm(f"On {i}: {i} x 2?", f"{i} x 2 = {2 * i}\n#### {2 * i}") for i in range(4)]
# the 4th distractor is ON_TASK[2] in the instruction/output shape: the same id; the 5th makes up for it
DISTRACTORS = [{"instruction": f"Spell off{i} backwards", "output": f"{i}ffo"} for i in range(3)] + [
    {"instruction": ON_TASK[2]["question"], "input": "", "output": ON_TASK[2]["answer"]},
    {"instruction": "Spell off3 backwards", "output": "3ffo"}]


def mixed_cfg(tmp_path: Path) -> DataConfig:
    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in
             (("prior", PRIOR), ("eval", EVAL), ("general", GENERAL), ("on", ON_TASK), ("off", DISTRACTORS))}
    return from_dict(DataConfig, {
        "target_task": "on",
        "splits": {**{n: {"kind": "jsonl", "path": str(files[n]), **({"task": "on"} if n != "general" else {})}
                      for n in SPLIT_FILES},
                   "pool": {"kind": "jsonl", "path": str(files["on"]), "n": 8, "task": "on"}},
        "mix": {"on_task_share": 0.5, "distractors": {"kind": "jsonl", "path": str(files["off"]), "task": "off"}},
    }, "data")


def test_a_duplicate_across_the_mixed_pools_halves_is_kept_once_and_made_up_for(tmp_path):
    prepared = build_splits(mixed_cfg(tmp_path), seed=0)
    pool = prepared.splits["pools/mixed"]
    dup_id = record_id(ON_TASK[2]["question"], "", ON_TASK[2]["answer"])
    assert [r.id for r in pool].count(dup_id) == 1 and len(pool) == 8  # the 5th distractor takes its place
    assert Counter(r.task for r in pool) == {"on": 4, "off": 4}
    [reject] = [r for r in prepared.rejects if r.split == "pool"]
    assert reject.kind == "duplicate_id" and "within split 'pool'" in reject.reason
    s = prepared.report["splits"]["pools/mixed"]
    assert s["read"] == 9 == s["accepted"] + s["rejected"] and s["rejected_by_kind"] == {"duplicate_id": 1}


def test_a_mixed_pool_duplicate_reject_names_the_dropped_copy(tmp_path):
    cfg = mixed_cfg(tmp_path)
    prepared = build_splits(cfg, seed=0)
    dup_id = record_id(ON_TASK[2]["question"], "", ON_TASK[2]["answer"])
    [kept] = [r for r in prepared.splits["pools/mixed"] if r.id == dup_id]
    [reject] = [r for r in prepared.rejects if r.split == "pool"]
    assert kept.task == "on"  # the on-task copy is read first and stays
    assert (reject.location, reject.line) == (cfg.mix.distractors.path, 4)
    assert f"the on-task record at {cfg.splits.pool.path}:3" in reject.reason


# --- the stage stops with one line: a file it cannot read whole, a composition it cannot meet ---

def one_line_error(proc: subprocess.CompletedProcess, out: Path) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not out.exists()  # nothing half-written
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prepare: error: "), last
    return last.removeprefix("prepare: error: ")


@pytest.mark.parametrize("make, message", [
    (lambda p: p, None),  # igds/validate.py refuses a missing path or a directory before the stage reads
    (lambda p: p.mkdir() or p, None),
    (lambda p: p.write_bytes(gzip.compress(as_bytes(PRIOR[0]) * 40)[:-20]) and p, "is not a readable gzip file"),
], ids=["missing", "directory", "truncated-gzip"])
def test_a_file_that_cannot_be_read_stops_the_stage_with_one_line(tmp_path, make, message):
    pool = make(tmp_path / "pool.jsonl.gz")
    out = tmp_path / "data"
    error = one_line_error(prepare(write_params(tmp_path, pool), out), out)
    assert str(pool) in error and (message is None or error.startswith(f"data file {pool} {message}")), error


def test_a_mixed_pool_the_priors_file_cannot_fill_stops_the_stage(tmp_path):
    """The issue's case: prior 200 and a pool of 480 at on-task share 0.5 from one GSM8K train file
    (here the 300-problem sample): the on-task part would get 100 of 240 (before: 40, share 0.14, exit 0)."""
    train = {"kind": "jsonl", "path": str(GSM8K_SAMPLE / "train.jsonl"), "format": "gsm8k", "task": "gsm8k"}
    params = {"seed": 0, "data": {"target_task": "gsm8k", "splits": {
        "prior": {**train, "n": 200}, "pool": {**train, "n": 480},
        "eval": {**train, "path": str(GSM8K_SAMPLE / "test.jsonl")},
        "general": {"kind": "reasoning_gym", "tasks": ["syllogism"], "n": 10, "seed": 4}},
        "mix": {"on_task_share": 0.5, "distractors": {"kind": "reasoning_gym", "tasks": ["chain_sum"], "seed": 5}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data"
    error = one_line_error(prepare(tmp_path / "params.yaml", out), out)
    assert error.startswith("the mixed pool's on-task part (data.splits.pool.n x data.mix.on_task_share = 480 x 0.5): "
                            "240 records asked for, but jsonl:"), error
    assert "supplies 100 (300 read, 200 rejected: in_other_split 200)" in error, error


ALONE = [(content, kind, phrase) for content, (what, detail) in POOL if what == "bad"
         for kind, phrase in [detail] if kind not in ("duplicate_id", "in_other_split")]  # those need another record


@pytest.mark.parametrize("content, kind, phrase", ALONE, ids=[f"{i}-{k}" for i, (_, k, _) in enumerate(ALONE)])
def test_strict_mode_stops_at_every_kind_of_bad_record(tmp_path, content, kind, phrase):
    """Each category the lenient sweep quarantines stops a strict read at its line, naming the
    reason and the fix (the sweep covers strict: false)."""
    from igds.core.config import SourceConfig
    from igds.core.data import DataError

    path = write_jsonl(tmp_path / "one.jsonl", [PRIOR[0], content])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ")) as caught:
        read_source("pool", SourceConfig(kind="jsonl", path=str(path)), max_chars=MAX_CHARS, strict=True)
    assert phrase in str(caught.value) and REJECT_KINDS[kind] in str(caught.value)
