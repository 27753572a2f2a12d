"""``report.html``: a bench's results as one self-contained page (see :mod:`heads._html`).

The first screen shows the chosen cell (and why it was chosen) above the sortable results
table; then the stores' provenance, a layers x heads heatmap and accuracy by layer per store,
the chosen cell's confusion matrix (counts and row percentages), its per-class precision,
recall and F1, and its most confidently wrong held-out images.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ._html import SORT_SCRIPT, esc, fmt, page, svg_heatmap, svg_lines

__all__ = ["render_report", "TASK_SECTIONS"]

#: Further sections, each ``(document, focus) -> HTML or None`` (None: nothing to show), drawn after
#: the classification sections: a few-shot bench's accuracy against shots. (Regression and
#: multilabel benches write their own page, :mod:`heads.report_tasks`.)
TASK_SECTIONS: list[Callable[[dict[str, Any], dict[str, Any]], str | None]] = []


def render_report(document: dict[str, Any], focus: dict[str, Any], thumbnails: Any, score_label: str) -> str:
    """The page's HTML.

    Parameters
    ----------
    document : dict
        The ``results.json`` document.
    focus : dict
        The chosen cell: ``store``, ``layer``, ``head``, ``method``, ``accuracy``, ``evaluation``,
        ``why``, ``classes``, ``confusion``, ``wrong`` (``path``, ``true``, ``predicted``,
        ``confidence`` each) and ``wrong_total``.
    thumbnails : featurestore.thumbnails.Thumbnails
        Thumbnails of ``focus["wrong"]``'s paths, by position.
    score_label : str
        What the results' accuracy column is (``test accuracy``, ``CV accuracy``).
    """
    sections = [_summary(document, focus, score_label), _results(document, focus, score_label),
                _stores(document), _heatmaps(document, score_label), _by_layer(document, score_label),
                _attention(document), _confusion(focus), _per_class(focus), _wrong(focus, thumbnails)]
    sections += [section(document, focus) for section in TASK_SECTIONS]
    body = "\n".join(s for s in sections if s)
    return page("Bench report", body, SORT_SCRIPT)


def _summary(document: dict[str, Any], focus: dict[str, Any], score_label: str) -> str:
    timing = document["timing"]
    n_cells = len(document["results"])
    return (f"<h1>Bench report</h1><p class='muted small'>{n_cells} cells on {len(document['stores'])} "
            f"store(s); features loaded in {timing['load_seconds']:.2f} s of {timing['total_seconds']:.1f} s. "
            f"Created {esc(document['created'])}. No image was decoded to fit or score a head.</p>"
            f"<div class='card chosen' id='chosen'><div class='muted small'>Chosen cell</div>"
            f"<div class='big'>{esc(focus['store'])} / {esc(focus['layer'])} / {esc(focus['head'])}</div>"
            f"<div>{esc(focus['method'])}: {esc(focus['score_text'])}</div>"
            f"<div class='muted'>{esc(focus['why'])}</div></div>")


def _results(document: dict[str, Any], focus: dict[str, Any], score_label: str) -> str:
    columns = [("store", "store", False), ("layer", "layer", False), ("head", "head", False),
               ("accuracy", score_label, True), ("balanced_accuracy", "bal. acc.", True), ("macro_f1", "macro-F1", True),
               ("log_loss", "log-loss", True), ("fit_seconds", "fit s", True),
               ("predict_ms_per_1000", "predict ms/1k", True), ("method", "method", False),
               ("n_train", "train rows", True), ("n_test", "scored rows", True), ("evaluation", "evaluation", False)]
    rows = sorted(document["results"], key=lambda r: -r["accuracy"])
    head = "".join(f"<th class='{'num' if numeric else ''}'>{esc(title)}</th>" for _, title, numeric in columns)
    body = []
    for r in rows:
        pick = (r["store"], r["layer"], r["head"]) == (focus["store"], focus["layer"], focus["head"])
        cells = []
        for key, _, numeric in columns:
            value = r.get(key)
            if numeric:
                number = float(value) if value is not None else math.nan
                digits = 2 if key in ("fit_seconds", "predict_ms_per_1000") else 4
                shown = fmt(number, digits) if isinstance(value, float) else fmt(value)
                cells.append(f"<td class='num' data-v='{'NaN' if math.isnan(number) else number!r}'>{esc(shown)}</td>")
            else:
                cells.append(f"<td class='{'wrap' if key == 'method' else ''}'>{esc(value)}</td>")
        body.append(f"<tr{' class=pick' if pick else ''}>" + "".join(cells) + "</tr>")
    return (f"<h2>All results</h2><p class='muted small'>{len(rows)} cells, sorted by {esc(score_label)}; click a "
            f"column to sort by it. The chosen cell is highlighted.</p>"
            f"<div class='scroll'><table class='sortable' id='results'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def weights_label(store: dict[str, Any]) -> str:
    """The Stores table's weights column, from the spec's weights source."""
    source = store.get("weights_source", "")
    if store["random_init"]:
        return "RANDOM INIT"
    if source == "none":  # the pixels baseline, features written with write_arrays
        return "none"
    if source == "module":  # a user's nn.Module, exported with whatever weights it held
        return "the module's own"
    return "pretrained"


def _stores(document: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{esc(s['name'])}</td><td>{esc(s['backbone'])}</td><td>{esc(weights_label(s))}</td>"
        f"<td>{esc(', '.join(s['layers']))}</td><td class='num'>{s['rows']}</td><td>{esc(s['evaluation'])}</td>"
        f"<td class='num'>{len(s['classes'])}</td><td><code>{esc(s['fingerprint'][:16])}</code></td>"
        f"<td class='path'>{esc(s['path'])}</td></tr>" for s in document["stores"])
    return ("<h2>Stores</h2><table id='stores'><thead><tr><th>store</th><th>backbone</th><th>weights</th>"
            "<th>layers</th><th class='num'>rows</th><th>evaluation</th><th class='num'>classes</th>"
            f"<th>fingerprint</th><th>path</th></tr></thead><tbody>{rows}</tbody></table>")


def _grid(document: dict[str, Any]) -> dict[str, tuple[list[str], list[str], dict[tuple[str, str], float]]]:
    by_store: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in document["results"]:
        by_store[r["store"]].append(r)
    return {store: (list(dict.fromkeys(r["layer"] for r in rs)), list(dict.fromkeys(r["head"] for r in rs)),
                    {(r["layer"], r["head"]): r["accuracy"] for r in rs}) for store, rs in by_store.items()}


def _heatmaps(document: dict[str, Any], score_label: str) -> str:
    all_scores = [r["accuracy"] for r in document["results"] if not math.isnan(r["accuracy"])]
    low, high = min(all_scores, default=0.0), max(all_scores, default=1.0)
    parts = [f"<h2>Layers x heads</h2><p class='muted small'>{esc(score_label)} of every cell; one colour scale "
             f"for every store ({low:.3f} to {high:.3f}).</p>"]
    for store, (layers, heads, scores) in _grid(document).items():
        values = [[scores.get((layer, h)) for h in heads] for layer in layers]
        parts.append(f"<h3>{esc(store)}</h3>" + svg_heatmap(layers, heads, values, low=low, high=high,
                                                             row_title="layer", col_title="head"))
    return "".join(parts)


def _by_layer(document: dict[str, Any], score_label: str) -> str:
    parts = []
    for store, (layers, heads, scores) in _grid(document).items():
        if len(layers) < 2:
            continue
        series = {h: [scores.get((layer, h)) for layer in layers] for h in heads}
        parts.append(f"<h3>{esc(store)}</h3>" + svg_lines(layers, series, y_label=score_label))
    return f"<h2>{esc(score_label.capitalize())} by layer</h2>" + "".join(parts) if parts else ""


def _attention(document: dict[str, Any]) -> str:
    if not document.get("attention"):
        return ""
    rows = "".join(f"<tr><td>{esc(name)}</td><td>" + ", ".join(f"{esc(k)} {v:.3f}" for k, v in weights.items())
                   + "</td></tr>" for name, weights in document["attention"].items())
    return ("<h2>Attention fusion: mean weight per layer</h2><table><thead><tr><th>store / head</th>"
            f"<th>weights</th></tr></thead><tbody>{rows}</tbody></table>")


def _confusion(focus: dict[str, Any]) -> str:
    matrix = focus["confusion"]
    classes = focus["classes"]
    totals = [sum(row) for row in matrix]
    # coloured by the row share, so a small class's errors show as clearly as a large one's
    shares = [[(v / t if t else math.nan) for v in row] for row, t in zip(matrix, totals)]
    svg = svg_heatmap(classes, classes, matrix, low=0.0, high=1.0, row_title="true", col_title="predicted",
                      percent_of=totals, colour_by=shares, cell=max(12, min(58, 1100 // max(len(classes), 1))))
    return (f"<h2>Confusion matrix: {esc(focus['store'])} / {esc(focus['layer'])} / {esc(focus['head'])}</h2>"
            f"<p class='muted small'>{esc(focus['evaluation'])}: counts, and under each its share of the true "
            f"class's row (with many classes, in each cell's tooltip). {sum(totals)} rows.</p>"
            f"<div id='confusion' class='wide'>{svg}</div>")


def _per_class(focus: dict[str, Any]) -> str:
    matrix = focus["confusion"]
    classes = focus["classes"]
    rows = []
    for j, name in enumerate(classes):
        tp = matrix[j][j]
        support = sum(matrix[j])
        predicted = sum(row[j] for row in matrix)
        precision = tp / predicted if predicted else math.nan
        recall = tp / support if support else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
        cells = [f"<td>{esc(name)}</td>"] + [
            f"<td class='num' data-v='{'NaN' if math.isnan(v) else v!r}'>{fmt(v, 3)}</td>"
            for v in (precision, recall, f1)] + [f"<td class='num' data-v='{support}'>{support}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Per class</h2><p class='muted small'>Of the chosen cell's scored rows; click a column to "
            "sort.</p><table class='sortable' id='per-class'><thead><tr><th>class</th><th class='num'>precision"
            "</th><th class='num'>recall</th><th class='num'>F1</th><th class='num'>support</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _wrong(focus: dict[str, Any], thumbnails: Any) -> str:
    wrong = focus["wrong"]
    title = "<h2>Most confidently wrong</h2>"
    if not wrong:
        return title + "<p class='muted'>The chosen cell predicted every scored row correctly.</p>"
    ranked = wrong[0]["confidence"] is not None
    intro = ("The wrong predictions the head was surest of" if ranked
             else "Wrong predictions (this head gives no probabilities, so they are in row order)")
    shown = [(i, w) for i, w in enumerate(wrong) if i in thumbnails.images]
    skipped = []
    if thumbnails.missing:
        skipped.append(f"{thumbnails.missing} no longer on disk")
    if thumbnails.unreadable:
        skipped.append(f"{thumbnails.unreadable} unreadable")
    note = (f"{intro}: {len(shown)} of the {len(wrong)} kept (of {focus['wrong_total']} wrong in all)"
            + (f"; skipped: {', '.join(skipped)}" if skipped else "") + ".")
    cards = []
    for i, w in shown:
        confidence = "" if w["confidence"] is None else f"<div>confidence {w['confidence']:.3f}</div>"
        cards.append(f"<div class='thumb'><img src='{esc(thumbnails.images[i])}' alt='{esc(w['path'])}'>"
                     f"<div>true <b>{esc(w['true'])}</b></div><div>predicted <b>{esc(w['predicted'])}</b></div>"
                     f"{confidence}<div class='path'>{esc(w['path'])}</div></div>")
    return f"{title}<p class='muted small' id='wrong-note'>{esc(note)}</p><div class='grid' id='wrong'>{''.join(cards)}</div>"


def _shots(document: dict[str, Any], focus: dict[str, Any]) -> str | None:
    """``bench --shots``: accuracy against training images per class, a line per head and layer of
    each store (the mean over the seeded draws), and the mean ± std table."""
    shots = document.get("shots")
    if not shots:
        return None
    ks = [str(k) for k in shots["shots"]]
    by = {(r["store"], r["layer"], r["head"], str(r["shots"])): r for r in shots["table"]}
    keys = list(dict.fromkeys((r["store"], r["layer"], r["head"]) for r in shots["table"]))
    parts = [f"<h2>Few-shot: accuracy against training images per class</h2><p class='muted small'>"
             f"{shots['seeds']} seeded draws of each number of shots, the same for every cell; scored on the "
             f"whole test split; mean over the draws (± their standard deviation in the table).</p>"]
    for store in dict.fromkeys(key[0] for key in keys):
        series = {}
        for _, layer, head in (k for k in keys if k[0] == store):
            values = [by.get((store, layer, head, k)) for k in ks]
            series[f"{head} / {layer}"] = [None if r is None or r["failed"] == r["draws"] else r["accuracy_mean"]
                                           for r in values]
        parts.append(f"<h3>{esc(store)}</h3>" + svg_lines([f"{k} shots" for k in ks], series, y_label="accuracy"))
    head = "".join(f"<th>{esc(t)}</th>" for t in ("store", "layer", "head")) + \
        "".join(f"<th class='num'>{esc(k)} shots</th>" for k in ks)
    rows = []
    for store, layer, head_name in keys:
        cells = []
        for k in ks:
            r = by.get((store, layer, head_name, k))
            text = "" if r is None else "fails" if r["failed"] == r["draws"] else \
                f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}"
            cells.append(f"<td class='num'>{esc(text)}</td>")
        rows.append(f"<tr><td>{esc(store)}</td><td>{esc(layer)}</td><td>{esc(head_name)}</td>{''.join(cells)}</tr>")
    parts.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
                 f"</table></div>")
    return "\n".join(parts)


TASK_SECTIONS.append(_shots)
