"""Write the results of a bench of a regression or multilabel task: ``results.csv``, ``results.json``,
``report.md`` and ``report.html``.

The page shows the chosen cell (the best by the type's primary metric, R² or mean average
precision, or the one ``--select`` chose), every cell sorted by it with the type's other metrics,
and for the chosen cell a regression's predicted-vs-true scatter of held-out rows with its
residuals' spread, or a multilabel task's average precision per label. The classification report
(:mod:`heads.report`) is left as it is.
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

__all__ = ["write_task_report", "write_tasks_summary", "METRICS"]

#: Each task type's metrics (key, title), its primary one first.
METRICS = {"regression": [("r2", "R²"), ("mae", "MAE"), ("rmse", "RMSE")],
           "multilabel": [("map", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"),
                          ("subset_accuracy", "subset acc.")]}


def write_task_report(output: Path, stores, config, results, *, load_seconds: float, total_seconds: float,
                      selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every report file of a regression or multilabel bench into ``output`` and return the JSON document."""
    task_type = stores[0].task_type
    metrics = METRICS[task_type]
    key, title = metrics[0]
    output.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    columns = ["store", "layer", "fusion", "head", "method", *(k for k, _ in metrics), "fit_seconds",
               "predict_ms_per_1000", "n_train", "n_test", "evaluation", "layers"]
    with open(output / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    best = max(results, key=lambda r: r.metrics[key])
    if selection and selection.get("extra"):
        focus = {"store": selection["store"], "layer": selection["layer"], "head": selection["head"],
                 "method": selection["method"], **selection["test_metrics"], "extra": selection["extra"],
                 "why": f"Chosen by --select: the best CV {title} ({selection[f'cv_{key}']:.4f}) of "
                        f"{selection['cells']} cells on the training split, refitted and scored once on the test split."}
    else:
        focus = {"store": best.cell.store, "layer": best.cell.layer_label, "head": best.cell.head,
                 "method": best.method, **best.metrics, "extra": best.extra,
                 "why": f"The best {title} ({best.evaluation})."}
    focus["scores_text"] = ", ".join(f"{t} {fmt(focus.get(k))}" for k, t in metrics)
    document = {
        "created": utc_timestamp(), "task_type": task_type, "config": asdict(config),
        "stores": [{"name": s.name, "path": s.path, "backbone": s.backbone, "fingerprint": s.fingerprint,
                    "random_init": s.random_init, "weights_source": s.weights_source, "layers": s.layers,
                    "rows": int(len(s.y)), "task": s.task, "evaluation": _evaluation(s, config)} for s in stores],
        "results": rows,
        "timing": {"load_seconds": load_seconds, "total_seconds": total_seconds,
                   "load_fraction": load_seconds / total_seconds if total_seconds else 0.0},
        "best": best.row(), "selection": selection, "focus": focus,
    }
    (output / "results.json").write_text(json.dumps(document, indent=1, default=str))
    ranked = sorted(rows, key=lambda r: -r[key] if not math.isnan(r[key]) else math.inf)
    markdown = [f"# Bench report ({task_type})", "",
                f"{len(rows)} cells on task {stores[0].task!r}; features loaded in {load_seconds:.2f} s of "
                f"{total_seconds:.1f} s. No image was decoded to fit or score a head.", "",
                f"Chosen: {focus['store']} / {focus['layer']} / {focus['head']} ({focus['method']}): "
                f"{focus['scores_text']}. {focus['why']}", "",
                f"## All results (sorted by {title})", "",
                _table(["store", "layer", "head", "method", *(t for _, t in metrics), "fit s", "evaluation"],
                       [[r["store"], r["layer"], r["head"], r["method"], *(r[k] for k, _ in metrics),
                         r["fit_seconds"], r["evaluation"]] for r in ranked])]
    (output / "report.md").write_text("\n".join(markdown) + "\n")
    classes = list(stores[0].classes)
    write_bytes_atomic(output / "report.html", _html(document, ranked, focus, metrics, classes).encode())
    return document


def _html(document: dict[str, Any], ranked: list[dict[str, Any]], focus: dict[str, Any],
          metrics: list[tuple[str, str]], classes: list[str]) -> str:
    titles = dict(metrics)
    columns = [("store", False), ("layer", False), ("head", False), *((k, True) for k, _ in metrics),
               ("fit_seconds", True), ("method", False), ("n_train", True), ("n_test", True), ("evaluation", False)]
    head = "".join(f"<th class='{'num' if numeric else ''}'>{esc(titles.get(key, key))}</th>"
                   for key, numeric in columns)
    body = "".join("<tr>" + "".join(
        f"<td class='num' data-v='{float(r[key])!r}'>{esc(fmt(r[key]))}</td>" if numeric and not
        (isinstance(r[key], float) and math.isnan(r[key])) else f"<td>{esc(fmt(r[key]))}</td>"
        for key, numeric in columns) + "</tr>" for r in ranked)
    stores = "".join(f"<tr><td>{esc(s['name'])}</td><td>{esc(s['backbone'])}</td><td>{esc(weights_label(s))}</td>"
                     f"<td class='num'>{s['rows']}</td><td>{esc(s['evaluation'])}</td></tr>" for s in document["stores"])
    timing = document["timing"]
    task_type = document["task_type"]
    extra = focus.get("extra") or {}
    return page(f"Bench report ({task_type})", (
        f"<h1>Bench report: {esc(task_type)}</h1><p class='muted small'>{len(ranked)} cells; features loaded in "
        f"{timing['load_seconds']:.2f} s of {timing['total_seconds']:.1f} s. No image was decoded to fit or score "
        "a head.</p>"
        f"<div class='card chosen' id='chosen'><div class='muted small'>Chosen cell</div>"
        f"<div class='big'>{esc(focus['store'])} / {esc(focus['layer'])} / {esc(focus['head'])}</div>"
        f"<div>{esc(focus['method'])}: {esc(focus['scores_text'])}</div>"
        f"<div class='muted'>{esc(focus['why'])}</div></div>"
        f"<h2>All results</h2><p class='muted small'>Sorted by {esc(metrics[0][1])}; click a column to sort by it.</p>"
        f"<div class='scroll'><table class='sortable' id='results'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
        "<h2>Stores</h2><table id='stores'><thead><tr><th>store</th><th>backbone</th><th>weights</th>"
        f"<th class='num'>rows</th><th>evaluation</th></tr></thead><tbody>{stores}</tbody></table>"
        + _scatter(extra) + _label_ap(extra.get("label_ap"), classes)), SORT_SCRIPT)


def _label_ap(ap: list[float | None] | None, classes: list[str]) -> str:
    """The chosen cell's average precision per label, on its held-out rows."""
    if not ap:
        return ""
    rows = "".join(f"<tr><td>{esc(name)}</td><td class='num'>{esc(fmt(value))}</td></tr>"
                   for name, value in zip(classes, ap))
    return ("<h2>Average precision per label</h2><p class='muted small'>The chosen cell's held-out rows; – for a label "
            "no held-out row has.</p><table id='label-ap'><thead><tr><th>label</th><th class='num'>AP</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


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


_PRIMARY = {"classification": ("accuracy", "accuracy"), "regression": ("r2", "R²"), "multilabel": ("map", "mAP")}


def write_tasks_summary(output: Path, documents: dict[str, dict[str, Any]], *, load_seconds: float,
                        total_seconds: float) -> dict[str, Any]:
    """The summary of a bench of several tasks over the same features: each task's best cell by its type's
    primary metric, linking to the task's own report (``<task>/report.html``). Returns the summary document."""
    rows = []
    for task, doc in documents.items():
        task_type = doc.get("task_type", "classification")
        key, title = _PRIMARY[task_type]
        best = doc["best"]
        rows.append({"task": task, "task_type": task_type, "metric": key, "metric_title": title,
                     "score": best[key], "store": best["store"], "layer": best["layer"], "head": best["head"],
                     "method": best["method"], "evaluation": best["evaluation"], "cells": len(doc["results"]),
                     "report": f"{task}/report.html"})
    summary = {"created": utc_timestamp(), "timing": {"load_seconds": load_seconds, "total_seconds": total_seconds},
               "summary": rows, "tasks": documents}
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (output / "report.md").write_text("\n".join([
        "# Bench report: several tasks", "",
        f"{len(rows)} tasks over the same features, loaded once in {load_seconds:.2f} s of {total_seconds:.1f} s.", "",
        _table(["task", "type", "best cell", "metric", "score", "report"],
               [[r["task"], r["task_type"], f"{r['store']} / {r['layer']} / {r['head']}", r["metric_title"], r["score"],
                 r["report"]] for r in rows])]) + "\n")
    body = "".join(f"<tr><td><a href='{esc(r['report'])}'>{esc(r['task'])}</a></td><td>{esc(r['task_type'])}</td>"
                   f"<td>{esc(r['store'])} / {esc(r['layer'])} / {esc(r['head'])}</td><td>{esc(r['metric_title'])}</td>"
                   f"<td class='num'>{esc(fmt(r['score']))}</td><td>{esc(r['evaluation'])}</td></tr>" for r in rows)
    write_bytes_atomic(output / "report.html", page("Bench report: several tasks", (
        f"<h1>Bench report: several tasks</h1><p class='muted small'>{len(rows)} tasks over the same features, "
        f"loaded once in {load_seconds:.2f} s of {total_seconds:.1f} s. No image was decoded to fit or score a "
        "head.</p><table id='tasks'><thead><tr><th>task</th><th>type</th><th>best cell</th><th>metric</th>"
        f"<th class='num'>score</th><th>evaluation</th></tr></thead><tbody>{body}</tbody></table>")).encode())
    return summary
