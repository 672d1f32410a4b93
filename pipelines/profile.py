"""python -m pipelines.profile: run or show a profile (configs/<name>.yaml), a file of overrides on
params.yaml, without editing the tracked params.yaml.

    python -m pipelines.profile configs/ci.yaml                # the profile's whole params (YAML)
    python -m pipelines.profile configs/ci.yaml --set-params   # its overrides as dvc exp run -S flags (its
                                                               # params, and its stage graph: graph.yaml)
    python -m pipelines.profile configs/ci.yaml --exp [ARGS]   # dvc exp run --temp -n ci -S ... [ARGS]
    python -m pipelines.profile configs/ci.yaml --write F      # its whole params into F, its graph.yaml beside it

`--exp` runs the profile as a DVC experiment in a temporary workspace (DVC's convention for a
variant of the tracked params): the workspace and params.yaml stay as they are; the outputs go
to the cache and the experiment's ref (`dvc exp show`, `dvc exp branch <name> <branch>`, `dvc exp
push`). Not a stage: it starts one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from igds.core.artifacts import atomic_file
from igds.core.config import ConfigError, from_dict
from igds.params import Params, diff, dump_params, read_params
from pipelines.graph import GRAPH_FILE, document, render


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar (what `dvc exp run -S` parses): strings quoted, lists
    and mappings written out, null, true/false."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)


def _leaves(changed: dict, base: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every value `changed` sets: into a mapping `base` has, key by key."""
    out = []
    for key, value in changed.items():
        if isinstance(value, dict) and value and isinstance(base.get(key), dict) and base[key]:
            out += _leaves(value, base[key], f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def set_params(base: dict, whole: dict) -> list[str]:
    """The `dvc exp run -S` overrides that turn params `base` into `whole`: `~key` for what it
    drops (first), `++key=value` for what it sets."""
    changed, dropped = diff(base, whole)
    sets = []
    for key, value in _leaves(changed, base):
        before = _get(base, key)
        if value == {} and isinstance(before, dict) and before:  # Hydra merges {} into a mapping: drop its keys
            dropped += [f"{key}.{sub}" for sub in before]
        else:
            sets.append(f"++{key}={hydra_value(value)}")
    return [f"~{key}" for key in dropped] + sets


def _get(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def set_graph(base: dict, whole: dict) -> list[str]:
    """The `dvc exp run -S graph.yaml:...` overrides that turn the workspace's generated graph `base`
    into the profile's `whole` (pipelines.graph.document): each section that differs replaced whole
    (its keys, such as mixed-igds-0.5-s0, are no Hydra key paths)."""
    flags = []
    for key, value in whole.items():
        if base.get(key) != value:
            flags += ([f"{GRAPH_FILE}:~{key}"] if key in base else []) + [f"{GRAPH_FILE}:++{key}={hydra_value(value)}"]
    return flags


def exp_flags(params_path: Path, whole: dict, profile: Params | None = None) -> list[str]:
    """The `dvc exp run -S` overrides that run params `whole` in the workspace of `params_path`:
    its params, and its stage graph (graph.yaml) when the workspace has one."""
    profile = profile if profile is not None else from_dict(Params, whole, "")
    flags = set_params(read_params(params_path), whole)
    graph_path = params_path.parent / GRAPH_FILE
    if graph_path.is_file():  # the project's stage graph iterates over it: the profile's own
        flags += set_graph(yaml.safe_load(graph_path.read_text(encoding="utf-8")), document(profile))
    return flags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.profile", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("profile", type=Path, help="configs/<name>.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the workspace's params (the base of --set-params, --exp)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--set-params", action="store_true", help="print the overrides, one -S value a line")
    what.add_argument("--exp", nargs=argparse.REMAINDER, metavar="ARGS", help="dvc exp run --temp with the overrides (and ARGS)")
    what.add_argument("--write", type=Path, metavar="FILE", help="write the whole params to FILE")
    args = parser.parse_args(argv)
    try:
        whole = read_params(args.profile)
        profile = from_dict(Params, whole, "")  # the profile is valid as a whole before anything runs
        if args.write is not None:
            if args.write.resolve() == args.params.resolve():
                raise ConfigError(f"--write {args.write}: that is the tracked params file; run the profile with --exp, "
                                  "or write it into another workspace")
            with atomic_file(args.write) as f:
                f.write(dump_params(whole))
            with atomic_file(args.write.parent / GRAPH_FILE) as f:  # the stage graph of those params
                f.write(render(profile))
            return
        if not (args.set_params or args.exp is not None):
            sys.stdout.write(dump_params(whole))
            return
        flags = exp_flags(args.params, whole, profile)
    except ConfigError as e:
        print(f"profile: error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.set_params:
        print("\n".join(flags))
        return
    cmd = ["dvc", "exp", "run", "--temp", "--name", args.profile.stem]
    cmd += [arg for flag in flags for arg in ("-S", flag)] + list(args.exp)
    print(f"profile: {args.profile}: dvc exp run --temp --name {args.profile.stem} with {len(flags)} overrides", file=sys.stderr)
    sys.exit(subprocess.run(cmd, check=False).returncode)


if __name__ == "__main__":
    main()
