"""The audit's viewer for one set of pairs (results/audit/<set>.html): what a person reads to
judge the concepts before anything is trained. It shows what the audit stage wrote and nothing
of what was planted (the page is built from audit/<set>/ alone, so it can be read blind):

- the concept table: badges (chosen / rejected / both / neither), one-sided firings, the chosen
  share with its Clopper-Pearson CI, the mean pooled difference with its bootstrap CI, both
  tests' BH q, the length-controlled p and split-half agreement; a forest plot of the shares;
- the prompt-conditioned view: topic x concept, the chosen share per cell (BH q over cells);
- per shown concept, pairs it separates most, chosen and rejected side by side, each token
  shaded by the concept's activation;
- the null-calibration panel: the smallest q of each sign-flip replicate against the FDR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from igds.audit.stats import reading_order
from igds.core.pages import BADGE_COLORS, badge, esc, figure, highlight, page, section, table

MORE = 10  # undiscovered concepts listed after the discoveries (the closest by q)


def _share(row) -> str:
    if pd.isna(row["chosen_share"]):
        return "–"
    return f"{row['chosen_share']:.2f} [{row['chosen_share_lo']:.2f}, {row['chosen_share_hi']:.2f}]"


def members_cell(members: str, shown: int = 8) -> str:
    """The first `shown` member features; the whole list on hover."""
    ids = members.split(",")
    if len(ids) <= shown:
        return esc(members)
    return f'<span title="{esc(members)}">{esc(",".join(ids[:shown]))} … (+{len(ids) - shown})</span>'


def _explained(row) -> str:
    """A discovery's fate in igds.audit.stats.explain_away: kept, or explained by a stronger concept."""
    if not row["discovered"]:
        return "–"
    p = f" ({row['p_conditional']:.2g})"
    if row["explained_by"] < 0:
        return "kept" + p
    return f'by <a href="#row{int(row["explained_by"])}">{int(row["explained_by"])}</a>{p}'


def listed_concepts(concepts: pd.DataFrame) -> pd.DataFrame:
    """Kept discoveries, the explained-away ones, then the MORE closest of the rest (igds.audit.stats.reading_order)."""
    ordered = reading_order(concepts)
    found = ordered[ordered["discovered"].astype(bool)]
    return pd.concat([found, ordered[~ordered["discovered"].astype(bool)].head(MORE)])


def concept_table(concepts: pd.DataFrame, shown: Sequence[int]) -> str:
    listed = listed_concepts(concepts)
    rows, keys = [], []
    for c, r in listed.iterrows():
        name = f'<a href="#c{c}">{c}</a>' if c in shown else str(c)
        rows.append([name, badge(r["badge"]), int(r["size"]), members_cell(str(r["members"])), int(r["chosen_only"]),
                     int(r["rejected_only"]), _share(r),
                     f"{r['mean_diff']:+.3f} [{r['mean_diff_lo']:+.3f}, {r['mean_diff_hi']:+.3f}]",
                     f"{r['q_sign']:.2g}", f"{r['q_wilcoxon']:.2g}", f"{r['p_wilcoxon_length']:.2g}",
                     "agree" if r["split_half_agree"] else "disagree", _explained(r)])
        keys.append([c, None, None, None, None, None, r["chosen_share"], r["mean_diff"], r["q_sign"], r["q_wilcoxon"],
                     r["p_wilcoxon_length"], None, r["p_conditional"]])
    return table(rows, ["concept", "badge", "size", "features", "chosen only", "rejected only", "chosen share [CI]",
                        "mean difference [CI]", "q sign", "q Wilcoxon", "p length-controlled", "split halves",
                        "kept or explained by (re-test p)"],
                 "concept-table", keys, [f"row{c}" for c in listed.index])


def forest(concepts: pd.DataFrame):
    import plotly.graph_objects as go  # noqa: PLC0415

    listed = listed_concepts(concepts).dropna(subset=["chosen_share"]).iloc[::-1]
    fig = go.Figure()
    for label, sub in listed.groupby("badge", sort=False):
        fig.add_trace(go.Scatter(
            x=sub["chosen_share"], y=[f"concept {c}" for c in sub.index], mode="markers", name=label,
            marker={"color": BADGE_COLORS.get(label, "#777"), "size": 8},
            error_x={"type": "data", "symmetric": False, "array": sub["chosen_share_hi"] - sub["chosen_share"],
                     "arrayminus": sub["chosen_share"] - sub["chosen_share_lo"]},
            customdata=np.stack([sub["members"].astype(str), sub["q"]], axis=1),
            hovertemplate="%{y}: chosen share %{x:.2f}<br>features %{customdata[0]}<br>q %{customdata[1]:.2g}"))
    fig.add_vline(x=0.5, line_dash="dot", line_color="#999")
    fig.update_layout(height=max(300, 18 * len(listed) + 120), margin={"l": 110, "r": 20, "t": 30, "b": 40},
                      xaxis={"title": "chosen share of one-sided firings", "range": [0, 1]}, legend_title="badge")
    return fig


def topic_view(topics: pd.DataFrame, shown: Sequence[int], fdr: float) -> str:
    import plotly.graph_objects as go  # noqa: PLC0415

    cells = topics[topics["concept"].isin(shown)]
    if cells.empty:
        return '<p class="note">No topic x concept cells to show.</p>'
    grid = cells.pivot(index="topic", columns="concept", values="chosen_share").reindex(columns=list(shown))
    q = cells.pivot(index="topic", columns="concept", values="q_sign").reindex(columns=list(shown))
    counts = cells.assign(n=cells["chosen_only"].astype(str) + "/" + cells["rejected_only"].astype(str)) \
        .pivot(index="topic", columns="concept", values="n").reindex(columns=list(shown))
    text = [[f"{counts.iloc[i, j]}{' *' if q.iloc[i, j] <= fdr else ''}" for j in range(grid.shape[1])]
            for i in range(grid.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=[f"c{c}" for c in grid.columns], y=list(grid.index), zmin=0, zmax=1,
        colorscale=[[0, BADGE_COLORS["rejected"]], [0.5, "#f7f7f7"], [1, BADGE_COLORS["chosen"]]],
        text=text, texttemplate="%{text}", customdata=q.to_numpy(dtype=float),
        hovertemplate="topic %{y}, %{x}: chosen share %{z:.2f} (chosen/rejected only %{text})<br>q %{customdata:.2g}",
        colorbar={"title": "chosen share"}))
    fig.update_layout(height=max(250, 40 * len(grid) + 120), margin={"l": 140, "r": 20, "t": 20, "b": 40})
    return (figure(fig, "topics-plot") +
            f'<p class="note">Cells: chosen-only / rejected-only firings of the concept on pairs of that topic; '
            f"* where the sign test's BH q over every cell is <= {fdr}.</p>")


def examples_view(examples: Sequence[Mapping], concepts: pd.DataFrame) -> str:
    parts = []
    for entry in examples:
        c = int(entry["concept"])
        r = concepts.loc[c]
        parts.append(f'<h3 id="c{c}">Concept {c} {badge(r["badge"])} <span class="note">features {members_cell(str(r["members"]))}'
                     f" · chosen share {_share(r)} · q {r['q']:.2g}</span></h3>")
        if not entry["pairs"]:
            parts.append('<p class="note">It separates no pair.</p>')
        for pair in entry["pairs"]:
            peak = max([*pair["chosen"]["acts"], *pair["rejected"]["acts"], 0.0])
            parts.append(f'<details><summary>pair {esc(pair["pair"])} ({esc(pair["topic"])}): prompt</summary>'
                         f'<div class="side">{esc(pair["prompt"])}</div></details>')
            parts.append('<div class="pair">' + "".join(
                f'<div class="side" data-side="{side}"><h4>{side}</h4>'
                f'{highlight(pair[side]["tokens"], pair[side]["acts"], peak)}</div>' for side in ("chosen", "rejected"))
                + "</div>")
    return "\n".join(parts) or '<p class="note">No concept to show.</p>'


def null_view(null: pd.DataFrame, concepts: pd.DataFrame, fdr: float) -> str:
    import plotly.graph_objects as go  # noqa: PLC0415

    if null.empty:
        return '<p class="note">No sign-flip replicates (audit.stats.null_replicates is 0).</p>'
    with np.errstate(divide="ignore"):
        observed = float(concepts["q"].min()) if len(concepts) else 1.0
    fig = go.Figure(go.Histogram(x=np.log10(np.maximum(null["min_q"], 1e-300)), name="sign-flip replicates",
                                 marker_color="#999", nbinsx=20))
    fig.add_vline(x=np.log10(fdr), line_dash="dash", line_color="#000", annotation_text=f"FDR {fdr}")
    fig.add_vline(x=np.log10(max(observed, 1e-300)), line_color=BADGE_COLORS["chosen"], annotation_text="observed")
    fig.update_layout(height=300, margin={"l": 50, "r": 20, "t": 30, "b": 40}, bargap=0.05,
                      xaxis={"title": "log10 smallest q of a replicate"}, yaxis={"title": "replicates"})
    k = int((null["discoveries"] > 0).sum())
    return (figure(fig, "null-plot") +
            f'<p class="note">Each replicate swaps chosen and rejected in a random half of the pairs and re-runs the '
            f"concept tests: {k} of {len(null)} replicates made a discovery at FDR {fdr} (a calibrated audit: "
            f"about {fdr:.0%} or fewer). The observed audit's smallest q: {observed:.2g}.</p>")


def audit_page(name: str, summary: Mapping, concepts: pd.DataFrame, topics: pd.DataFrame, null: pd.DataFrame,
               examples: Sequence[Mapping], fdr: float) -> str:
    shown = [int(e["concept"]) for e in examples]
    head = (f'<p>{summary["pairs"]} pairs; {summary["features_tested"]} of {summary["features"]} SAE features fired '
            f'often enough to test; {summary["concepts_discovered"]} of {summary["concepts"]} concepts discovered at '
            f'FDR {fdr} ({summary["concepts_chosen"]} leaning chosen, {summary["concepts_rejected"]} rejected). '
            "A concept is a group of features that fire together; its tests treat it as one unit.</p>")
    data = {"set": name, "summary": summary, "shown": shown,
            "concepts": listed_concepts(concepts).reset_index().to_dict("records")}
    return page(f"Preference-data audit: {name}", [
        head,
        section("Concepts", concept_table(concepts, shown), figure(forest(concepts), "forest-plot"), anchor="concepts"),
        section("Topics x concepts (prompt-conditioned)", topic_view(topics, shown, fdr), anchor="topics"),
        section("Chosen and rejected, side by side", examples_view(examples, concepts), anchor="examples"),
        section("Null calibration", null_view(null, concepts, fdr), anchor="null"),
    ], data)
