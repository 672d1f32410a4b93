"""Cross-section checks before any stage works: each bad setting is one line naming the
parameter, its value and the allowed range; a stage exits 2 with no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from igds.core.config import ConfigError
from igds.params import load_params, read_params
from igds.core.registry import needing
from igds.method.resonance import IgdsParams, chosen_features
from igds.validate import validate
from tests.conftest import ROOT, build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A 4-layer, d_model 32 model saved like a local checkpoint (only its config is read)."""
    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model().save_pretrained(path)
    build_char_tokenizer().save_pretrained(path)
    return path


def params_with(tmp_path, tiny_dir, edit) -> object:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["name"] = str(tiny_dir)
    raw["sae"]["layer"] = 2
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def set_key(dotted: str, value):
    def edit(raw):
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def test_the_default_params_pass(tmp_path, tiny_dir):
    validate(params_with(tmp_path, tiny_dir, lambda raw: None))


@pytest.mark.parametrize("key, value, message", [
    ("select.methods", ["igds", "bogus"], r"select.methods\[1\] = 'bogus' is not allowed; expected one of .*igds.*"
     r"\(it is not under methods: \(a variant is declared there"),
    ("select.methods", ["igds", "full"], r"select.methods\[1\] = 'full' is not allowed; .*keeps the whole pool"),
    ("methods.bogus", {}, r"methods.bogus: unknown method 'bogus'; available: .*igds"),
    ("methods.zip", {"k1": 0}, r"methods.zip.k1 = 0 is not allowed"),
    ("sae.layer", 4, r"sae.layer = 4 is not allowed; expected a decoder layer of .*: 0..3"),
    ("sae.layer", -1, r"sae.layer = -1 is not allowed; expected a layer index >= 0"),
    ("methods.kcenter", {"layer": 7}, r"methods.kcenter.layer = 7 is not allowed; expected .*-4..3"),
    ("methods.igds", {"k": 17}, r"methods.igds.k = 17 is not allowed; expected at most identify.top_n = 16"),
    ("select.ratios", [0.5, 1.5], r"select.ratios\[1\] = 1.5 is not allowed; expected a share in \(0, 1\)"),
    ("select.ratios", [0.0], r"select.ratios\[0\] = 0.0 is not allowed"),
    ("data.splits.pool", {"kind": "jsonl", "path": "absent/pool.jsonl"},
     r"data.splits.pool.path = 'absent/pool.jsonl' is not allowed; expected an existing JSONL file"),
    ("data.splits.eval", {"kind": "hf", "path": "./absent-dataset"},
     r"data.splits.eval.path = './absent-dataset' is not allowed; expected an existing local dataset"),
])
def test_a_bad_setting_is_one_line_naming_key_value_and_range(tmp_path, tiny_dir, key, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate(params_with(tmp_path, tiny_dir, set_key(key, value)))
    assert "\n" not in str(caught.value)


def test_igds_scores_the_tokens_its_features_were_found_on(tmp_path, tiny_dir):
    """Features recalled on the whole response (its end-of-turn marker included) and scored on
    the content scope (no template tokens) tied every score in the 2026-12-03 default run."""
    def edit(raw):
        raw["identify"]["scope"] = "response"
        raw["methods"]["igds"]["scope"] = "content"

    with pytest.raises(ConfigError, match=r"methods.igds.scope = 'content' is not allowed; expected a scope that "
                       r"includes identify.scope = 'response' .*: response, all"):
        validate(params_with(tmp_path, tiny_dir, edit))
    for found, scored in [("response", "all"), ("response_content", "content"), ("content", "content")]:
        def ok(raw, found=found, scored=scored):
            raw["identify"]["scope"], raw["methods"]["igds"]["scope"] = found, scored
        validate(params_with(tmp_path, tiny_dir, ok))


def write_sae_cfg(path, d_in, d_sae, hook="model.layers.2"):
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": d_sae, "metadata": {"hook_name": hook}}))
    return path


def test_an_sae_that_does_not_fit_the_model_is_named(tmp_path, tiny_dir):
    params = params_with(tmp_path, tiny_dir, lambda raw: None)  # width 8: d_sae 256 on d_model 32
    validate(params, sae_dir=write_sae_cfg(tmp_path / "ok", 32, 256))
    with pytest.raises(ConfigError, match=r"d_in = 64 but .* has d_model = 32"):
        validate(params, sae_dir=write_sae_cfg(tmp_path / "wide", 64, 512))
    with pytest.raises(ConfigError, match=r"d_sae = 128 but sae.width = 8 asks for 256"):
        validate(params, sae_dir=write_sae_cfg(tmp_path / "narrow", 32, 128))
    with pytest.raises(ConfigError, match=r"reads model.layers.3 but sae.layer = 2"):
        validate(params, sae_dir=write_sae_cfg(tmp_path / "other-layer", 32, 256, "model.layers.3"))


def test_k_larger_than_the_kept_features(tmp_path, tiny_dir):
    params = params_with(tmp_path, tiny_dir, set_key("methods.igds", {"k": 3}))
    features = tmp_path / "features"
    features.mkdir()
    (features / "features.json").write_text(json.dumps({"ranking": [5, 9]}))
    with pytest.raises(ConfigError, match=r"methods.igds.k = 3 is not allowed; expected at most the 2 feature"):
        validate(params, features_dir=features)
    (features / "features.json").write_text(json.dumps({"ranking": [5, 9, 11]}))
    validate(params, features_dir=features)


def test_a_variant_of_a_selector_is_a_method_of_its_own(tmp_path, tiny_dir):
    """`igds_k3: {method: igds, k: 3}`: one selector's variants in one run (configs/cpu-bench's
    k and no-filter ablations), each named, validated and built with its own params."""
    def edit(raw):
        raw["methods"]["igds_k3"] = {"method": "igds", "k": 3}
        raw["methods"]["igds_recall"] = {"method": "igds", "features": "recall"}
        raw["select"]["methods"] = ["igds", "igds_k3", "igds_recall", "random"]
        raw["finetune"]["methods"] = ["igds_k3", "random"]

    params = params_with(tmp_path, tiny_dir, edit)
    assert params.methods.kind("igds_k3") == params.methods.kind("igds_recall") == "igds"
    assert params.methods.kind("random") == "random"
    k3 = params.methods.build("igds_k3")
    assert type(k3).__name__ == "IgdsSelector" and (k3.params.k, k3.params.features) == (3, "causal")
    assert params.methods.build("igds_recall").params.features == "recall"
    assert needing(params.methods, "features") == ["igds", "igds_k3", "igds_recall"]
    features = tmp_path / "features"
    features.mkdir()
    (features / "features.json").write_text(json.dumps({"ranking": [5, 9], "features": [{"feature": f} for f in
                                                                                        (9, 2, 5, 7)]}))
    with pytest.raises(ConfigError, match=r"methods.igds_k3.k = 3 is not allowed; expected at most the 2 feature"):
        validate(params, features_dir=features)
    with pytest.raises(ConfigError, match=r"^params.yaml: methods.igds_x.method: unknown method 'igdz'"):
        params_with(tmp_path, tiny_dir, set_key("methods.igds_x", {"method": "igdz"}))
    with pytest.raises(ConfigError, match=r"methods.igds_x.features = 'all' is not allowed; expected one of"):
        params_with(tmp_path, tiny_dir, set_key("methods.igds_x", {"method": "igds", "features": "all"}))


def test_the_no_filter_ablation_takes_features_in_recall_order():
    """features.json's `features` are frequency recall's contrast order; `ranking` is the causal
    filter's; a recall-order k may reach features the filter dropped."""
    doc = {"ranking": [5, 9], "features": [{"feature": f} for f in (9, 2, 5, 7)]}
    assert chosen_features(doc, 1) == [5] and chosen_features(doc, 2, "causal") == [5, 9]
    assert chosen_features(doc, 1, "recall") == [9] and chosen_features(doc, 3, "recall") == [9, 2, 5]
    IgdsParams(k=4, features="recall").check_features(doc, "features.json")
    with pytest.raises(ConfigError, match=r"k = 3 is not allowed; expected at most the 2 feature\(s\) identification kept"):
        try:
            IgdsParams(k=3).check_features(doc, "features.json")
        except Exception as e:  # the hook raises the key relative to the method; validate makes it absolute
            raise ConfigError(str(e)) from None


def test_a_stage_stops_with_one_line_and_exit_2_before_any_work(tmp_path):
    raw = read_params(ROOT / "configs/ci.yaml")
    raw["select"]["methods"] = ["igds", "lesss"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "pipelines.subset", "--params", str(tmp_path / "params.yaml"),
                           "--method", "igds", "--ratio", "0.5", "--seed", "0", "--data", str(tmp_path / "data"),
                           "--scores", str(tmp_path / "scores"), "--out", str(tmp_path / "subsets"),
                           "--metrics", str(tmp_path / "metrics")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["subset: error: params.yaml: select.methods[1] = 'lesss' is not allowed; expected one of "
                     "ifd, igds, kcenter, less, lexical, loss, random, rds, zip (it is not under methods: (a variant is "
                     "declared there: `igds_k3: {method: igds, k: 3}`); did you mean 'less'?)"], proc.stderr
    assert not (tmp_path / "subsets").exists()
