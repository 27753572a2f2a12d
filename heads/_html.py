"""Self-contained HTML pages: one file, no network, opened from disk.

Hand-made SVG and a few lines of inline JavaScript rather than a plotting library: the
pages need a heatmap, a line chart, a confusion matrix and one scatter plot, which take less
code than embedding a library's multi-megabyte script, and every byte of the page is ours to
escape. Every string that comes from a store (paths, class names, layer names) is untrusted:
it goes through :func:`esc` into HTML, or through :func:`json_script` into a data block that
no browser executes. The page's Content-Security-Policy forbids any network request and runs
only the page's own script (by its hash), so even a string that escaped escaping could not
load or run anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["esc", "json_script", "page", "colour", "category_colour", "svg_heatmap", "svg_lines", "fmt"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.muted{color:#5b6573}.small{font-size:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px;margin:10px 0}
.chosen{border-left:5px solid #2a7de1}
.big{font-size:20px;font-weight:600}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #e3e6eb;padding:3px 8px;text-align:left;white-space:nowrap}
td.wrap{white-space:normal;min-width:180px;max-width:280px}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef1f5;position:sticky;top:0}
th.sort{cursor:pointer;user-select:none}th.sort:after{content:" \\2195";color:#9aa3af}
th.asc:after{content:" \\25B2";color:#2a7de1}th.desc:after{content:" \\25BC";color:#2a7de1}
tr.pick td{background:#e3efff;font-weight:600}
.scroll{max-height:55vh;overflow:auto;border:1px solid #dde1e7;display:inline-block;max-width:100%}
.wide{max-width:100%;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.thumb{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:6px;width:150px;font-size:12px}
.thumb img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block;margin:0 auto 4px;
background:#eee}
.path{word-break:break-all;color:#5b6573}
svg text{font-family:system-ui,sans-serif}
"""


def esc(value: Any) -> str:
    """``value`` as text that is safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def json_script(element_id: str, data: Any) -> str:
    """``data`` as a JSON block (``<script type="application/json">``), which a browser never runs;
    ``<``, ``>`` and ``&`` are escaped so no string can close the element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document: ``body`` (already escaped HTML) and one inline ``script``, allowed by its hash."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "base-uri 'none'; form-action 'none'")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main>"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell (``–`` for NaN or None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# viridis at 9 stops: readable in print and for most colour-blind readers
_VIRIDIS = [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
            (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)]
_CATEGORIES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
               "#dbdb8d", "#9edae5"]


def colour(value: float, low: float, high: float) -> tuple[str, str]:
    """Viridis colour of ``value`` between ``low`` and ``high``, and a readable text colour on it."""
    if value is None or math.isnan(value):
        return "#f0f0f0", "#5b6573"
    t = 0.5 if high <= low else min(max((value - low) / (high - low), 0.0), 1.0)
    x = t * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(_VIRIDIS[i], _VIRIDIS[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}", ("#000" if t > 0.55 else "#fff")


def category_colour(index: int) -> str:
    """The ``index``-th categorical colour (20, then repeating)."""
    return _CATEGORIES[index % len(_CATEGORIES)]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def svg_heatmap(row_labels: Sequence[str], col_labels: Sequence[str], values: Sequence[Sequence[float | None]],
                *, digits: int = 3, low: float | None = None, high: float | None = None,
                row_title: str = "", col_title: str = "", percent_of: Sequence[float] | None = None,
                colour_by: Sequence[Sequence[float]] | None = None, cell: int = 56) -> str:
    """An SVG grid of coloured cells with their values (``percent_of``: per row, the total that
    a cell's percentage of the row is taken from, printed under the value; ``colour_by``: the
    values that colour the cells, if not ``values``). Cells narrower than 40 pixels carry their
    value in their tooltip only."""
    finite = [v for row in values for v in row if v is not None and not math.isnan(v)]
    low = min(finite, default=0.0) if low is None else low
    high = max(finite, default=1.0) if high is None else high
    left = 12 + 7 * min(max((len(str(r)) for r in row_labels), default=4), 34)
    top = 24 + round(4.5 * min(max((len(str(c)) for c in col_labels), default=4), 28))  # labels turned 40 degrees
    show_text = cell >= 40
    height_cell = cell + 8 if percent_of is not None and show_text else cell
    width = max(left + cell * len(col_labels) + 8, 24 + 6 * len(f"rows: {row_title}, columns: {col_title}"))
    height = top + height_cell * len(row_labels) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for j, label in enumerate(col_labels):
        x, y = left + j * cell + cell / 2, top - 6
        out.append(f'<text x="{x:.1f}" y="{y}" font-size="11" transform="rotate(-40 {x:.1f} {y})">'
                   f"<title>{esc(label)}</title>{esc(_clip(str(label), 28))}</text>")
    for i, label in enumerate(row_labels):
        y = top + i * height_cell + height_cell / 2 + 4
        out.append(f'<text x="{left - 6}" y="{y:.1f}" font-size="11" text-anchor="end">'
                   f"<title>{esc(label)}</title>{esc(_clip(str(label), 34))}</text>")
        for j, value in enumerate(values[i]):
            shade = value if colour_by is None else colour_by[i][j]
            fill, ink = colour(float("nan") if shade is None else shade, low, high)
            x, y0 = left + j * cell, top + i * height_cell
            text = fmt(value, digits) if not isinstance(value, int) else str(value)
            total = None if percent_of is None else percent_of[i]
            share = "" if total is None else f"{100 * value / total:.0f}%" if total else "–"
            tip = text + (f" ({share} of the row)" if share else "")
            out.append(f'<rect x="{x}" y="{y0}" width="{cell - 1}" height="{height_cell - 1}" fill="{fill}">'
                       f"<title>{esc(row_labels[i])} / {esc(col_labels[j])}: {esc(tip)}</title></rect>")
            if not show_text:
                continue
            if percent_of is None:
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y0 + height_cell / 2 + 4:.1f}" font-size="11" '
                           f'text-anchor="middle" fill="{ink}" pointer-events="none">{esc(text)}</text>')
            else:
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y0 + height_cell / 2 - 2:.1f}" font-size="12" '
                           f'font-weight="600" text-anchor="middle" fill="{ink}" pointer-events="none" '
                           f'class="count">{esc(text)}</text>'
                           f'<text x="{x + cell / 2:.1f}" y="{y0 + height_cell / 2 + 12:.1f}" font-size="10" '
                           f'text-anchor="middle" fill="{ink}" pointer-events="none">{share}</text>')
    if row_title or col_title:
        out.append(f'<text x="4" y="12" font-size="11" fill="#5b6573">rows: {esc(row_title)}, '
                   f'columns: {esc(col_title)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_lines(x_labels: Sequence[str], series: dict[str, Sequence[float | None]], *, y_label: str = "",
              width: int = 720, height: int = 300) -> str:
    """An SVG line chart: one line (with dots) per series over the categorical ``x_labels``."""
    finite = [v for vs in series.values() for v in vs if v is not None and not math.isnan(v)]
    low, high = min(finite, default=0.0), max(finite, default=1.0)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    left, right, top = 56, 150, 14
    bottom = 24 + round(3.6 * min(max((len(str(x)) for x in x_labels), default=4), 26))  # labels turned 35 degrees
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(x_labels), 1)

    def px(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#dde1e7"/>']
    for k in range(5):
        v = low + (high - low) * (k + 0.5) / 5
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eef1f5"/>'
                   f'<text x="{left - 6}" y="{py(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3f}</text>')
    for i, label in enumerate(x_labels):
        x, y = px(i), top + plot_h + 12
        out.append(f'<text x="{x:.1f}" y="{y}" font-size="10" text-anchor="end" transform="rotate(-35 {x:.1f} {y})">'
                   f"<title>{esc(label)}</title>{esc(_clip(str(label), 26))}</text>")
    if y_label:
        out.append(f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
                   f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{esc(y_label)}</text>')
    for k, (name, values) in enumerate(series.items()):
        colour_k = category_colour(k)
        points = [(px(i), py(v), v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour_k}" stroke-width="2"/>')
        for x, y, v in points:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour_k}">'
                       f"<title>{esc(name)}: {v:.4f}</title></circle>")
        ly = top + 8 + 16 * k
        out.append(f'<rect x="{width - right + 12}" y="{ly - 8}" width="10" height="10" fill="{colour_k}"/>'
                   f'<text x="{width - right + 26}" y="{ly + 1}" font-size="11">{esc(_clip(str(name), 20))}</text>')
    out.append("</svg>")
    return "".join(out)


#: Sorts any ``table.sortable`` by a click on a header (numbers by ``data-v``, else text).
SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.classList.add('sort');
    th.addEventListener('click', function () {
      var desc = !th.classList.contains('desc');
      Array.prototype.forEach.call(heads, function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(desc ? 'desc' : 'asc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var u = x.getAttribute('data-v'), v = y.getAttribute('data-v'), c;
        if (u !== null && v !== null) {
          var fu = parseFloat(u), fv = parseFloat(v);
          if (isNaN(fu) || isNaN(fv)) return isNaN(fu) - isNaN(fv);  /* no value: last either way */
          c = fu - fv;
        } else {
          c = x.textContent.localeCompare(y.textContent);
        }
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
