"""Write a bench's results: ``results.csv``, ``results.json``, ``report.html``, ``report.md`` and PNG plots."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any
from featurestore.utils import utc_timestamp

from .report_html import weights_label

__all__ = ["write_report", "score_label", "WRONG_SHOWN"]

#: How many of the chosen cell's wrong predictions ``report.html`` shows as thumbnails.
WRONG_SHOWN = 24

_COLUMNS = ["store", "layer", "fusion", "head", "method", "accuracy", "balanced_accuracy", "macro_f1", "log_loss",
            "fit_seconds", "predict_ms_per_1000", "n_train", "n_test", "evaluation", "layers"]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(output: Path, stores, config, results, *, load_seconds: float, total_seconds: float,
                 selection: dict[str, Any] | None = None, progress: bool = False,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every report file into ``output`` and return the JSON document (``progress``: a bar
    while the thumbnails of ``report.html`` are decoded; ``extra``: more of the document, such as a
    few-shot bench's ``shots``, which ``report.html`` shows too)."""
    output.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    with open(output / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    provenance = [{"name": s.name, "path": s.path, "backbone": s.backbone, "fingerprint": s.fingerprint,
                   "random_init": s.random_init, "weights_source": s.weights_source, "layers": s.layers,
                   "rows": int(len(s.y)),
                   "evaluation": _evaluation(s, config),
                   "classes": list(s.classes)} for s in stores]
    attention = {f"{r.cell.store}/{r.cell.head}": dict(zip(r.cell.layers, r.attention))
                 for r in results if r.attention is not None}
    best = max(results, key=lambda r: r.metrics["accuracy"])
    document = {
        "created": utc_timestamp(),
        "config": asdict(config),
        "stores": provenance,
        "results": rows,
        "attention": attention,
        "timing": {"load_seconds": load_seconds, "total_seconds": total_seconds,
                   "load_fraction": load_seconds / total_seconds if total_seconds else 0.0},
        "best": best.row() | {"confusion": best.confusion},
        "selection": selection,
    } | (extra or {})
    focus = _focus(document, stores, best)
    document["focus"] = focus
    (output / "results.json").write_text(json.dumps(document, indent=1, default=str))
    _write_html(output, document, focus, progress)
    plots = _plots(output, stores, results, best)
    (output / "report.md").write_text(_markdown(document, stores, results, best, plots))
    return document


def score_label(document: dict[str, Any]) -> str:
    """What the results' ``accuracy`` is: ``CV accuracy`` under ``--select`` or without a test
    split, ``test accuracy`` when every cell was scored on the test split."""
    evaluations = {r["evaluation"] for r in document["results"]}
    if document.get("selection") or all("CV" in e for e in evaluations):
        return "CV accuracy"
    if evaluations == {"test split"}:
        return "test accuracy"
    return "accuracy"


def _focus(document: dict[str, Any], stores, best) -> dict[str, Any]:
    """The cell the report is about: under ``--select`` the chosen one, refitted and scored on the
    test split; else the best-scoring cell. Its confusion matrix and its wrong rows with their paths."""
    selection = document.get("selection")
    label = score_label(document)
    if selection and selection.get("confusion") is not None:
        store = next(s for s in stores if s.name == selection["store"])
        focus = {"store": selection["store"], "layer": selection["layer"], "head": selection["head"],
                 "method": selection["method"], "accuracy": selection["test_accuracy"],
                 "evaluation": f"test split ({selection['n_test']} rows), after refitting on {selection['n_train']} "
                               "training rows",
                 "score_text": f"CV accuracy {selection['cv_accuracy']:.4f} ({selection['cv_evaluation']}); "
                               f"test accuracy {selection['test_accuracy']:.4f}",
                 "why": f"Chosen by --select: the best CV accuracy of {selection['cells']} cells on the training "
                        "split alone, then refitted on every training row and scored once on the test split.",
                 "confusion": selection["confusion"], "wrong": selection["wrong"]}
    else:
        store = next(s for s in stores if s.name == best.cell.store)
        chosen_by = ("Best cell by its score on the test split. Choosing by test score tunes on the test split; "
                     "bench --select chooses by CV on the training split instead."
                     if label == "test accuracy" else f"Best cell by {label} ({best.evaluation}).")
        if selection:
            chosen_by = (f"Chosen by --select: the best CV accuracy of {selection['cells']} cells; there is no "
                         "test split to score it on.")
        focus = {"store": best.cell.store, "layer": best.cell.layer_label, "head": best.cell.head,
                 "method": best.method, "accuracy": best.metrics["accuracy"],
                 "evaluation": best.evaluation if best.evaluation == "test split"
                 else f"held-out rows of {best.evaluation}",
                 "score_text": f"{label} {best.metrics['accuracy']:.4f} ({best.evaluation})", "why": chosen_by,
                 "confusion": best.confusion, "wrong": best.wrong or []}
    classes = list(store.classes)
    wrong_total = sum(v for i, row in enumerate(focus["confusion"]) for j, v in enumerate(row) if i != j)
    focus["classes"] = classes
    focus["wrong_total"] = int(wrong_total)
    focus["wrong"] = [{"path": None if store.paths is None else str(store.paths[w["row"]]),
                       "key": str(store.keys[w["row"]]), "true": classes[w["true"]],
                       "predicted": classes[w["predicted"]], "confidence": w["confidence"]}
                      for w in focus["wrong"][:WRONG_SHOWN]]
    return focus


def _write_html(output: Path, document: dict[str, Any], focus: dict[str, Any], progress: bool) -> None:
    from featurestore.utils import write_bytes_atomic
    from featurestore.thumbnails import Thumbnails, make_thumbnails

    from .report_html import render_report

    paths = [w["path"] for w in focus["wrong"]]
    if all(p is not None for p in paths):
        thumbnails = make_thumbnails(paths, progress=progress and len(paths) > 0)
    else:  # a store that records no paths
        thumbnails = Thumbnails(missing=len(paths))
    for w in focus["wrong"]:
        w["path"] = w["path"] if w["path"] is not None else f"key {w['key'][:16]}"
    write_bytes_atomic(output / "report.html", render_report(document, focus, thumbnails,
                                                                 score_label(document)).encode())


def _evaluation(store, config) -> str:
    if store.test is None:
        return f"{config.cv}-fold CV"
    if getattr(config, "select", False):
        return f"{config.cv}-fold CV on the training split; the test split scores the selected cell only"
    return "test split"


def _markdown(document, stores, results, best, plots: list[str]) -> str:
    timing = document["timing"]
    parts = ["# Bench report", "",
             f"{len(results)} cells; features loaded in {timing['load_seconds']:.2f} s of "
             f"{timing['total_seconds']:.1f} s ({100 * timing['load_fraction']:.1f}%). No image was decoded to fit or score a head; "
             "report.html shows more (per class, the wrong predictions).", "",
             "## Stores", ""]
    parts.append(_table(["store", "backbone", "weights", "layers", "rows", "evaluation", "fingerprint"], [
        [s["name"], s["backbone"], weights_label(s), ", ".join(s["layers"]),
         s["rows"], s["evaluation"], s["fingerprint"][:16]] for s in document["stores"]]))
    ranked = sorted(results, key=lambda r: -r.metrics["accuracy"])
    parts += ["", "## All results (sorted by accuracy)", ""]
    parts.append(_table(["store", "layer", "head", "method", "accuracy", "bal. acc.", "macro-F1", "log-loss",
                         "fit s", "predict ms/1k"], [
        [r.cell.store, r.cell.layer_label, r.cell.head, r.method, r.metrics["accuracy"],
         r.metrics["balanced_accuracy"], r.metrics["macro_f1"], r.metrics["log_loss"], r.fit_seconds,
         r.predict_ms_per_1000] for r in ranked]))
    parts += ["", "## Best per head", ""]
    best_per_head: dict[str, Any] = {}
    for r in ranked:
        best_per_head.setdefault(r.cell.head, r)
    parts.append(_table(["head", "store", "layer", "accuracy", "fit s"], [
        [h, r.cell.store, r.cell.layer_label, r.metrics["accuracy"], r.fit_seconds]
        for h, r in best_per_head.items()]))
    by_store: dict[str, list] = defaultdict(list)
    for r in results:
        by_store[r.cell.store].append(r)
    for store, rs in by_store.items():
        layers = list(dict.fromkeys(r.cell.layer_label for r in rs))
        heads = list(dict.fromkeys(r.cell.head for r in rs))
        acc = {(r.cell.layer_label, r.cell.head): r.metrics["accuracy"] for r in rs}
        parts += ["", f"## Accuracy by layer: {store}", ""]
        parts.append(_table(["layer"] + heads, [[layer] + [acc.get((layer, h), float("nan")) for h in heads]
                                                for layer in layers]))
    if document["attention"]:
        parts += ["", "## Attention fusion: mean weight per layer", ""]
        for name, weights in document["attention"].items():
            parts.append(f"- {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
    selection = document.get("selection")
    if selection:
        test = ("no test split to score it on" if selection["test_accuracy"] is None
                else f"**test accuracy {selection['test_accuracy']:.4f}** (refitted on {selection['n_train']} training "
                     f"rows in {selection['refit_seconds']:.1f} s, scored once on {selection['n_test']} test rows)")
        parts += ["", "## Selected by CV on the training split", "",
                  f"{selection['store']} / {selection['layer']} / {selection['head']} ({selection['method']}): "
                  f"{selection['cv_evaluation']} accuracy {selection['cv_accuracy']:.4f}; {test}. The choice "
                  f"among {selection['cells']} cells used the training rows alone (their CV took "
                  f"{selection['search_seconds']:.1f} s); the accuracies above are CV scores, not test scores."]
    parts += ["", f"## Best cell: {best.cell.store} / {best.cell.layer_label} / {best.cell.head} "
                  f"(accuracy {best.metrics['accuracy']:.4f})", ""]
    parts += [f"![{p}]({p})" for p in plots]
    return "\n".join(parts) + "\n"


def _plots(output: Path, stores, results, best) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_store: dict[str, list] = defaultdict(list)
    for r in results:
        by_store[r.cell.store].append(r)
    for store, rs in by_store.items():
        layers = list(dict.fromkeys(r.cell.layer_label for r in rs))
        if len(layers) < 2:
            continue
        fig, ax = plt.subplots(figsize=(max(6, len(layers) * 1.1), 4))
        for head in dict.fromkeys(r.cell.head for r in rs):
            acc = {r.cell.layer_label: r.metrics["accuracy"] for r in rs if r.cell.head == head}
            ax.plot(range(len(layers)), [acc.get(layer, math.nan) for layer in layers], marker="o", label=head)
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        ax.set_ylabel("accuracy")
        ax.set_title(f"accuracy by layer: {store}")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"accuracy_by_layer_{store}.png"
        fig.savefig(output / name, dpi=100)
        plt.close(fig)
        written.append(name)
    classes = next(s.classes for s in stores if s.name == best.cell.store)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(best.confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(classes)), classes, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"best: {best.cell.store} / {best.cell.layer_label} / {best.cell.head}", fontsize="small")
    fig.tight_layout()
    fig.savefig(output / "confusion_best.png", dpi=100)
    plt.close(fig)
    written.append("confusion_best.png")
    return written
