"""Profiles (configs/<name>.yaml) hold only the keys they change (igds.params.read_params), and run
as DVC experiments without editing the tracked params.yaml (pipelines.profile)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from igds.core.config import ConfigError
from igds.params import Params, diff, dump_params, load_params, read_params
from pipelines.profile import set_params
from tests.conftest import ROOT

PROFILES = sorted((ROOT / "configs").glob("*.yaml"))


def redundant(overrides: dict, base: dict, where: str = "") -> list[str]:
    """The dotted keys a profile sets to the value it already has in what it includes."""
    out = []
    for key, value in overrides.items():
        if key in ("include", "delete") and not where:
            continue
        if isinstance(value, dict) and value and isinstance(base.get(key), dict) and base[key]:
            out += redundant(value, base[key], f"{where}{key}.")
        elif key in base and base[key] == value:
            out.append(f"{where}{key}")
    return out


def test_every_profile_is_found():
    assert {p.stem for p in PROFILES} >= {"ci", "audit", "cpu-bench", "cpu-bench-ablation", "gpu-paper", "gsm-symbolic",
                                          "recipe-search"}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_a_profile_holds_only_its_changes_and_parses(profile):
    raw = yaml.safe_load(profile.read_text(encoding="utf-8"))
    assert "include" in raw, f"{profile.name}: a profile includes what it changes (include: ../params.yaml)"
    base = read_params(profile.parent / raw["include"])
    assert redundant(raw, base) == []
    assert isinstance(load_params(profile), Params)


def test_the_redundancy_check_finds_a_planted_copy():
    base = {"seed": 0, "sae": {"k": 32, "width": 8}, "methods": {"igds": {"k": 1}}}
    assert redundant({"include": "x", "seed": 1, "sae": {"k": 32, "width": 4}, "methods": {"igds": {"k": 1}}}, base) == \
        ["sae.k", "methods.igds.k"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_dvc_exp_run_overrides_make_the_profile(profile, tmp_path):
    """`dvc exp run -S` (DVC's own override code) on params.yaml gives the profile's whole params."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", set_params(read_params(ROOT / "params.yaml"), read_params(profile)))
    assert read_params(tmp_path / "params.yaml") == read_params(profile)


def test_a_new_profile_is_one_file_of_overrides(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text(f"include: {ROOT / 'configs' / 'ci.yaml'}\nseed: 7\nfinetune: {{seeds: [0, 1]}}\n"
                       "delete: [recipes.filtered]\n")
    whole = read_params(profile)
    ci = read_params(ROOT / "configs" / "ci.yaml")
    assert diff(ci, whole) == ({"seed": 7, "finetune": {"seeds": [0, 1]}, "recipes": {}}, [])  # its one recipe dropped
    params = load_params(profile)
    assert params.seed == 7 and params.finetune.seeds == (0, 1) and "filtered" not in params.recipes
    assert params.sae.width == load_params(ROOT / "configs" / "ci.yaml").sae.width  # the rest from ci
    assert "++seed=7" in set_params(read_params(ROOT / "params.yaml"), whole)


@pytest.mark.parametrize("text, message", [
    ("include: self.yaml\n", "includes itself"),
    ("include: ../params.yaml\ndelete: [sae.nosuch]\n", "delete: 'sae.nosuch' names no key"),
    ("seed: 1\ndelete: [sae.k]\n", "only in a profile"),
    ("include: nosuch.yaml\n", "not found"),
])
def test_a_bad_profile_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "configs" / "self.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_params(tmp_path / "configs" / "self.yaml")


def test_dump_params_round_trips_every_profile():
    for profile in PROFILES:
        whole = read_params(profile)
        assert yaml.safe_load(dump_params(whole)) == whole


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_running_a_profile_leaves_params_yaml_untouched(tmp_path):
    """--exp runs the profile as a DVC experiment in a temporary workspace: the experiment has the
    profile's value, the workspace's params.yaml keeps its bytes; --write refuses the tracked file."""
    (tmp_path / "params.yaml").write_text("seed: 0  # the default\nsae: {k: 32, width: 8}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: python -c \"import yaml; open('out.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))))\"\n"
        "    params: [seed, sae]\n    outs: [out.txt]\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "small.yaml").write_text("include: ../params.yaml\nsae: {width: 2}\n")
    _git(tmp_path, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    before = (tmp_path / "params.yaml").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    run = [sys.executable, "-m", "pipelines.profile", "configs/small.yaml"]
    # load_params validates the profile as the project's schema; this toy's keys are a subset of it
    proc = subprocess.run([*run, "--exp"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "params.yaml").read_bytes() == before and not (tmp_path / "out.txt").exists()
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=tmp_path, capture_output=True, text=True,
                                      check=True).stdout)
    exps = [e for row in shown for e in (row.get("experiments") or []) if e.get("name") == "small"]
    assert exps, shown
    params = exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["sae"] == {"k": 32, "width": 2} and params["seed"] == 0
    proc = subprocess.run([*run, "--write", "params.yaml"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "tracked params file" in proc.stderr
