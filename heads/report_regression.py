"""Write a regression bench's results: ``results.csv``, ``results.json``, ``report.md`` and ``report.html``.

The page shows the chosen cell (the best R², or the one ``--select`` chose), every cell sorted
by R² with its MAE and RMSE, and the chosen cell's predicted-vs-true scatter of held-out rows
with its residuals' spread. The classification report (:mod:`heads.report`) is left as it is.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from featurestore.utils import utc_timestamp, write_bytes_atomic

from ._html import SORT_SCRIPT, esc, fmt, page
from .report import _evaluation, _table
from .report_html import weights_label

__all__ = ["write_regression_report"]

_COLUMNS = ["store", "layer", "fusion", "head", "method", "r2", "mae", "rmse", "fit_seconds", "predict_ms_per_1000",
            "n_train", "n_test", "evaluation", "layers"]


def write_regression_report(output: Path, stores, config, results, *, load_seconds: float, total_seconds: float,
                            selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every report file of a regression bench into ``output`` and return the JSON document."""
    output.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    with open(output / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    best = max(results, key=lambda r: r.metrics["r2"])
    if selection and selection.get("scatter"):
        focus = {"store": selection["store"], "layer": selection["layer"], "head": selection["head"],
                 "method": selection["method"], **selection["test_metrics"], "scatter": selection["scatter"],
                 "why": f"Chosen by --select: the best CV R² ({selection['cv_r2']:.4f}) of {selection['cells']} cells "
                        "on the training split, refitted and scored once on the test split."}
    else:
        focus = {"store": best.cell.store, "layer": best.cell.layer_label, "head": best.cell.head,
                 "method": best.method, **best.metrics, "scatter": best.extra,
                 "why": f"The best R² ({best.evaluation})."}
    document = {
        "created": utc_timestamp(), "task_type": "regression", "config": asdict(config),
        "stores": [{"name": s.name, "path": s.path, "backbone": s.backbone, "fingerprint": s.fingerprint,
                    "random_init": s.random_init, "weights_source": s.weights_source, "layers": s.layers,
                    "rows": int(len(s.y)), "task": s.task, "evaluation": _evaluation(s, config)} for s in stores],
        "results": rows,
        "timing": {"load_seconds": load_seconds, "total_seconds": total_seconds,
                   "load_fraction": load_seconds / total_seconds if total_seconds else 0.0},
        "best": best.row(), "selection": selection, "focus": focus,
    }
    (output / "results.json").write_text(json.dumps(document, indent=1, default=str))
    ranked = sorted(rows, key=lambda r: -r["r2"])
    markdown = ["# Bench report (regression)", "",
                f"{len(rows)} cells on task {stores[0].task!r}; features loaded in {load_seconds:.2f} s of "
                f"{total_seconds:.1f} s. No image was decoded to fit or score a head.", "",
                f"Chosen: {focus['store']} / {focus['layer']} / {focus['head']} ({focus['method']}): "
                f"R² {focus['r2']:.4f}, MAE {focus['mae']:.4g}, RMSE {focus['rmse']:.4g}. {focus['why']}", "",
                "## All results (sorted by R²)", "",
                _table(["store", "layer", "head", "method", "R²", "MAE", "RMSE", "fit s", "evaluation"],
                       [[r["store"], r["layer"], r["head"], r["method"], r["r2"], r["mae"], r["rmse"],
                         r["fit_seconds"], r["evaluation"]] for r in ranked])]
    (output / "report.md").write_text("\n".join(markdown) + "\n")
    write_bytes_atomic(output / "report.html", _html(document, ranked, focus).encode())
    return document


def _html(document: dict[str, Any], ranked: list[dict[str, Any]], focus: dict[str, Any]) -> str:
    columns = [("store", False), ("layer", False), ("head", False), ("r2", True), ("mae", True), ("rmse", True),
               ("fit_seconds", True), ("method", False), ("n_train", True), ("n_test", True), ("evaluation", False)]
    head = "".join(f"<th class='{'num' if numeric else ''}'>{esc('R²' if key == 'r2' else key)}</th>"
                   for key, numeric in columns)
    body = "".join("<tr>" + "".join(
        f"<td class='num' data-v='{float(r[key])!r}'>{esc(fmt(r[key]))}</td>" if numeric and not
        (isinstance(r[key], float) and math.isnan(r[key])) else f"<td>{esc(fmt(r[key]))}</td>"
        for key, numeric in columns) + "</tr>" for r in ranked)
    stores = "".join(f"<tr><td>{esc(s['name'])}</td><td>{esc(s['backbone'])}</td><td>{esc(weights_label(s))}</td>"
                     f"<td class='num'>{s['rows']}</td><td>{esc(s['evaluation'])}</td></tr>" for s in document["stores"])
    timing = document["timing"]
    return page("Bench report (regression)", (
        f"<h1>Bench report: regression</h1><p class='muted small'>{len(ranked)} cells; features loaded in "
        f"{timing['load_seconds']:.2f} s of {timing['total_seconds']:.1f} s. No image was decoded to fit or score "
        "a head.</p>"
        f"<div class='card chosen' id='chosen'><div class='muted small'>Chosen cell</div>"
        f"<div class='big'>{esc(focus['store'])} / {esc(focus['layer'])} / {esc(focus['head'])}</div>"
        f"<div>{esc(focus['method'])}: R² {fmt(focus['r2'])}, MAE {fmt(focus['mae'])}, RMSE {fmt(focus['rmse'])}</div>"
        f"<div class='muted'>{esc(focus['why'])}</div></div>"
        "<h2>All results</h2><p class='muted small'>Sorted by R²; click a column to sort by it.</p>"
        f"<div class='scroll'><table class='sortable' id='results'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
        "<h2>Stores</h2><table id='stores'><thead><tr><th>store</th><th>backbone</th><th>weights</th>"
        f"<th class='num'>rows</th><th>evaluation</th></tr></thead><tbody>{stores}</tbody></table>"
        + _scatter(focus.get("scatter") or {})), SORT_SCRIPT)


def _scatter(pairs: dict[str, list[float]], size: int = 360, pad: int = 40) -> str:
    """The chosen cell's held-out predictions against the truth (an SVG, the diagonal dashed), and the
    residuals' mean and spread."""
    true, predicted = pairs.get("true") or [], pairs.get("predicted") or []
    if not true:
        return ""
    low, high = min(true + predicted), max(true + predicted)
    span = (high - low) or 1.0

    def at(v: float, flip: bool = False) -> float:
        x = pad + (v - low) / span * (size - 2 * pad)
        return size - x if flip else x

    dots = "".join(f"<circle cx='{at(t):.1f}' cy='{at(p, True):.1f}' r='2' fill='#1f77b4' fill-opacity='0.5'/>"
                   for t, p in zip(true, predicted))
    residuals = [p - t for t, p in zip(true, predicted)]
    mean = sum(residuals) / len(residuals)
    spread = math.sqrt(sum((r - mean) ** 2 for r in residuals) / len(residuals))
    return ("<h2>Predicted vs true</h2>"
            f"<p class='muted small'>{len(true)} held-out rows of the chosen cell; residuals (predicted − true): "
            f"mean {mean:.4g}, standard deviation {spread:.4g}.</p>"
            f"<svg id='scatter' width='{size}' height='{size}' viewBox='0 0 {size} {size}' role='img'>"
            f"<line x1='{pad}' y1='{size - pad}' x2='{size - pad}' y2='{pad}' stroke='#888' stroke-dasharray='4'/>"
            f"{dots}<text x='{size / 2}' y='{size - 8}' text-anchor='middle' font-size='12'>true "
            f"({esc(fmt(low, 3))} … {esc(fmt(high, 3))})</text>"
            f"<text x='12' y='{size / 2}' font-size='12' transform='rotate(-90 12 {size / 2})' "
            "text-anchor='middle'>predicted</text></svg>")
