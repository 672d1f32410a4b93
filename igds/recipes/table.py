"""The recipe table (recipe search, issue 16): on eval, the task metric's mean with its CI for
base, full, every single selector at the searches' final size (random among them: random
top-k), the best single selector chosen on val, and each solver's finalists over its search
seeds; paired differences to random and to the best single selector, with p-values (Holm
within each reference); the fine-tunes each row spent; then the proxy's validation, stated
first when the proxy does not rank recipes. The best-so-far curves are in igds.core.plots.

Statistics as the main table's (igds.core.stats): a row's runs are its training seeds, or for a
solver its search seeds x training seeds, resampled as one level (so a solver's interval
carries both); differences are paired on the eval examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from igds.core.report import EvalRun, example_ids
from igds.core.report import _num as _fmt  # the main table's number format
from igds.core.stats import bootstrap_ci, holm, paired_bootstrap, paired_permutation_test

REFS = ("random", "best_single")
NAN = math.nan


@dataclass(frozen=True)
class RecipeRow:
    """One row's runs and what it cost."""

    label: str
    kind: str  # reference | selector | best single | solver
    runs: tuple[EvalRun, ...]
    proxy_fine_tunes: int = 0  # proxy fine-tunes spent choosing it (all of its searches)
    full_fine_tunes: int = 0
    proxy_value: float = NAN  # its best proxy value on val (median over search seeds)
    note: str = ""


def search_rows(runs: Sequence[EvalRun], singles: Sequence[str], ratio: float, finalists: Mapping[str, tuple],
                searches: Sequence[dict], single: dict | None) -> list[RecipeRow]:
    """The table's rows from a pool's eval runs (base included), the single selectors, the
    search ratio, the finalists (name -> (solver, search seed)) and the search summaries
    (results/metrics/<pool>/search-*.json; `single`: search-single.json, None if absent)."""
    def of(method: str, r: float | None = ratio) -> tuple[EvalRun, ...]:
        return tuple(sorted((x for x in runs if x.method == method and (r is None or x.ratio == round(r, 6))),
                            key=lambda x: -1 if x.seed is None else x.seed))

    rows = [RecipeRow("base", "reference", of("base", None)),
            RecipeRow("full", "reference", of("full", None), full_fine_tunes=len(of("full", None)))]
    proxies = dict(zip(single["methods"], single["values"])) if single else {}
    for m in singles:
        rows.append(RecipeRow(m, "selector", of(m), full_fine_tunes=len(of(m)), proxy_value=proxies.get(m, NAN)))
    if single is not None:
        best = single["best_method"]
        rows.append(RecipeRow(f"best single on val ({best})", "best single", of(best),
                              proxy_fine_tunes=int(single["fine_tunes"]), full_fine_tunes=len(of(best)),
                              proxy_value=float(single["best_value"])))
    for solver in dict.fromkeys(s for s, _ in finalists.values()):
        names = [n for n, (s, _) in finalists.items() if s == solver]
        mine = [x for n in names for x in of(n)]
        done = [s for s in searches if s["solver"] == solver]
        rows.append(RecipeRow(
            f"search: {solver}", "solver", tuple(mine), proxy_fine_tunes=sum(int(s["fine_tunes"]) for s in done),
            full_fine_tunes=len(mine), proxy_value=float(np.median([s["best_value"] for s in done])) if done else NAN,
            note=f"{len(done)} search seeds x {len(mine) // max(1, len(done))} training seeds"))
    return [r for r in rows if r.runs]


def build_recipe_table(rows: Sequence[RecipeRow], metric: str, rng: np.random.Generator, n_boot: int = 2000,
                       n_perm: int = 10000, level: float = 0.95) -> pd.DataFrame:
    """One line per row: mean [CI] of `metric` on eval, paired differences to random (the
    selector row) and to the best single selector on val, p and Holm p (within a reference)."""
    if not rows:
        return pd.DataFrame(columns=_COLUMNS)
    all_runs = [r for row in rows for r in row.runs]
    ids = example_ids(all_runs)[metric]
    mat = {row.label: np.array([[r.per_example[metric][i] for i in ids] for r in row.runs]) for row in rows}
    ref_rows = {"random": next((r for r in rows if r.kind == "selector" and r.label == "random"), None),
                "best_single": next((r for r in rows if r.kind == "best single"), None)}
    out = []
    for row in rows:
        ci = bootstrap_ci(mat[row.label], rng, n_boot, level)
        line = {"row": row.label, "kind": row.kind, "n_runs": len(row.runs), metric: ci.mean, f"{metric}_lo": ci.lo,
                f"{metric}_hi": ci.hi, "proxy_fine_tunes": row.proxy_fine_tunes,
                "full_fine_tunes": row.full_fine_tunes, "proxy_value": row.proxy_value, "note": row.note}
        for ref, ref_row in ref_rows.items():
            d = lo = hi = p = NAN
            if ref_row is not None and ref_row.runs != row.runs and row.label != "base":  # not itself
                pci = paired_bootstrap(mat[row.label], mat[ref_row.label], rng, n_boot, level)
                d, lo, hi = pci.diff, pci.lo, pci.hi
                p = paired_permutation_test(mat[row.label], mat[ref_row.label], rng, n_perm).p_value
            line.update({f"vs_{ref}": d, f"vs_{ref}_lo": lo, f"vs_{ref}_hi": hi, f"vs_{ref}_p": p})
        out.append(line)
    table = pd.DataFrame(out)
    for ref in REFS:
        table[f"vs_{ref}_p_holm"] = holm(table[f"vs_{ref}_p"].to_numpy(dtype=float))
    return table


_COLUMNS = ["row", "kind", "n_runs", "proxy_fine_tunes", "full_fine_tunes", "proxy_value", "note"]


def _pv(p: float) -> str:
    return "–" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def proxy_verdict(check: dict | None) -> str:
    """One sentence on the proxy's validation, the recipe section's first line."""
    if not check or not check.get("recipes"):
        return "The proxy is not validated in this run (search.check.recipes is 0)."
    a = check["agreement"][check["task_metric"]]
    if a["rho"] is None or a["lo"] is None:
        head = "The proxy does not rank recipes (full fidelity gives every recipe the same value: no ranking)"
    elif a["lo"] > 0:
        head = "The proxy ranks recipes"
    elif a["hi"] < 0:
        head = ("The proxy does not rank recipes: it ranks them in reverse (its rank correlation with full "
                "fidelity is negative, CI below 0), so a search that maximises it moves away from what full "
                "fidelity rewards")
    else:
        head = "The proxy does not rank recipes (its rank correlation's CI includes 0)"
    return (f"{head}: Spearman rho between the proxy ({check['proxy_metric']} on val after the proxy fine-tune) "
            f"and full fidelity ({check['task_metric']} on val, mean of {len(check['seeds'])} seeds) over "
            f"{check['recipes']} recipes is {_fmt(a['rho'], 2)} [{_fmt(a['lo'], 2)}, {_fmt(a['hi'], 2)}]; "
            f"the noise ceiling (rho between halves of the full-fidelity seeds) is {_fmt(a['ceiling'], 2)} "
            f"[{_fmt(a['ceiling_lo'], 2)}, {_fmt(a['ceiling_hi'], 2)}].")


def render_recipe_markdown(tables: Mapping[str, pd.DataFrame], checks: Mapping[str, dict | None], metric: str,
                           level: float) -> str:
    """Every searched pool's recipe table under its heading, the proxy's verdict first."""
    pct = f"{level * 100:g}%"
    if not tables:
        return "No recipe search in this profile (search.solvers or search.pools is empty).\n"
    lines = []
    for pool, table in tables.items():
        lines += [f"### Pool: {pool}", "", proxy_verdict(checks.get(pool)), ""]
        other = checks.get(pool) and checks[pool].get("agreement", {}).get(checks[pool].get("proxy_metric"))
        if other and checks[pool]["proxy_metric"] != metric:
            lines += [f"Against full fidelity's own {checks[pool]['proxy_metric']} on val: rho {_fmt(other['rho'], 2)} "
                      f"[{_fmt(other['lo'], 2)}, {_fmt(other['hi'], 2)}], ceiling {_fmt(other['ceiling'], 2)}.", ""]
        rows = []
        for _, r in table.iterrows():
            diffs = [("–" if not math.isfinite(r[f"vs_{ref}"]) else
                      f"{_fmt(r[f'vs_{ref}'], 3, True)} [{_fmt(r[f'vs_{ref}_lo'], 3, True)}, "
                      f"{_fmt(r[f'vs_{ref}_hi'], 3, True)}] p={_pv(r[f'vs_{ref}_p'])} "
                      f"(Holm {_pv(r[f'vs_{ref}_p_holm'])})") for ref in REFS]
            cost = f"{int(r['proxy_fine_tunes'])} + {int(r['full_fine_tunes'])}"
            rows.append([str(r["row"]), str(int(r["n_runs"])) + (f" ({r['note']})" if r["note"] else ""),
                         f"{_fmt(r[metric], 3)} [{_fmt(r[f'{metric}_lo'], 3)}, {_fmt(r[f'{metric}_hi'], 3)}]", *diffs,
                         _fmt(r["proxy_value"], 3), cost])
        lines += [f"{metric} on eval, mean [{pct} CI]; differences paired on the eval examples:", "",
                  "| row | runs | " + metric + " | vs random | vs best single on val | proxy on val | "
                  "fine-tunes (proxy + full) |", "|---|---|---:|---:|---:|---:|---:|",
                  *("| " + " | ".join(r) + " |" for r in rows), ""]
    lines += ["How to read it: a selector row is the select stage's subset at the searches' final size; "
              "`best single on val` is the selector whose subset scored best on the proxy (its proxy fine-tunes "
              "count against it); a `search` row pools its finalists (each search's best recipe retrained at "
              "full fidelity) over search seeds x training seeds, resampled as one level, so its interval "
              "carries both. proxy on val: the proxy's value of the row's subset (a solver: the median over "
              "its searches of the best). p: paired sign-flip permutation test; Holm within each reference. "
              "Eval is read once, here; the searches and the single pick saw val only.", ""]
    return "\n".join(lines)


def best_so_far_long(searches: Sequence[dict], single: dict | None) -> pd.DataFrame:
    """solver, seed, evaluation (1-based), best_so_far: the curves the plot draws."""
    rows = [{"solver": s["solver"], "seed": s["seed"], "evaluation": i + 1, "best_so_far": v}
            for s in searches for i, v in enumerate(s["best_so_far"])]
    if single is not None:
        rows += [{"solver": "single", "seed": None, "evaluation": i + 1, "best_so_far": v}
                 for i, v in enumerate(single["best_so_far"])]
    return pd.DataFrame(rows, columns=["solver", "seed", "evaluation", "best_so_far"])
