"""The bench's targets (met or missed, by how much) and its markdown table, from the parts'
results (bench.results)."""

from __future__ import annotations

import operator

from bench.common import mb
from bench.results import (
    BenchResult,
    BreakEven,
    DvcResult,
    EndToEndResult,
    MemoryResult,
    SelectionResult,
    Target,
    ThroughputResult,
)

OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, "==": operator.eq}


def target(name: str, measured: float, op: str, goal: float, detail: str = "") -> Target:
    """One target: met or missed, and the margin in the measure's units and relative to the goal."""
    met = bool(OPS[op](measured, goal))
    margin = measured - goal if op == ">=" else goal - measured  # > 0: room left; < 0: short by
    rel = margin / abs(goal) if goal else None
    return Target(name=name, measured=round(measured, 4), op=op, goal=goal, met=met, margin=round(margin, 4),
                  margin_rel=None if rel is None else round(rel, 4), detail=detail)


def targets(result: BenchResult) -> list[Target]:
    """The targets of issue 8 that the parts in `result` measured."""
    out = []
    if tp := result.throughput:
        out.append(target(
            f"IGDS scoring throughput / bare forward to layer {tp.layer}", tp.ratio, ">=", 0.9,
            f"{tp.igds_score.tokens_per_s:.0f} vs {tp.bare_forward.tokens_per_s:.0f} tokens/s "
            f"(loops alone: {tp.ratio_loop:.3f})"))
    methods = result.selection.methods if result.selection else {}
    if "igds" in methods and "loss" in methods and methods["loss"].wall_s > 0:
        igds, loss = methods["igds"].wall_s, methods["loss"].wall_s
        out.append(target("IGDS scoring time / Loss scoring time", igds / loss, "<=", 0.6,
                          f"{igds:.1f} s vs {loss:.1f} s"))
    if mem := result.memory:
        n, m = mem.n, mem.n * mem.factor
        out.append(target(f"peak RSS scoring {m} / {n} examples", mem.ratio, "<=", 1.3,
                          f"{mb(mem.scoring[str(m)]['peak_rss_bytes']):.0f} MB vs "
                          f"{mb(mem.scoring[str(n)]['peak_rss_bytes']):.0f} MB"))
    if ft := result.finetune:
        probe = ft.probes[ft.default_probe]
        out.append(target(f"fine-tuning peak RSS (GB), batch {ft.batch} x {ft.seq}", ft.peak_rss_bytes / 1e9, "<=", 2.0,
                          f"params.yaml's setting; low-memory setting: "
                          f"{ft.probes['low_memory']['peak_rss_bytes'] / 1e9:.2f} GB"))
        out.append(target("fine-tuning tokens/s / bare forward+backward", ft.tokens_per_s_ratio, ">=", 0.8,
                          f"{probe['tokens_per_s']:.0f} vs {ft.probes['bare']['tokens_per_s']:.0f} tokens/s"))
    if d := result.dvc:
        out.append(target("`dvc repro` with nothing changed (s)", d.noop_repro_s, "<", 5.0,
                          "no stage ran" if not any(r["ran_a_stage"] for r in d.noop_runs) else "A STAGE RAN"))
        wrong = len(d.unexpected_stale) + len(d.missing_stale)
        out.append(target("stale after a select.ratios change: stages other than select/finetune/evaluate "
                          "at the new ratio + report", wrong, "==", 0,
                          f"{d.n_stale} stale, upstream stale: {d.upstream_stale or 'none'}"))
    return out


def _status(t: Target) -> str:
    rel = f" ({100 * t.margin_rel:+.0f}%)" if t.margin_rel is not None else ""
    if t.op == "==":
        return "met" if t.met else f"missed (off by {abs(t.margin):g})"
    return f"{'met' if t.met else 'missed'} by {abs(t.margin):.3g}{rel}"


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown(result: BenchResult) -> str:
    """bench.md: the run, the targets, then one section per part that ran."""
    lines = _header(result) + _targets_table(result)
    for section in (_throughput(result.throughput), _selection(result.selection),
                    _end_to_end(result.e2e, result.break_even), _memory(result.memory), _finetune(result.finetune),
                    _dvc(result.dvc)):
        lines += section
    return "\n".join(lines) + "\n"


def _finetune(ft) -> list[str]:
    if ft is None:
        return []
    lines = [f"## Fine-tuning steps (batch {ft.batch} x {ft.seq} tokens, {ft.steps} timed steps after a warm-up, "
             "each in a fresh process)", "",
             "| probe | loss | gradient checkpointing | malloc mmap threshold | tokens/s | x bare | peak RSS (MB) |",
             "|---|---|---|---|---:|---:|---:|"]
    bare = ft.probes["bare"]["tokens_per_s"]
    for name, p in ft.probes.items():
        lines.append(f"| {name} | {p['loss_kind']} | {p['gradient_checkpointing']} | "
                     f"{p.get('malloc_mmap_threshold') or 'glibc default'} | {p['tokens_per_s']:.1f} | "
                     f"{p['tokens_per_s'] / bare:.2f} | {mb(p['peak_rss_bytes']):.0f} |")
    return lines + [""]


def _header(result: BenchResult) -> list[str]:
    m, c = result.machine, result.config
    resumed = [p for p, cpu in m.parts.items() if cpu.get("resumed")]
    return [
        f"# IGDS selection-cost bench ({result.created})", "",
        f"`{result.command}`", "",
        f"Model {c.model} ({c.device}, {c.dtype}); pool {c.n_pool} examples; {m.cpu_count} CPU cores, torch "
        f"{m.torch_threads} threads; load average {m.loadavg_start} at start, {m.loadavg_end} at end; other "
        f"processes kept {_fmt(m.cpu_share.get('other_cores'))} cores busy on average.", "",
        f"Notes: {result.notes}", "",
        *([f"Resumed parts (measured by an earlier, interrupted run with the same options): {', '.join(resumed)}.",
           ""] if resumed else []),
    ]


def _targets_table(result: BenchResult) -> list[str]:
    lines = ["## Targets", "", "| target | measured | goal | status | detail |", "|---|---:|---:|---|---|"]
    for t in result.targets:
        lines.append(f"| {t.name} | {t.measured:.3g} | {t.op} {t.goal:g} | {_status(t)} | {t.detail} |")
    for part, error in result.errors.items():
        lines += ["", f"**Part {part} failed:** `{error.splitlines()[0]}`"]
    return lines


def _throughput(tp: ThroughputResult | None) -> list[str]:
    if tp is None:
        return []
    lines = ["", f"## 1. Scoring throughput (best of {tp.repeats}, interleaved)", "",
             f"{tp.n_pool} examples, {tp.n_tokens} tokens, batch {tp.batch_size}, max_len {tp.max_len}, scope "
             f"{tp.scope}; layers 0..{tp.layer} of {tp.n_layers_model}, SAE width {tp.d_sae}, k {tp.k}.", "",
             "| pass | best s | tokens/s | all runs s |", "|---|---:|---:|---|"]
    rows = (("tokenise + bare forward to layer L (run_to_layer)", tp.bare_forward),
            ("IGDS selector.score (tokenise, load SAE, encode, pool)", tp.igds_score),
            ("IGDS encoding loop alone (pooled_feature_activations, pre-tokenised)", tp.igds_loop))
    for label, row in rows:
        lines.append(f"| {label} | {row.best_s:.2f} | {row.tokens_per_s:.0f} | "
                     f"{', '.join(f'{x:.2f}' for x in row.all_s)} |")
    bf = tp.bare_forward
    lines += ["", f"Bare forward split: tokenising {_fmt(bf.tokenize_s)} s + loop {_fmt(bf.loop_s)} s (best). "
                  f"Ratio (selector.score) {tp.ratio:.3f}; loops alone {tp.ratio_loop:.3f}."]
    if ep := tp.encode_profile:
        lines += ["", f"Encode profile (one pass, batch by batch): forward to layer L {ep.forward_s:.2f} s, "
                      f"full SAE encode {ep.encode_s:.2f} s ({100 * ep.encode_share:.0f}% of the two); "
                      f"a chosen feature's pre-activation is positive on {100 * ep.positive_preact_share:.1f}% "
                      f"of the {ep.n_scope_tokens} in-scope tokens (fires on {100 * ep.firing_share:.1f}%); "
                      f"the column encode IGDS uses (`encode_columns`: the full encode of those tokens only) "
                      f"takes {ep.gated_encode_s:.2f} s (max abs difference to the full encode "
                      f"{ep.gated_max_abs_diff:.2g})."]
    return lines


def _selection(sel: SelectionResult | None) -> list[str]:
    if sel is None:
        return []
    chunks = f", shardable methods in chunks of {sel.chunk_batches} batches" if sel.chunk_batches else ""
    lines = ["", f"## 2. Selection wall time (pool {sel.n_pool}, best of {sel.repeats}{chunks})", "",
             "| method | wall s | s / example | x IGDS | CPU s | other cores busy | on-task AUROC |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in sel.methods.items():
        lines.append(f"| {name} | {row.wall_s:.2f} | {row.s_per_example:.4f} | {_fmt(row.x_igds)} | "
                     f"{row.cpu_s:.1f} | {_fmt(row.other_cores)} | {_fmt(row.auroc_on_task, 3)} |")
    if less := sel.methods.get("less"):
        info = less.info
        lines += ["", f"LESS costs {less.wall_s:.0f} s = {_fmt(less.x_igds, 1)} x IGDS scoring: "
                      f"warm-up {_fmt(info.get('warmup_s'), 1)} s on {info.get('n_warmup')} examples, "
                      f"per-example gradients {_fmt(info.get('grads_s'), 1)} s "
                      f"({_fmt(info.get('s_per_example_grad'), 3)} s per example per checkpoint, "
                      f"{len(info.get('checkpoint_lr', []))} checkpoints, {info.get('n_val')} validation "
                      f"examples), linear in the pool size."]
    return lines


def _end_to_end(e2e: EndToEndResult | None, be: BreakEven | None) -> list[str]:
    if e2e is None:
        return []
    s, ident = e2e.steps, e2e.identify
    lines = ["", "## 3. IGDS end to end (fresh SAE + identification + scoring)", "",
             "| step | wall s |", "|---|---:|",
             f"| cache activations ({e2e.n_train_tokens} train + {e2e.n_heldout_tokens} held-out tokens, to "
             f"layer L) | {s['sae_cache'].wall_s:.1f} |",
             f"| train SAE ({e2e.sae_steps} steps) | {s['sae_train'].wall_s:.1f} |",
             f"| save SAE | {s['sae_save'].wall_s:.1f} |",
             f"| identify ({ident.n_recalled} recalled x {len(ident.alphas)} alphas, {_fmt(ident.n_causal)} causal) "
             f"| {s['identify'].wall_s:.1f} |",
             f"| **fixed cost** | **{e2e.fixed_s:.1f}** |"]
    if e2e.score:
        lines.append(f"| score the pool with the fresh artifacts | {e2e.score.wall_s:.1f} |")
    if "sae_metrics" in s:
        lines.append(f"| (not in the fixed cost: the SAE's held-out metrics, CE loss recovered) | "
                     f"{s['sae_metrics'].wall_s:.1f} |")
    rep = e2e.reproduces
    if rep.identical_sae is not None:
        same_sae = "byte-identical to" if rep.identical_sae else "NOT identical to"
        same_ranking = "the same" if rep.identical_ranking else "different"
        lines += ["", f"The fresh SAE is {same_sae} the given one; the feature ranking is {same_ranking} "
                      f"(fresh {ident.ranking[:5]}, given {(rep.given_ranking or [])[:5]})."]
    if be is not None:
        lines += ["", f"IGDS per example {be.igds_s_per_example:.4f} s, Loss {be.loss_s_per_example:.4f} s. "
                      f"At n = {be.n}: IGDS end to end {be.e2e_igds_s_at_n:.0f} s vs Loss {be.loss_s_at_n:.0f} s "
                      f"({_fmt(be.e2e_over_loss_at_n)}x). "
                      + (f"**Break-even pool size: n = {be.n_break_even}** (fixed / (loss - igds per example); the "
                         "SAE and features are made once and reused)." if be.n_break_even is not None
                         else "IGDS scoring is not cheaper than Loss per example: no break-even.")]
    return lines


def _memory(mem: MemoryResult | None) -> list[str]:
    if mem is None:
        return []
    n, m = mem.n, mem.n * mem.factor
    base = mem.baseline
    lines = ["", "## 4. Peak resident memory (a fresh process each; VmHWM)", "",
             "| process | peak RSS MB | RSS after model load MB | peak after the load MB | "
             "increment over baseline MB | work s |",
             "|---|---:|---:|---:|---:|---:|",
             f"| model loaded only (baseline) | {mb(base['peak_rss_bytes'])} | {mb(base['rss_after_load_bytes'])} "
             "| – | – | – |"]
    rows = [("forward", f"bare forward to layer L, n = {n}", mem.forward)]
    rows += [(str(size), f"IGDS scoring, n = {size}", mem.scoring[str(size)]) for size in (n, m)]
    for key, label, row in rows:
        lines.append(f"| {label} | {mb(row['peak_rss_bytes'])} | {mb(row['rss_after_load_bytes'])} | "
                     f"{_fmt(mb(row.get('work_peak_rss_bytes')), 1)} | {mb(mem.increment_bytes[key])} | "
                     f"{row['wall_s']:.1f} |")
    lines += ["", f"Peak ratio {m}/{n}: {mem.ratio:.3f}; ratio of the increments over the baseline: "
                  f"{_fmt(mem.increment_ratio, 3)}."]
    return lines


def _dvc(d: DvcResult | None) -> list[str]:
    if d is None:
        return []
    return ["", f"## 5. DVC ({d.params}, project copy)", "",
            "| step | wall s |", "|---|---:|",
            f"| full `dvc repro` | {d.full_repro_s:.0f} |",
            f"| `dvc repro`, nothing changed (best of {len(d.noop_runs)}) | {d.noop_repro_s:.2f} |",
            f"| `dvc status --json`, nothing changed | {d.status_s:.2f} |",
            f"| `dvc status --json` after select.ratios {d.ratios_change['from']} -> {d.ratios_change['to']} | "
            f"{d.status_after_change_s:.2f} |", "",
            f"Stale after the change ({d.n_stale}): {', '.join(d.stale)}. "
            f"Upstream (prepare/sae/identify/score) stale: {', '.join(d.upstream_stale) or 'none'}."]
