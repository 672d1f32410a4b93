"""python -m bench.run: the selection-cost benchmark of issue 8, in one run on one machine.

Parts (--parts, comma-separated; default: throughput,selection,e2e,memory; `all` adds dvc):

- throughput: IGDS scoring tokens/s against a bare forward pass through layers 0..L over
  the same batches (params.yaml scoring batch size and max_len), best of --repeats,
  interleaved. Target: ratio >= 0.9.
- selection: every method of the profile's `methods:` (or --methods) scoring the same pool
  as the score stage does, as a ratio to IGDS's time. Target: IGDS <= 0.6 x Loss; LESS's
  cost stated.
- e2e: IGDS end to end = a fresh SAE (pipelines.sae.make_sae: cache activations + train) +
  identification + scoring, and the pool size at which it drops below Loss (the SAE and
  features are made once).
- memory: peak RSS of a fresh process scoring n and 4n examples with IGDS, and of one that
  only loads the model. Target: 4n / n <= 1.3.
- dvc: full `dvc repro` of configs/ci.yaml in a project copy (minutes), then a no-op
  `dvc repro` (target < 5 s) and the stages stale after a select.ratios change.

Writes --out (results/bench.json, atomically) and the table beside it (results/bench.md),
and prints the table. The model is loaded once (its load time is reported, not charged to
any method). Wall times depend on what else runs on the machine: the output records the
load average and the CPU other processes used (`other_cores`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import ROOT, CpuShare, loadavg, resize_pool, stopwatch, subprocess_env
from bench.parts import Bench, break_even, dvc, end_to_end, finetune_steps, memory, selection, throughput
from bench.report import markdown, targets
from bench.results import BenchResult, Machine, RunConfig, from_jsonable, to_jsonable
from igds.core.artifacts import atomic_file, read_json, write_json
from igds.core.config import ConfigError
from igds.params import Params, load_params
from igds.core.data import DataError
from igds.core.models.loading import load_model
from igds.core.registry import available
from pipelines.io import read_pool

log = logging.getLogger("bench")

QUICK = {"pool_size": 24, "repeats": 1, "sae_steps": 20}
QUICK_IDENTIFY = {"top_n": 2}  # and the first alpha only


# --- the parts: name -> part(bench, args) -> its result dataclass -----------------------------

def throughput_part(b: Bench, args: argparse.Namespace):
    return throughput(b, args.repeats)


def selection_part(b: Bench, args: argparse.Namespace):
    return selection(b, args.methods, args.method_repeats)


def e2e_part(b: Bench, args: argparse.Namespace):
    return end_to_end(b, b.work / "e2e", args.sae_steps, identify_overrides(args, b.params))


def memory_part(b: Bench, args: argparse.Namespace):
    return memory(b, args.memory_factor)


def finetune_part(b: Bench, args: argparse.Namespace):
    return finetune_steps(b, steps=1 if args.quick else 3)


def dvc_part(b: Bench, args: argparse.Namespace):
    return dvc(b.work / "dvc" / "project", args.dvc_params.resolve())


PARTS: dict[str, Callable[[Bench, argparse.Namespace], object]] = {
    "throughput": throughput_part, "selection": selection_part, "e2e": e2e_part, "memory": memory_part,
    "finetune": finetune_part, "dvc": dvc_part,
}
DEFAULT_PARTS = ("throughput", "selection", "e2e", "memory")


def parse_parts(text: str) -> tuple[str, ...]:
    """--parts: names of PARTS, comma-separated, or 'all'."""
    parts = tuple(PARTS) if text.strip() == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"unknown part(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    return parts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="the profile to measure (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}, or 'all' (default: %(default)s)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="examples every method scores: the first N of the pool, repeated with distinct ids "
                             "beyond its size (default: the whole pool; --quick: 24)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods timed by the selection part (default: every method under "
                             "the profile's `methods:`)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="throughput repeats, best taken (default: 3; --quick: 1)")
    parser.add_argument("--method-repeats", type=int, default=1,
                        help="selection runs per method, best taken (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a prepared data folder (default: run pipelines.prepare with --params into the workdir)")
    parser.add_argument("--sae", type=Path, default=None, help="an SAE folder to score with (e.g. a repro's sae/)")
    parser.add_argument("--features", type=Path, default=None,
                        help="a features folder to score with (default: the ones the e2e part makes)")
    parser.add_argument("--sae-steps", type=int, default=None,
                        help="SAE training steps in the e2e part (default: sae.steps; --quick: 20)")
    parser.add_argument("--memory-factor", type=int, default=4,
                        help="the memory part scores n and this x n (default: %(default)s)")
    parser.add_argument("--dvc-params", type=Path, default=ROOT / "configs" / "ci.yaml",
                        help="the profile the dvc part reproduces (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON; the markdown table goes beside it (.md) (default: results/bench.json; "
                             "--quick: results/bench-quick.json)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run: pool 24 (memory: 24 and 96), 1 repeat, 20 SAE steps, identification of "
                             "2 features x 1 alpha")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads here and in the memory probes (default: torch's, one per core); "
                             "on a machine shared with another torch job, 1 avoids thread oversubscription")
    parser.add_argument("--resume", action="store_true",
                        help="keep the parts that results/bench.partial.json (beside --out) holds from an "
                             "interrupted run with the same options, and run the rest")
    parser.add_argument("--note", default="", help="free text added to the output's notes")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.parts = parse_parts(args.parts)
    except ValueError as e:
        parser.error(f"--parts: {e}")
    if args.methods is not None:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if (args.sae is None) != (args.features is None):
        parser.error("--sae and --features go together (the features were identified with that SAE)")
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.repeats = args.repeats or 3
    if args.out is None:
        args.out = ROOT / "results" / ("bench-quick.json" if args.quick else "bench.json")
    return args


# --- the run ----------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> BenchResult:
    machine_share = CpuShare()
    params = load_params(args.params)
    check_profile(args, params)
    result = BenchResult(created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                         command="python -m bench.run " + shlex.join(sys.argv[1:]), parts=list(args.parts))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="igds-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    setup: dict = {}
    parts_cpu: dict[str, dict] = {}
    try:
        b = setup_bench(args, params, work, setup)
        done, done_cpu = load_partial(args)
        for name in part_order(args, b):
            value, parts_cpu[name] = resumed(done, done_cpu, name) or run_part(name, b, args, result)
            setattr(result, name, value)
            if name == "e2e":
                adopt_artifacts(b, value, parts_cpu[name], setup)
            write_json(partial_path(args.out), {**to_jsonable(result), "parts_cpu": parts_cpu, "complete": False})
        setup.setdefault("artifacts_from", "given (--sae, --features)" if args.sae else None)
    finally:
        remove_scratch(work, args)
    finish(result, args, params, b, setup, parts_cpu, machine_share)
    return result


def check_profile(args: argparse.Namespace, params: Params) -> None:
    """The profile has data, and the methods to time (default: its `methods:`) exist."""
    if params.data is None:
        raise ConfigError(f"{args.params}: section 'data' is missing")
    if args.methods is None:
        args.methods = list(params.methods)
    if not args.methods and "selection" in args.parts:
        raise ConfigError(f"{args.params}: no methods to time (its `methods:` section is empty); pass --methods")
    unknown = sorted(set(args.methods) - set(available()))
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(unknown)}; available: {', '.join(available())}")


def setup_bench(args: argparse.Namespace, params: Params, work: Path, setup: dict) -> Bench:
    """The prepared data (prepared here unless --data), the resized pool and the loaded model."""
    data = args.data
    if data is None:
        data = work / "data"
        setup["prepare_s"] = prepare_data(args.params.resolve(), data)
    # the first pool of data.pools (the mixed pool in the default): the pool the parts time
    full_pool = read_pool(data, params.data.pools[0] if params.data is not None else "mixed")
    with stopwatch() as t:
        loaded = load_model(params.model.name, params.model.device, params.model.dtype)
    setup["model_load_s"] = t["wall_s"]
    return Bench(params=params, params_path=args.params, data=data,
                 pool=resize_pool(full_pool, args.pool_size or len(full_pool)), work=work, loaded=loaded,
                 n_prepared=len(full_pool), sae=args.sae, features=args.features)


def part_order(args: argparse.Namespace, b: Bench) -> list[str]:
    """The parts in run order: e2e first when the others score with its artifacts, and the
    selection of IGDS and Loss after it when e2e runs alone (the break-even needs them)."""
    needs_artifacts = any(p in args.parts for p in ("throughput", "memory")) or (
        "selection" in args.parts and "igds" in args.methods)
    order = list(args.parts)
    if b.sae is None and (needs_artifacts or "e2e" in args.parts):
        order = ["e2e"] + [p for p in order if p != "e2e"]
    if "e2e" in args.parts and "selection" not in order:
        order.insert(order.index("e2e") + 1, "selection")
        args.methods = ["igds", "loss"]
    return order


def identify_overrides(args: argparse.Namespace, params: Params) -> dict:
    """--quick shrinks identification: 2 recalled features, the first alpha."""
    return {**QUICK_IDENTIFY, "alphas": list(params.identify.alphas[:1])} if args.quick else {}


def remove_scratch(work: Path, args: argparse.Namespace) -> None:
    """The temp scratch folder goes unless --workdir or --keep-workdir keeps it."""
    if args.workdir is None and not args.keep_workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log.info("scratch kept in %s", work)


def partial_path(out: Path) -> Path:
    """Where the parts done so far are kept while the run goes on (removed when it finishes)."""
    return out.with_name(f"{out.stem}.partial.json")


def load_partial(args: argparse.Namespace) -> tuple[BenchResult | None, dict[str, dict]]:
    """With --resume: the interrupted run's results and the CPU record of its finished parts."""
    path = partial_path(args.out)
    if not (args.resume and path.is_file()):
        return None, {}
    raw = read_json(path)
    cpu = raw.pop("parts_cpu", {})
    raw.pop("complete", None)
    try:
        done = from_jsonable(BenchResult, raw)
    except (TypeError, ValueError, KeyError) as e:  # written by another version of the bench
        log.warning("not resuming: %s does not hold this bench's results (%s)", path, e)
        return None, {}
    log.info("resuming: keeping the parts %s from %s", ", ".join(cpu), path)
    return done, cpu


def resumed(done: BenchResult | None, done_cpu: dict[str, dict], name: str) -> tuple[object, dict] | None:
    """Part `name`'s result and CPU record from the interrupted run, if it finished there."""
    if done is None or name not in done_cpu or name in done.errors or getattr(done, name, None) is None:
        return None
    return getattr(done, name), {**done_cpu[name], "resumed": True}


def adopt_artifacts(b: Bench, e2e, cpu: dict, setup: dict) -> None:
    """Without --sae/--features, the other parts score with the SAE and features e2e made."""
    if e2e is not None and b.sae is None:
        b.sae, b.features = Path(e2e.artifacts["sae"]), Path(e2e.artifacts["features"])
        setup["artifacts_from"] = f"e2e (made by {'the resumed' if cpu.get('resumed') else 'this'} run)"


def run_part(name: str, b: Bench, args: argparse.Namespace, result: BenchResult) -> tuple[object | None, dict]:
    """Run part `name` through PARTS: its result (None if it failed: the error goes to
    result.errors and the other parts still run) and its CPU record."""
    share = CpuShare()
    log.info("part %s", name)
    value = None
    try:
        value = PARTS[name](b, args)
    except (ConfigError, DataError, FileNotFoundError):
        raise
    except Exception as e:  # a failed part leaves the others' results standing
        log.exception("part %s failed", name)
        result.errors[name] = f"{type(e).__name__}: {e}"[:2000]
        if name == "e2e" and b.sae is None:
            raise  # nothing else can score without its artifacts
    cpu = {**share.summary(), "finished": datetime.datetime.now(datetime.UTC).isoformat()}
    log.info("part %s done in %.0f s (other processes: %.2f cores)", name, cpu["wall_s"], cpu["other_cores"] or 0.0)
    return value, cpu


def finish(result: BenchResult, args: argparse.Namespace, params: Params, b: Bench, setup: dict,
           parts_cpu: dict[str, dict], machine_share: CpuShare) -> None:
    """The break-even (from e2e and the selection's IGDS and Loss), the machine, the
    configuration, the notes and the targets."""
    methods = result.selection.methods if result.selection else {}
    if result.e2e and "igds" in methods and "loss" in methods:
        result.break_even = break_even(result.e2e.fixed_s, methods["igds"].wall_s, methods["loss"].wall_s,
                                       len(b.pool))
    share = machine_share.summary()
    result.machine = Machine(
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), platform=platform.platform(),
        python=platform.python_version(), torch=torch.__version__, git=git_revision(),
        loadavg_start=share["loadavg_start"], loadavg_end=loadavg(), cpu_share=share, parts=parts_cpu)
    result.config = RunConfig(
        params=str(args.params), model=params.model.name, device=params.model.device, dtype=params.model.dtype,
        n_pool=len(b.pool), n_pool_prepared=b.n_prepared,
        scoring={"batch_size": params.scoring.batch_size, "max_len": params.scoring.max_len,
                 "chunk_batches": params.scoring.chunk_batches},
        methods_params={m: dataclasses.asdict(params.methods[m]) if m in params.methods else {}
                        for m in args.methods},
        quick=args.quick, identify_overrides=identify_overrides(args, params),
        data=str(args.data or "prepared by the bench"),
        sae=str(args.sae) if args.sae else None, features=str(args.features) if args.features else None,
        setup=setup)
    result.notes = notes(result.machine, args.note)
    result.targets = targets(result)


def notes(m: Machine, extra: str) -> str:
    busy = m.cpu_share["other_cores"]
    text = (f"{m.cpu_count} CPU cores, torch {m.torch_threads} threads. Other processes kept "
            f"{busy if busy is not None else '?'} cores busy on average during the run (load average "
            f"{m.loadavg_start[0]} at start, {m.loadavg_end[0]} at end): ")
    text += ("the machine was shared, so wall times are slower and noisier than alone; the interleaved "
             "best-of ratios of part 1 are the most robust numbers, single runs of part 2 the least."
             if busy is None or busy > 0.2 else "the machine was essentially idle.")
    text += " The model is loaded once per process and its load time is not charged to any method."
    return f"{text} {extra}".strip()


def prepare_data(params: Path, out: Path) -> float:
    """Run the prepare stage (offline) into `out`; returns its wall time."""
    log.info("preparing the data of %s into %s", params, out)
    with stopwatch() as t:
        proc = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--params", str(params), "--out", str(out)],
                              cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"pipelines.prepare failed:\n{proc.stderr[-3000:]}")
    return t["wall_s"]


def git_revision() -> str | None:
    proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        result = run(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(2)
    table = markdown(result)
    write_json(args.out, to_jsonable(result))
    with atomic_file(args.out.with_suffix(".md")) as f:
        f.write(table)
    partial_path(args.out).unlink(missing_ok=True)
    print(table)
    missed = [t.name for t in result.targets if not t.met]
    log.info("wrote %s and %s; targets met %d of %d%s", args.out, args.out.with_suffix(".md"),
             len(result.targets) - len(missed), len(result.targets),
             f" (missed: {'; '.join(missed)})" if missed else "")
    if result.errors:
        log.error("parts that failed: %s", ", ".join(result.errors))
        sys.exit(1)


if __name__ == "__main__":
    main()
