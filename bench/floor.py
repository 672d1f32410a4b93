"""python -m bench.floor: a profile's wall time against its compute floor (issue 33), in one run
on one machine.

1. `dvc repro` of the profile in a fresh project copy, every stage process recording where its
   time goes (igds.core.timing, through $IGDS_STAGE_TIMES): interpreter start-up and imports,
   model loads, the stage's work, and the tokens its models' forward passes did (training:
   gradients on; forward: the rest).
2. The rates, measured in this process after the run, on the profile's own pool, batch size,
   max_len and precision: the suite's fine-tuning step (igds.core.finetune's response-position
   loss, backward, clipping, AdamW: bench.prefix.training_steps) in tokens/s, and a forward
   pass over the same batches in tokens/s.
3. The floor = training tokens / training rate + forward tokens / forward rate + the SAE's own
   training (its metrics' train_wall_s: no model runs in it). The wall time is split into that
   floor, start-up, model loads, the stages' work beyond the floor (tokenising, SAE encodes,
   Python loops, generation's per-token cost above a batched forward, writing outputs) and
   what lies outside the stage processes (DVC: hashing, lock rewrites, process exit).

Writes results/bench-floor-<profile>.{json,md} (atomically) and prints the table. The project
copy is kept under --work: run again with --reuse to recompute the report without the repro.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bench.common import ROOT, machine, project_copy, write_report
from bench.prefix import training_steps
from igds.core import timing
from igds.core.models.loading import load_model, mixed_precision
from igds.params import load_params
from pipelines.io import read_pool

log = logging.getLogger("bench.floor")
TIMES = "stage-times.jsonl"  # in the project copy: one line per stage process
REPRO = "repro.json"  # in the project copy: the repro's wall seconds and command


def repro(work: Path, profile: Path) -> dict:
    """A full `dvc repro` of `profile` in a fresh project copy at `work`, each stage process
    appending its record to work/TIMES; {"wall_s", "profile"} (also written to work/REPRO)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    project_copy(work, profile, env=env)
    env[timing.ENV] = str(work / TIMES)
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=work, env={**env, "PYTHONPATH": str(work)}, check=True)
    done = {"wall_s": round(time.perf_counter() - t0, 1), "profile": str(profile)}
    (work / REPRO).write_text(json.dumps(done))
    return done


def rates(params, pool, repeats: int) -> dict:
    """tokens/s of the suite's fine-tuning step and of a forward pass over the same batches (the
    profile's pool, finetune batch size and max_len, model.autocast), best of `repeats`."""
    torch.manual_seed(0)
    loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    with mixed_precision(params.model.device, params.model.autocast):
        run, batches, tokens = training_steps(loaded, params.finetune, pool)
        train = min(run(False) for _ in range(repeats))
        model = loaded.model.eval()

        def forward() -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                for b, _ in batches:
                    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
            return time.perf_counter() - t0

        fwd = min(forward() for _ in range(repeats))
    return {"tokens": tokens, "batches": len(batches), "train_tokens_per_s": round(tokens / train, 1),
            "forward_tokens_per_s": round(tokens / fwd, 1)}


def breakdown(records: list[dict], wall_s: float, rate: dict, sae_train_s: float) -> dict:
    """The wall time split into the floor and the rest, overall and per stage kind."""
    kinds: dict[str, dict] = collections.defaultdict(lambda: collections.Counter())
    for r in records:
        k = kinds[r["stage"]]
        train_s = r["train_tokens"] / rate["train_tokens_per_s"]
        forward_s = r["forward_tokens"] / rate["forward_tokens_per_s"]
        sae_s = sae_train_s if r["stage"] == "sae" else 0.0
        work = r.get("run_end", r["exit"]) - r.get("run_start", r["main"])
        started = r["main"] if r["started"] is None else r["started"]  # None: no /proc (start-up unknown, 0)
        k["processes"] += 1
        k["process_s"] += r["exit"] - started
        k["startup_s"] += r["main"] - started
        k["model_load_s"] += r["model_load_s"]
        k["floor_s"] += train_s + forward_s + sae_s
        k["train_floor_s"] += train_s
        k["forward_floor_s"] += forward_s
        k["work_beyond_floor_s"] += work - r["model_load_s"] - (train_s + forward_s + sae_s)
        k["train_tokens"] += r["train_tokens"]
        k["forward_tokens"] += r["forward_tokens"]
    total = collections.Counter()
    for k in kinds.values():
        total.update(k)
    floor = total["floor_s"]
    parts = {"floor_s": floor, "startup_s": total["startup_s"], "model_load_s": total["model_load_s"],
             "work_beyond_floor_s": total["work_beyond_floor_s"],
             "other_in_process_s": total["process_s"] - total["startup_s"] - total["model_load_s"]
             - total["floor_s"] - total["work_beyond_floor_s"],  # argument parsing, params checks, after the work
             "outside_stages_s": wall_s - total["process_s"]}  # DVC (hashing, lock rewrites), process exit
    return {"wall_s": wall_s, "floor_s": round(floor, 1), "ratio": round(wall_s / floor, 2) if floor else None,
            "parts": rnd(parts), "train_tokens": round(total["train_tokens"]), "forward_tokens": round(total["forward_tokens"]),
            "processes": total["processes"],
            "kinds": {name: rnd(dict(k)) for name, k in sorted(kinds.items(), key=lambda kv: -kv[1]["process_s"])}}


def rnd(d: dict) -> dict:
    return {key: round(v, 1) if isinstance(v, float) else v for key, v in d.items()}


def markdown(result: dict) -> str:
    b = result["breakdown"]
    lines = [f"# {result['profile']}: wall time against its compute floor",
             "", f"{result['date']}, {result['machine']}, commit {result['commit']}. `python -m bench.floor`.",
             "", f"Wall time of `dvc repro` from a fresh copy: **{b['wall_s']:.0f} s**; compute floor "
             f"**{b['floor_s']:.0f} s**; ratio **{b['ratio']}x** (target <= 1.3x for the default).",
             "", f"Rates (the profile's pool, batch {result['rates']['batch_size']}, {result['rates']['precision']}): "
             f"fine-tuning step {result['rates']['train_tokens_per_s']} tokens/s, forward "
             f"{result['rates']['forward_tokens_per_s']} tokens/s. Tokens: {b['train_tokens']:,} trained, "
             f"{b['forward_tokens']:,} forward, over {b['processes']} stage processes; SAE training "
             f"{result['sae_train_s']:.0f} s.", "",
             "| part | seconds | share of wall |", "|---|---:|---:|"]
    names = {"floor_s": "compute floor", "startup_s": "start-up and imports", "model_load_s": "model loads",
             "work_beyond_floor_s": "work beyond the floor", "other_in_process_s": "rest of the stage processes",
             "outside_stages_s": "outside the stage processes (DVC, exit)"}
    for key, name in names.items():
        lines.append(f"| {name} | {b['parts'][key]:.0f} | {b['parts'][key] / b['wall_s']:.0%} |")
    lines += ["", "| stage kind | processes | process s | start-up | model loads | floor | beyond floor |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, k in b["kinds"].items():
        lines.append(f"| {name} | {k['processes']} | {k['process_s']:.0f} | {k['startup_s']:.0f} | "
                     f"{k.get('model_load_s', 0):.0f} | {k.get('floor_s', 0):.0f} | {k.get('work_beyond_floor_s', 0):.0f} |")
    lines += ["", "The floor counts every token a model's forward passes did (padding out, a partial forward by the "
              "share of layers it ran) at the rates above, and the SAE's own training time. Generation's decode "
              "steps are counted at the batched forward rate, so their real cost above it is in \"work beyond "
              "the floor\"."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, default=ROOT / "configs" / "ci.yaml",
                        help="a profile (configs/<name>.yaml) or whole params file (default: configs/ci.yaml)")
    parser.add_argument("--work", type=Path, default=None, help="the project copy (default: a folder under the temp dir)")
    parser.add_argument("--reuse", action="store_true", help="reuse the repro already in --work (recompute the report)")
    parser.add_argument("--repeats", type=int, default=3, help="rate measurements (best of)")
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench-floor-<profile>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    name = args.profile.stem
    work = args.work or Path(tempfile.gettempdir()) / f"bench-floor-{name}"
    if args.reuse:
        if not (work / REPRO).is_file():
            parser.error(f"--reuse: no finished repro in {work} ({REPRO} missing)")
        done = json.loads((work / REPRO).read_text())
    else:
        if work.exists():
            parser.error(f"{work} exists: remove it, pass another --work, or --reuse its repro")
        log.info("dvc repro of %s in %s", args.profile, work)
        done = repro(work, args.profile)
    records = [json.loads(line) for line in (work / TIMES).read_text().splitlines() if line.strip()]
    params = load_params(work / "params.yaml")
    pool = params.data.pools[0]
    log.info("measuring rates on the %s pool", pool)
    rate = rates(params, read_pool(work / "data", pool), args.repeats)
    rate.update(batch_size=params.finetune.batch_size, precision=params.model.autocast or params.model.dtype)
    sae_metrics = work / "results" / "metrics" / "sae.json"
    sae_train_s = json.loads(sae_metrics.read_text()).get("train_wall_s", 0.0) if sae_metrics.is_file() else 0.0
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "profile": name,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(),
              "rates": rate, "sae_train_s": sae_train_s,
              "breakdown": breakdown(records, done["wall_s"], rate, sae_train_s)}
    write_report(args.out or ROOT / "results" / f"bench-floor-{name}.json", result, markdown)


if __name__ == "__main__":
    main()
