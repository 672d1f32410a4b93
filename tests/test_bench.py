"""The bench (bench/): its targets and table on planted numbers, the break-even pool size,
the parts table and --parts, bench.json read back for --resume, and the throughput and
selection parts on a tiny model with a hand-built SAE."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench.parts import Bench, break_even, end_to_end, selection, throughput
from bench.report import markdown, targets
from bench.results import (
    BenchResult,
    DvcResult,
    EncodeProfile,
    EndToEndResult,
    FinetuneResult,
    IdentifySummary,
    Machine,
    MemoryResult,
    MethodTime,
    PassTime,
    Reproduces,
    RunConfig,
    SelectionResult,
    ThroughputResult,
    Timing,
    from_jsonable,
    to_jsonable,
)
import bench.run
from bench.run import DEFAULT_PARTS, PARTS, parse_args, parse_parts, partial_path
from igds.core.artifacts import read_json, write_json, write_jsonl
from igds.core.config import SaeConfig, ScoringConfig, SelectConfig, parse_methods
from igds.params import load_params
from igds.core.models.loading import LoadedModel
from igds.core.sae import load_sae, save_sae
from tests.conftest import LAYER, ROOT, build_char_tokenizer, build_tiny_model, general, other, recall_sae, task

MB = 2**20


# --- planted results ----------------------------------------------------------------------------

def planted_throughput(ratio: float = 0.95) -> ThroughputResult:
    bare = PassTime(best_s=6.75, tokens_per_s=4620.0, all_s=[6.78, 6.75], cpu_s=13.0, tokenize_s=0.08, loop_s=6.67)
    igds = PassTime(best_s=6.75 / ratio, tokens_per_s=round(4620.0 * ratio, 1), all_s=[7.2, 7.1], cpu_s=14.0)
    loop = PassTime(best_s=6.96, tokens_per_s=4481.0, all_s=[6.96, 7.01], cpu_s=13.9)
    return ThroughputResult(
        repeats=2, layer=6, n_layers_run=7, n_layers_model=30, d_sae=4608, k=1, scope="all", n_pool=239,
        n_tokens=31199, batch_size=16, max_len=384, torch_threads=2, bare_forward=bare, igds_score=igds,
        igds_loop=loop, ratio=ratio, ratio_loop=0.959,
        encode_profile=EncodeProfile(forward_s=6.5, encode_s=1.2, gated_encode_s=0.1, encode_share=0.156,
                                     gated_encode_share=0.015, n_scope_tokens=31000, positive_preact_share=0.02,
                                     firing_share=0.01, gated_max_abs_diff=0.0))


def method(wall_s: float, auroc: float, x_igds: float | None = None, info: dict | None = None) -> MethodTime:
    return MethodTime(wall_s=wall_s, all_wall_s=[wall_s], cpu_s=2 * wall_s, s_per_example=round(wall_s / 100, 6),
                      auroc_on_task=auroc, other_cores=0.01, loadavg_start=[2.0, 1.5, 1.4], info=info or {},
                      x_igds=x_igds)


def planted_selection(igds_s: float = 1.0, loss_s: float = 11.0) -> SelectionResult:
    return SelectionResult(n_pool=100, repeats=1, chunk_batches=4, methods={
        "igds": method(igds_s, 0.8719, 1.0),
        "loss": method(loss_s, 0.0015, round(loss_s / igds_s, 3)),
        "less": method(241.0, 1.0, 241.0, {"warmup_s": 10.3, "n_warmup": 12, "grads_s": 230.3,
                                           "s_per_example_grad": 0.4516, "checkpoint_lr": [1.2e-4, 8e-5],
                                           "n_val": 16}),
    })


def planted_e2e(fixed_s: float = 100.0) -> EndToEndResult:
    return EndToEndResult(
        sae_steps=500, sae_train_tokens=100_000, n_train_tokens=48_482, n_heldout_tokens=10_000,
        identify=IdentifySummary(top_n=16, alphas=[2.0, 4.0], n_prior=198, n_general=200, n_recalled=16,
                                 n_causal=5, n_ranked=5, ranking=[1413, 77, 3]),
        steps={"sae_cache": Timing(11.3), "sae_train": Timing(57.4), "sae_metrics": Timing(3.2),
               "sae_save": Timing(0.1, 0.1), "identify": Timing(31.2, 60.0)},
        fixed_s=fixed_s, n_pool=100, artifacts={"sae": "/tmp/e2e/sae", "features": "/tmp/e2e/features"},
        reproduces=Reproduces(sae_sha256="abc"), e2e_s=fixed_s + 1.0)


def probe(peak_mb: float) -> dict:
    return {"peak_rss_bytes": int(peak_mb * MB), "rss_after_load_bytes": int(600 * MB),
            "work_peak_rss_bytes": int(peak_mb * MB), "wall_s": 7.8}


def planted_memory(large_mb: float = 944.0) -> MemoryResult:
    base = 600 * MB
    return MemoryResult(n=100, factor=4, baseline={"peak_rss_bytes": base, "rss_after_load_bytes": base},
                        forward=probe(700.0), scoring={"100": probe(920.0), "400": probe(large_mb)},
                        ratio=round(large_mb / 920.0, 4),
                        increment_bytes={"forward": int(100 * MB), "100": int(320 * MB),
                                         "400": int((large_mb - 600) * MB)},
                        increment_ratio=round((large_mb - 600) / 320, 3))


def planted_dvc(noop_s: float = 2.15) -> DvcResult:
    stale = ["report", "subset@mixed-igds-0.25-s0"]
    return DvcResult(params="configs/ci.yaml", full_repro_s=674.9, noop_repro_s=noop_s,
                     noop_runs=[{"wall_s": noop_s, "ran_a_stage": False}], status_s=1.56, clean_status={},
                     ratios_change={"from": [0.5], "to": [0.25]}, status_after_change_s=1.23, stale=stale,
                     n_stale=len(stale), expected_stale=stale, unexpected_stale=[], missing_stale=[],
                     upstream_stale=[])


def planted_result(**parts) -> BenchResult:
    result = BenchResult(
        created="2026-01-01 00:00 UTC", command="python -m bench.run --parts all", parts=list(PARTS),
        throughput=parts.get("throughput", planted_throughput()),
        selection=parts.get("selection", planted_selection()), e2e=parts.get("e2e", planted_e2e()),
        memory=parts.get("memory", planted_memory()), dvc=parts.get("dvc", planted_dvc()),
        machine=Machine(cpu_count=2, torch_threads=2, platform="Linux", python="3.11", torch="2.x", git="abc",
                        loadavg_start=[0.2, 0.8, 1.2], loadavg_end=[1.5, 1.6, 1.6],
                        cpu_share={"other_cores": 0.01}, parts={"e2e": {"wall_s": 100.0, "resumed": True}}),
        config=RunConfig(params="params.yaml", model="smollm2-135m-instruct", device="cpu", dtype="float32",
                         n_pool=100, n_pool_prepared=239, scoring={"batch_size": 16, "max_len": 384},
                         methods_params={"igds": {"k": 1}}, quick=False, identify_overrides={},
                         data="prepared by the bench", sae=None, features=None, setup={}),
        notes="planted numbers")
    sel = result.selection
    result.break_even = break_even(result.e2e.fixed_s, sel.methods["igds"].wall_s, sel.methods["loss"].wall_s,
                                   sel.n_pool)
    result.targets = targets(result)
    return result


# --- targets and the table ----------------------------------------------------------------------

def test_a_result_meeting_every_goal_reports_every_target_met():
    result = planted_result()
    assert len(result.targets) == 5  # throughput, IGDS / Loss, memory, dvc no-op, dvc stale set
    assert all(t.met for t in result.targets), [t for t in result.targets if not t.met]
    ratio = next(t for t in result.targets if "throughput" in t.name)
    assert ratio.measured == 0.95 and ratio.goal == 0.9 and ratio.margin == pytest.approx(0.05)


def test_a_missed_goal_is_reported_as_not_met_and_the_others_stay_met():
    result = planted_result(throughput=planted_throughput(ratio=0.8), memory=planted_memory(large_mb=1300.0))
    missed = {t.name for t in result.targets if not t.met}
    assert missed == {"IGDS scoring throughput / bare forward to layer 6", "peak RSS scoring 400 / 100 examples"}
    tp = next(t for t in result.targets if "throughput" in t.name)
    assert tp.margin == pytest.approx(-0.1) and tp.margin_rel == pytest.approx(-0.1 / 0.9, abs=1e-4)


def test_targets_of_parts_that_did_not_run_are_left_out():
    result = planted_result()
    result.throughput = result.memory = result.dvc = None
    assert [t.name for t in targets(result)] == ["IGDS scoring time / Loss scoring time"]


def test_markdown_renders_the_planted_numbers_and_marks_a_missed_target():
    text = markdown(planted_result(throughput=planted_throughput(ratio=0.8)))
    row = next(line for line in text.splitlines() if line.startswith("| IGDS scoring throughput"))
    assert "missed by 0.1" in row and "(-11%)" in row and ">= 0.9" in row
    assert "| IGDS scoring time / Loss scoring time | 0.0909 | <= 0.6 | met" in text
    assert "| 4620 |" in text  # the bare forward's tokens/s
    assert "| loss | 11.00 | 0.1100 | 11.00 |" in text  # wall s, s / example, x IGDS
    assert "LESS costs 241 s" in text
    assert "**fixed cost** | **100.0**" in text and "48482 train + 10000 held-out tokens" in text
    assert "**Break-even pool size: n = 1000**" in text
    assert "Peak ratio 400/100: 1.026" in text
    assert "| full `dvc repro` | 675 |" in text
    assert "Resumed parts (measured by an earlier, interrupted run with the same options): e2e." in text
    for heading in ("## Targets", "## 1. Scoring throughput", "## 2. Selection wall time", "## 3. IGDS end to end",
                    "## 4. Peak resident memory", "## 5. DVC"):
        assert heading in text


def test_markdown_leaves_out_the_parts_that_did_not_run_and_names_failed_ones():
    result = planted_result()
    result.throughput = result.memory = result.dvc = result.e2e = result.break_even = None
    result.errors = {"memory": "RuntimeError: bench.child score failed\nTraceback ..."}
    text = markdown(result)
    assert "## 2. Selection wall time" in text
    assert "## 1." not in text and "## 3." not in text and "## 4." not in text and "## 5." not in text
    assert "**Part memory failed:** `RuntimeError: bench.child score failed`" in text


# --- break-even ---------------------------------------------------------------------------------

def test_break_even_is_the_fixed_cost_over_the_per_example_saving():
    be = break_even(fixed_s=100.0, igds_s=1.0, loss_s=11.0, n=100)  # 0.01 vs 0.11 s per example
    assert be.n_break_even == 1000
    assert (be.igds_s_per_example, be.loss_s_per_example) == (0.01, 0.11)
    assert be.e2e_igds_s_at_n == 101.0 and be.loss_s_at_n == 11.0 and be.e2e_over_loss_at_n == pytest.approx(9.182)
    # float noise (3 / 0.03 = 100.00000000000003) does not add an example
    assert break_even(fixed_s=3.0, igds_s=1.1, loss_s=4.1, n=100).n_break_even == 100


@pytest.mark.parametrize("igds_s, loss_s", [(11.0, 1.0), (5.0, 5.0)])
def test_no_break_even_when_igds_is_not_cheaper_per_example(igds_s, loss_s):
    be = break_even(fixed_s=100.0, igds_s=igds_s, loss_s=loss_s, n=100)
    assert be.n_break_even is None
    assert "no break-even" in markdown(dataclasses.replace(planted_result(), break_even=be))


def train_probe(kind: str, tokens_per_s: float, peak_mb: float, checkpointing: bool = False) -> dict:
    return {"loss_kind": kind, "gradient_checkpointing": checkpointing, "tokens_per_s": tokens_per_s,
            "peak_rss_bytes": int(peak_mb * MB), "malloc_mmap_threshold": None}


def test_finetune_targets_are_the_default_probes_peak_and_its_speed_against_the_bare_pass():
    probes = {"model_loss": train_probe("model", 76.0, 14000), "response_loss": train_probe("response", 80.0, 12700),
              "bare": train_probe("bare", 90.0, 11800), "low_memory": train_probe("response", 40.0, 1900, True)}
    ft = FinetuneResult(batch=8, seq=384, steps=3, probes=probes, default_probe="response_loss",
                        tokens_per_s_ratio=round(80 / 90, 4), peak_rss_bytes=probes["response_loss"]["peak_rss_bytes"])
    result = BenchResult(created="now", command="test", parts=["finetune"], finetune=ft)
    found = {t.name: t for t in targets(result)}
    rss = found["fine-tuning peak RSS (GB), batch 8 x 384"]
    speed = found["fine-tuning tokens/s / bare forward+backward"]
    assert not rss.met and rss.measured == pytest.approx(12700 * MB / 1e9, abs=1e-4) and "1.99 GB" in rss.detail
    assert speed.met and speed.measured == pytest.approx(0.8889)
    result.machine, result.config = planted_result().machine, planted_result().config
    text = markdown(result)
    assert "| low_memory | response | True | glibc default | 40.0 | 0.44 | 1900 |" in text
    assert from_jsonable(BenchResult, json.loads(json.dumps(to_jsonable(result)))) == result


def test_train_steps_run_each_loss_on_batches_of_exactly_the_asked_shape(tiny_bench):
    """bench.child's training probe on the tiny model: every batch is batch x seq tokens, the
    response loss and the model's own loss agree on the first step (same weights), and the
    bare pass runs without the head."""
    from bench.child import train_steps

    params = dataclasses.replace(tiny_bench.params, finetune=dataclasses.replace(
        tiny_bench.params.finetune, target_modules=("q_proj", "v_proj"), lora_dropout=0.0, max_len=64))
    runs = {}
    for kind in ("response", "model", "bare"):
        loaded = LoadedModel(build_tiny_model(seed=0), build_char_tokenizer(), "tiny")
        runs[kind] = train_steps(loaded, params, [task(i) for i in range(6)], kind, batch=2, seq=48, steps=2)
    assert all(r["steps"] == 2 and len(r["losses"]) == 3 and r["seq"] == 48 for r in runs.values())
    assert runs["response"]["losses"][0] == pytest.approx(runs["model"]["losses"][0], abs=1e-5)
    assert 0 < runs["response"]["response_share"] < 1 and runs["bare"]["tokens_per_s"] > 0


# --- the parts table, --parts, bench.json ---------------------------------------------------------

def test_every_part_dispatches_to_a_callable_and_has_a_result_field():
    result_fields = {f.name for f in dataclasses.fields(BenchResult)}
    assert set(DEFAULT_PARTS) <= set(PARTS)
    for name, part in PARTS.items():
        assert callable(part), name
        assert name in result_fields, f"run stores part {name} as BenchResult.{name}"
    assert parse_parts("all") == tuple(PARTS)
    assert parse_parts(" e2e, selection ") == ("e2e", "selection")
    assert parse_args([]).parts == DEFAULT_PARTS
    assert parse_args([]).methods is None  # the profile's methods: decide


def test_parts_rejects_an_unknown_part_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--parts", "throughput,nosuch"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--parts: unknown part(s) nosuch; choose from throughput, selection, e2e, memory, finetune, dvc" in err
    with pytest.raises(SystemExit):
        parse_args(["--parts", " , "])
    assert "(none given)" in capsys.readouterr().err


def test_bench_json_reads_back_into_the_same_results():
    result = planted_result()
    raw = json.loads(json.dumps(to_jsonable(result)))  # what bench.json and the partial file hold
    assert raw["selection"]["methods"]["igds"]["wall_s"] == 1.0 and raw["break_even"]["n_break_even"] == 1000
    assert raw["memory"]["scoring"]["400"]["peak_rss_bytes"] == 944 * MB
    assert from_jsonable(BenchResult, raw) == result
    raw["e2e"]["n_cached_tokens"] = 1  # a partial file of another bench version
    with pytest.raises(TypeError):
        from_jsonable(BenchResult, raw)


def test_run_orders_the_parts_records_a_failed_one_and_resumes_the_finished_ones(tmp_path, monkeypatch):
    """bench.run.run with the parts table's entries replaced by fakes (no model): e2e runs
    first and its artifacts score the others, a failing part lands in errors while the
    others report, and --resume keeps what finished."""
    data = tmp_path / "data"
    write_jsonl(data / "pools" / "mixed.jsonl", (task(i).to_dict() for i in range(5)))
    calls: list[str] = []

    def fake(name, value):
        def part(b, args):
            calls.append(name)
            if name == "throughput":
                assert b.sae == tmp_path / "e2e" / "sae"  # e2e ran first: its artifacts score the rest
                if fail["throughput"]:
                    raise RuntimeError("planted failure")
            return value
        return part

    e2e = dataclasses.replace(planted_e2e(), artifacts={"sae": str(tmp_path / "e2e" / "sae"),
                                                        "features": str(tmp_path / "e2e" / "features")})
    fail = {"throughput": True}
    for name, value in {"e2e": e2e, "throughput": planted_throughput(), "selection": planted_selection()}.items():
        monkeypatch.setitem(PARTS, name, fake(name, value))
    monkeypatch.setattr(bench.run, "load_model", lambda *args: None)
    argv = ["--params", str(ROOT / "configs" / "ci.yaml"), "--data", str(data), "--workdir",
            str(tmp_path / "work"), "--parts", "throughput,selection,e2e", "--out", str(tmp_path / "bench.json")]

    result = bench.run.run(parse_args(argv))
    assert calls == ["e2e", "throughput", "selection"]
    assert result.throughput is None and result.errors["throughput"] == "RuntimeError: planted failure"
    assert result.selection == planted_selection()
    assert result.config.setup["artifacts_from"] == "e2e (made by this run)"
    assert result.break_even.n_break_even == 50  # 100 s fixed / (11 - 1 s over the 5 examples: 2 s each)
    assert result.config.methods_params["igds"] == {"k": 1, "pooling": "max", "scope": "response_content",
                                                      "features": "causal"}
    assert set(read_json(partial_path(tmp_path / "bench.json"))["parts_cpu"]) == {"e2e", "throughput", "selection"}

    calls.clear()
    fail["throughput"] = False
    result = bench.run.run(parse_args([*argv, "--resume"]))
    assert calls == ["throughput"]  # e2e and selection finished in the interrupted run
    assert result.e2e == e2e and result.throughput == planted_throughput() and not result.errors
    assert result.machine.parts["e2e"]["resumed"] and "resumed" not in result.machine.parts["throughput"]
    assert result.config.setup["artifacts_from"] == "e2e (made by the resumed run)"
    assert "Resumed parts (measured by an earlier, interrupted run with the same options): e2e, selection." \
        in markdown(result)


# --- the throughput and selection parts on a tiny model --------------------------------------------

@pytest.fixture(scope="module")
def tiny_bench(planted, tmp_path_factory):
    """A Bench on the planted tiny model: the recall SAE (f0 fires on '#', which every task
    answer carries) and features.json ranking f0; IGDS, Loss, Random and Full as methods."""
    model, u, w, basis = planted
    work = tmp_path_factory.mktemp("bench")
    save_sae(recall_sae(u, w, basis), work / "sae")
    write_json(work / "features" / "features.json",
               {"layer": LAYER, "ranking": [0], "features": [{"feature": 0, "mean_when_active": 1.0}]})
    ci = load_params(ROOT / "configs" / "ci.yaml")
    params = dataclasses.replace(
        ci, data=dataclasses.replace(ci.data, target_task="task"),
        scoring=ScoringConfig(batch_size=4, max_len=128, chunk_batches=1),
        select=SelectConfig(methods=("igds", "loss", "random")),
        methods=parse_methods({"igds": {"k": 1, "scope": "all"}, "loss": {}, "random": {}, "full": {}}))
    pool = [task(i) for i in range(6)] + [general(i) for i in range(5)] + [other(i) for i in range(5)]
    pool = [pool[i] for i in np.random.default_rng(0).permutation(len(pool))]
    return Bench(params=params, params_path=ROOT / "configs" / "ci.yaml", data=work, pool=pool,
                 work=work, loaded=LoadedModel(model, build_char_tokenizer(), "tiny"), n_prepared=len(pool),
                 sae=work / "sae", features=work / "features")


def test_selection_times_every_method_as_the_score_stage_scores_it(tiny_bench):
    sel = selection(tiny_bench, list(tiny_bench.params.methods), repeats=2)
    assert list(sel.methods) == ["igds", "loss", "random", "full"]
    assert sel.n_pool == 16 and sel.repeats == 2 and sel.chunk_batches == 1
    igds = sel.methods["igds"]
    assert igds.auroc_on_task == 1.0  # the planted feature marks every task example
    assert igds.x_igds == 1.0 and len(igds.all_wall_s) == 2 and igds.wall_s == min(igds.all_wall_s)
    assert igds.info["chosen_features"] == [0] and igds.info["n_tokens"] > 0
    assert "resumed_chunks" not in igds.info
    assert sel.methods["loss"].info["keep"] == "high" and sel.methods["full"].auroc_on_task == 0.5
    result = BenchResult(created="now", command="test", parts=["selection"], selection=sel)
    assert [t.name for t in targets(result)] == ["IGDS scoring time / Loss scoring time"]


def test_throughput_compares_igds_with_the_bare_forward_over_the_same_tokens(tiny_bench):
    tp = throughput(tiny_bench, repeats=1)
    assert tp.layer == LAYER and tp.n_layers_run == LAYER + 1 and tp.k == 1 and tp.n_pool == 16
    assert {run["pass"] for run in tp.runs} == {"bare_forward", "igds_loop", "igds_score"}
    assert {run["n_tokens"] for run in tp.runs} == {tp.n_tokens}
    assert tp.ratio > 0 and tp.bare_forward.tokenize_s is not None and tp.igds_score.tokenize_s is None
    assert tp.encode_profile.gated_max_abs_diff == 0.0  # the column encode is exact
    assert tp.encode_profile.n_scope_tokens > 0


def test_e2e_makes_the_sae_and_features_the_stages_make_and_scores_with_them(tiny_bench, tmp_path):
    """The e2e part on a tiny profile: make_sae's SAE (a few steps on the tiny model's
    activations), identification on it, features.json, and IGDS scoring with the two."""
    data = tmp_path / "data"
    for split, records in {"prior": [task(i) for i in range(10)], "general": [general(i) for i in range(10)],
                           "pools/mixed": tiny_bench.pool, "pools/within": tiny_bench.pool}.items():
        write_jsonl(data / f"{split}.jsonl", (r.to_dict() for r in records))
    sae_cfg = SaeConfig(layer=LAYER, width=2, k=4, train_tokens=None, heldout_tokens=None, steps=30, batch_tokens=64,
                        max_len=128, batch_size=8, ce_examples=2)  # every token the tiny text gives
    b = dataclasses.replace(tiny_bench, data=data, sae=None, features=None,
                            params=dataclasses.replace(tiny_bench.params, sae=sae_cfg))
    e2e = end_to_end(b, tmp_path / "e2e", sae_steps=20,
                     identify_overrides={"top_n": 2, "alphas": (4.0,), "heldout_examples": 2, "min_contrast": -1.0,
                                         "batch_size": 4, "max_len": 128})
    assert e2e.sae_steps == 20 and e2e.n_train_tokens > 0 and e2e.n_heldout_tokens > 0
    assert set(e2e.steps) == {"sae_cache", "sae_train", "sae_metrics", "sae_save", "identify"}
    assert e2e.fixed_s == pytest.approx(sum(e2e.steps[k].wall_s for k in ("sae_cache", "sae_train", "sae_save",
                                                                         "identify")), abs=1e-3)
    assert "ce_loss_recovered" in e2e.sae_metrics and e2e.identify.n_recalled == 2
    features = read_json(tmp_path / "e2e" / "features" / "features.json")
    assert features["layer"] == LAYER and features["sae_sha256"] == e2e.reproduces.sae_sha256
    assert features["ranking"][:8] == e2e.identify.ranking
    assert load_sae(tmp_path / "e2e" / "sae").cfg.d_sae == 2 * 32
    assert e2e.score is not None and e2e.score.chosen_features == features["ranking"][:1]
    assert e2e.e2e_s == pytest.approx(e2e.fixed_s + e2e.score.wall_s, abs=1e-3)
