"""evaluate@<pool>-<stem> and evaluate@base stages (graph.yaml lists them):
results/eval/<pool>/<stem>/ (results/eval/base/ for the untouched model) with metrics.json (aggregate and per-example
scores, feature activation, training facts), samples.jsonl (lm-eval's raw per-sample outputs)
and tasks/ (the generated lm-eval task YAMLs and data, so a run can be re-checked by hand).
`--run base` evaluates the untouched trained model."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from igds.core.artifacts import atomic_dir, read_json, write_json, write_jsonl
from igds.params import Params
from igds.core.data import DataError
from igds.core.evaluate import generation_stats, run_lm_eval, write_tasks
from igds.core.finetune import load_trained
from igds.core.models.loading import load_model
from igds.method.resonance import chosen_features, feature_activation
from pipelines.common import main
from pipelines.finetune import run_arg
from pipelines.graph import amplification_method
from pipelines.io import peak_rss_bytes, read_split

log = logging.getLogger("evaluate")


def amplification_settings(params: Params) -> tuple[str, object] | None:
    """(method, its params) whose features the feature activation measures
    (pipelines.graph.amplification_method), or None when no method reads features."""
    method = amplification_method(params)
    return None if method is None else (method, params.methods[method])


def run(params: Params, args: argparse.Namespace) -> None:
    cfg = params.evaluate
    if args.run == "base":
        name, method, ratio, seed = "base", "base", None, None
        out = args.out / "base"
    else:
        run_id = run_arg(params, args)
        name, method, ratio, seed = run_id.stem, run_id.name, run_id.share, run_id.seed
        out = run_id.evaluation(args.out)
    model_name = params.finetune.model or params.model.name
    loaded = load_model(model_name, params.model.device, params.model.dtype)
    model, train = loaded.model, {}
    if name != "base":
        checkpoint = run_id.checkpoint(args.checkpoints)
        if not (checkpoint / "train.json").is_file():
            raise DataError(f"{checkpoint} is not a finished fine-tune; run `dvc repro` for its finetune stage")
        train = read_json(checkpoint / "train.json")
        model = load_trained(model, checkpoint, params.finetune.kind)

    eval_records = read_split(args.data / "eval.jsonl")
    probe_records = read_split(args.data / "probe.jsonl")  # empty when data.splits.probe is not set
    info = {"run": name, "pool": None if name == "base" else args.pool, "method": method, "ratio": ratio, "seed": seed, "model": model_name,
            "n_train": train.get("n_examples", 0), "train_wall_s": train.get("wall_s", 0.0),
            "train_loss": train.get("loss", []),
            "n_eval": len(eval_records), "n_probe": len(probe_records)}
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        task_dir = tmp / "tasks"
        tasks = write_tasks(task_dir, eval_records, probe_records, loaded.tokenizer, cfg.max_gen_toks, cfg.n_generate)
        with tempfile.TemporaryDirectory() as cache:  # keep lm-eval's dataset cache out of the artifact
            import datasets  # noqa: PLC0415

            datasets.config.HF_DATASETS_CACHE = Path(cache)
            aggregate, per_example, raw = run_lm_eval(model, loaded.tokenizer, task_dir, tasks, cfg.batch_size,
                                                      cfg.max_len, params.seed)
        info["metrics"], info["per_example"] = aggregate, per_example
        info["max_gen_toks"] = cfg.max_gen_toks
        info.update(generation_stats(raw, loaded.tokenizer, cfg.max_gen_toks))

        info["feature_activation"], info["features"], info["layer"] = None, [], None
        settings = amplification_settings(params)
        if settings is not None:
            from igds.core.sae import load_sae  # noqa: PLC0415

            _, method_params = settings
            features = read_json(args.features / "features.json")
            chosen, layer = chosen_features(features, method_params.k, method_params.features), features["layer"]
            sae = load_sae(args.sae, params.model.device)
            if sae.cfg.d_in != model.config.hidden_size:
                log.warning("the SAE reads d_model %d but %s has %d: no feature activation", sae.cfg.d_in,
                            model_name, model.config.hidden_size)
            else:
                info["feature_activation"] = feature_activation(
                    model, loaded.tokenizer, sae, eval_records, layer, chosen, params.scoring.batch_size,
                    params.scoring.max_len, method_params.scope, method_params.pooling)
            info["features"], info["layer"] = chosen, layer
        info["eval_wall_s"] = round(time.perf_counter() - t0, 3)
        info["peak_rss_bytes"] = peak_rss_bytes()
        write_jsonl(tmp / "samples.jsonl", raw)
        write_json(tmp / "metrics.json", info)
    log.info("%s: %s; feature activation %s; %.0f s", name,
             ", ".join(f"{k} {v:.4f}" for k, v in aggregate.items()), info["feature_activation"], info["eval_wall_s"])


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="'base' for the untouched model; else give --method/--seed")
    parser.add_argument("--method", default=None)
    parser.add_argument("--ratio", default=None, help="the selection's ratio (omit for full and base)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--pool", default="mixed", help="the pool the checkpoint was trained on (recorded)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="the checkpoints' root")
    parser.add_argument("--sae", type=Path, default=Path("sae"))
    parser.add_argument("--features", type=Path, default=Path("features"))
    parser.add_argument("--out", type=Path, default=Path("results/eval"), help="the evaluations' root (a pool's folder under it)")


if __name__ == "__main__":
    main("evaluate", run, _args, reads=lambda params, args: {"sae": args.sae, "features": args.features}, autocast=True)
