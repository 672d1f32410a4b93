"""python -m pipelines.fanout: `dvc repro` with the stages that do not depend on each other run side
by side, as Ray tasks (issue 33).

    python -m pipelines.fanout                        # every stage of the graph; one worker per CPU
    python -m pipelines.fanout report --workers 1     # the stages `report` needs, one after another
    python -m pipelines.fanout --address auto         # a Ray cluster (`ray start --head` first)

DVC runs a pipeline's stages one after another. The stage graph here is wide: every
finetune@<run> of one pool depends on its selection only, every evaluate@<run> on its checkpoint
only. This takes DVC's own graph (dvc.repo.Repo's index, edges from a stage to the stages whose
outputs it reads), keeps the targets and what they need, asks DVC which of those are changed
(`dvc status`) and adds every stage downstream of a changed one; then submits one Ray task per
stage, `dvc --wait-for-lock repro --single-item <stage>`, with the tasks of its upstream stages as
its arguments, so Ray itself starts a stage when its inputs exist and as many at once as the
workers' resources allow (--cpus-per-stage, --gpus-per-stage). Each stage is still DVC's: its
lock entry, its run cache, its outputs checked and cached by DVC, its own resume when killed. A
stage that fails stops every stage downstream of it (Ray passes the error on); the others run to
their end, so a rerun continues with what is left. Each stage's log goes to
.dvc/tmp/fanout/<stage>.log.

On this 2-core machine two torch stages at once slow each other more than 2x: the default
--workers is 1 here (one after another, what `dvc repro` does); with more devices, one worker per
device. Across machines (a Ray cluster, --address) every node must see the project at the same
path (a shared file system) with the same environment: the tasks run DVC in that folder.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("fanout")

LOGS = Path(".dvc/tmp/fanout")


def plan(root: Path, targets: list[str] | None) -> tuple[list[str], dict[str, list[str]]]:
    """(the stages to run in a topological order, {stage: the stages of that list it needs}): the
    targets' closure in DVC's graph, of it the stages `dvc status` calls changed and everything
    downstream of them (their inputs will change when those run)."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # a stage's address is relative to the working directory
        graph = repo.index.graph  # edges: stage -> a stage whose output it reads
        by_name = {stage.addressing: stage for stage in graph.nodes}
        if targets:
            unknown = [t for t in targets if t not in by_name]
            if unknown:
                raise SystemExit(f"fanout: no stage {', '.join(unknown)} in dvc.yaml (`dvc stage list` names them)")
            keep = set()
            for t in targets:
                keep |= {by_name[t], *nx.descendants(graph, by_name[t])}
            graph = graph.subgraph(keep)
        changed = set(repo.status(targets=targets or None, with_deps=True))  # one pass over the graph
    names = {stage: stage.addressing for stage in graph.nodes}
    run = {s for s in graph.nodes if names[s] in changed}
    for stage in list(run):
        run |= nx.ancestors(graph, stage)  # ancestors: the stages that read its outputs, directly or not
    order = [names[s] for s in reversed(list(nx.topological_sort(graph))) if s in run]
    needs = {names[s]: sorted(names[d] for d in graph.successors(s) if d in run) for s in graph.nodes if s in run}
    return order, needs


def repro(stage: str, root: str, *upstream) -> dict:
    """One stage, by DVC, in the project at `root` (the upstream tasks' results are its arguments:
    Ray starts it once they exist). Its log to .dvc/tmp/fanout/<stage>.log; a RuntimeError if it fails."""
    path = Path(root) / LOGS / f"{stage.replace('/', '_')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(path, "w", encoding="utf-8") as out:
        proc = subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage], cwd=root, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    end = time.time()
    if proc.returncode != 0:
        tail = path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}; its log: {path}):\n{tail}")
    return {"stage": stage, "start": start, "end": end, "node": os.uname().nodename}


def fan_out(root: Path, targets: list[str] | None, workers: int | None, address: str | None,
            cpus_per_stage: float, gpus_per_stage: float) -> list[dict]:
    """Run the plan's stages as Ray tasks; [{stage, start, end, node}] in the plan's order. A
    SystemExit naming the stages that failed and those they kept from running."""
    import ray

    order, needs = plan(root, targets)
    if not order:
        log.info("every stage is up to date")
        return []
    log.info("%d stages to run (%s)", len(order), ", ".join(order[:6]) + (" ..." if len(order) > 6 else ""))
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), num_gpus=0 if not gpus_per_stage else None,
                 include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus_per_stage, num_gpus=gpus_per_stage, max_retries=0)(repro)
        refs = {}
        for stage in order:
            refs[stage] = task.remote(stage, str(root.resolve()), *[refs[d] for d in needs[stage]])
        done, failed = [], []
        for stage in order:
            try:
                done.append(ray.get(refs[stage]))
                log.info("%s: done in %.0f s", stage, done[-1]["end"] - done[-1]["start"])
            except ray.exceptions.RayTaskError as e:
                failed.append((stage, e))
    finally:
        ray.shutdown()
    if failed:  # a stage downstream of a failed one fails with the same error, never starting
        raise SystemExit(f"fanout: {len(failed)} of {len(order)} stages did not run to the end "
                         f"({', '.join(s for s, _ in failed)}); the first failure:\n{failed[0][1].cause}")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.fanout", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("targets", nargs="*", help="stages (as `dvc stage list` names them); default: all")
    parser.add_argument("--workers", type=int, default=None,
                        help="local Ray's CPUs (stages at once x --cpus-per-stage); default: the machine's cores")
    parser.add_argument("--address", default=None, help="a Ray cluster's address (e.g. auto); default: a local Ray")
    parser.add_argument("--cpus-per-stage", type=float, default=None,
                        help="Ray CPUs a stage takes; default: all of --workers on one stage (one after another)")
    parser.add_argument("--gpus-per-stage", type=float, default=0.0, help="Ray GPUs a stage takes (a device each)")
    parser.add_argument("--dry", action="store_true", help="print the plan (stage: the stages it waits for) only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    root = Path.cwd()
    if args.dry:
        order, needs = plan(root, args.targets)
        for stage in order:
            print(f"{stage}: {', '.join(needs[stage]) or '-'}")
        return
    workers = args.workers or os.cpu_count() or 1
    cpus = args.cpus_per_stage if args.cpus_per_stage is not None else float(workers)
    fan_out(root, args.targets, workers, args.address, cpus, args.gpus_per_stage)


if __name__ == "__main__":
    sys.exit(main())
