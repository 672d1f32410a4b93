"""Atomic writes: an interrupted write leaves the old artifact (or none), never a half."""

from __future__ import annotations

import pytest

from igds.core.artifacts import atomic_dir, atomic_file, read_json, write_json, write_jsonl


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "data"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (out / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-way")
    assert (out / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp folder left


def test_atomic_file_and_json_roundtrip(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    with pytest.raises(ValueError), atomic_file(path) as f:
        f.write("{broken")
        raise ValueError
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert write_jsonl(tmp_path / "r.jsonl", [{"z": 1, "a": 2}]) == 1
    assert (tmp_path / "r.jsonl").read_text() == '{"a": 2, "z": 1}\n'


def test_stale_temp_folders_are_cleaned_on_rerun(tmp_path):
    stale = tmp_path / ".data.tmp-abc"
    stale.mkdir()
    with atomic_dir(tmp_path / "data") as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists()
