"""Self-contained HTML pages: the audit's viewer (results/audit/<set>.html, igds.audit.view) and
IGDS's feature cards (features/cards.html, igds.core.cards). The data are embedded (a JSON block a
script can read back) and plotly.js is inlined once, so a page opens offline, from a file or a
git checkout, and shows what it showed when it was written. No io: callers write the text.

The pieces are plain functions returning HTML strings: `page` wraps sections, `table` renders
rows (click a header to sort), `figure` a plotly figure without its library, `highlight` a
text's tokens shaded by an activation, `badge` a concept's side."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence

esc = html.escape

BADGE_COLORS = {"chosen": "#1b7837", "rejected": "#b2182b", "both": "#5e3c99", "neither": "#777777"}

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } th, td { padding: 2px 8px; border-bottom: 1px solid #eee; }
th { cursor: pointer; background: #f6f6f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { color: #fff; border-radius: 3px; padding: 0 6px; font-size: .85em; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; margin: .5em 0 1.5em; }
.side { border: 1px solid #ddd; border-radius: 4px; padding: .5em; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12.5px; }
.side h4 { margin: 0 0 .3em; font-family: system-ui, sans-serif; }
.tok { border-radius: 2px; } .note { color: #555; }
"""

_SORT = """
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows), up = th.dataset.up !== "1";
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const x = parseFloat(t); return isNaN(x) ? t : x; };
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
  th.dataset.up = up ? "1" : "0"; rows.forEach(r => body.appendChild(r));
}));
"""


def page(title: str, sections: Sequence[str], data: Mapping | None = None, plots: bool = True) -> str:
    """A whole page: `sections` in order, `data` embedded as JSON (id="page-data"), plotly.js
    inlined when `plots`."""
    head = [f"<title>{esc(title)}</title>", '<meta charset="utf-8">', f"<style>{_STYLE}</style>"]
    if plots:
        from plotly.offline import get_plotlyjs  # noqa: PLC0415

        head.append(f'<script type="text/javascript">{get_plotlyjs()}</script>')
    payload = json.dumps(_plain(data or {}), default=str, allow_nan=False).replace("</", "<\\/")
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", *head, "</head>", "<body>",
                      f"<h1>{esc(title)}</h1>", *sections,
                      f'<script type="application/json" id="page-data">{payload}</script>',
                      f"<script>{_SORT}</script>", "</body>", "</html>"]) + "\n"


def _plain(value):
    """JSON's values: NaN and infinities as null (JSON.parse refuses them), numpy scalars as numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def section(title: str, *parts: str, anchor: str | None = None) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def badge(label: str) -> str:
    return f'<span class="badge" style="background:{BADGE_COLORS.get(label, "#777")}">{esc(label)}</span>'


def table(rows: Sequence[Sequence[str | float | int]], header: Sequence[str], table_id: str,
          sort_values: Sequence[Sequence[float | None]] | None = None, row_ids: Sequence[str] | None = None) -> str:
    """A sortable table. A cell is HTML (escape text with `esc`) or a number (right-aligned);
    `sort_values`, where given, sorts a column by a value other than its text; `row_ids` name
    the rows (link targets)."""
    out = [f'<table class="sortable" id="{esc(table_id)}"><thead><tr>',
           *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            v = sort_values[i][j] if sort_values is not None else None
            attr = f' data-v="{v}"' if v is not None else ""
            if isinstance(cell, (int, float)):
                cells.append(f'<td class="num"{attr}>{cell}</td>')
            else:
                cells.append(f"<td{attr}>{cell}</td>")
        ident = f' id="{esc(row_ids[i])}"' if row_ids is not None else ""
        out.append(f"<tr{ident}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def figure(fig, div_id: str) -> str:
    """A plotly figure as a div; the page carries the library."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def highlight(tokens: Sequence[str], acts: Sequence[float], peak: float | None = None) -> str:
    """The tokens, each shaded by its activation over `peak` (default: the largest here); the
    value shows on hover. Tokens are escaped."""
    top = peak if peak is not None and peak > 0 else max([a for a in acts if a > 0], default=1.0)
    out = []
    for token, act in zip(tokens, acts):
        text = esc(token)
        if act > 0:
            alpha = min(1.0, act / top)
            out.append(f'<span class="tok" style="background:rgba(255,140,0,{alpha:.2f})" title="{act:.3g}" '
                       f'data-act="{act:.4g}">{text}</span>')
        else:
            out.append(text)
    return "".join(out)
