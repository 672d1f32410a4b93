"""subset@<pool>-<stem> stage: every subset finetune trains on, one stage kind (graph.yaml lists
them; igds.core.runs.RunId names the files): subsets/<pool>/<stem>.jsonl (the kept ids, in pool
order for full) and results/metrics/<pool>/select-<stem>.json (its on-task recall, damaged share
and how it was drawn).

    --method <m> --ratio R   a selector's top share by its cached scores (pipelines.select)
    --method full            the whole pool (no ratio, no scores)
    --recipe <r> --ratio R   a recipe of params.yaml `recipes:` (pipelines.recipes.recipe)
    --finalist search_<solver>_s<k> --search search/<pool>/<solver>-s<k> --ratio R
                             a search's best recipe, for its full-fidelity retraining
"""

from __future__ import annotations

import argparse
from pathlib import Path

from igds.params import Params
from pipelines import select
from pipelines.common import main
from pipelines.io import subset_args
from pipelines.recipes import recipe


def run(params: Params, args: argparse.Namespace) -> None:
    if args.method is not None:
        select.run(params, args)
    else:
        recipe.run(params, args)


def _args(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", help="a method under methods: in params.yaml (full: the whole pool)")
    which.add_argument("--recipe", help="a recipe under recipes: in params.yaml")
    which.add_argument("--finalist", help="a search's best recipe: search_<solver>_s<seed> (with --search)")
    parser.add_argument("--search", type=Path, default=None, help="the finalist's search/<pool>/<solver>-s<seed>")
    subset_args(parser)


if __name__ == "__main__":
    main("subset", run, _args, uses_model=False)
