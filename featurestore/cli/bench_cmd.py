"""``featurestore bench STORE [STORE ...] -o REPORT_DIR``: layers x fusion x heads, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._config import add_arguments, from_arguments
from ..bench_config import BenchConfig


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="fit and score heads on stored features (layers x fusion x heads)",
        description="Score every head on every stored layer (and fusions of all layers) of each store: the "
                    "test split when the store has one, else stratified k-fold CV. Writes results.csv, "
                    "results.json, report.html (one self-contained page), report.md and PNG plots. Reads "
                    "features only; decodes no image but the report's few thumbnails.",
    )
    p.add_argument("stores", nargs="+", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="report directory")
    add_arguments(p, BenchConfig)
    return p


def run(args: argparse.Namespace) -> int:
    from heads.bench import run_bench

    config = from_arguments(BenchConfig, args)
    document = run_bench(args.stores, args.output, config)
    for task, doc in document.get("tasks", {None: document}).items():  # several tasks: a table each
        if task is not None:
            print(f"\ntask {task}:")
        print_table(doc)
    return 0


def print_table(document: dict) -> None:
    """The sorted results as a plain-text table, its score column named for what it is: ``cv accuracy``
    (under ``--select``, or without a test split) or ``test accuracy``; under ``--select`` the chosen
    cell's test accuracy too, in a column of its own."""
    from heads.report import score_label

    if document.get("task_type") in ("regression", "multilabel"):
        _print_task(document)
        return
    label = score_label(document).lower()
    selection = document.get("selection")
    chosen = None if not selection else (selection["store"], selection["layer"], selection["head"])
    test = selection is not None and selection["test_accuracy"] is not None
    rows = sorted(document["results"], key=lambda r: -r["accuracy"])
    print(f"{'store':<18} {'layer':<22} {'head':<10} {label:>13}" + (f" {'test accuracy':>13}" if test else "")
          + f" {'macro-F1':>8} {'fit s':>8}  method")
    for r in rows:
        mark = (r["store"], r["layer"], r["head"]) == chosen
        cell = f"{selection['test_accuracy']:.4f}" if mark and test else ""
        extra = f" {cell:>13}" if test else ""
        print(f"{r['store'][:18]:<18} {r['layer'][:22]:<22} {r['head']:<10} {r['accuracy']:>13.4f}{extra} "
              f"{r['macro_f1']:>8.4f} {r['fit_seconds']:>8.2f}  {r['method']}" + ("  <- chosen" if mark else ""))


def _print_task(document: dict) -> None:
    """A regression or multilabel bench's results, sorted by the type's primary metric (R2, mAP); under
    ``--select`` the chosen cell marked."""
    from heads.report_tasks import METRICS

    metrics = METRICS[document["task_type"]]
    focus = document["focus"]
    chosen = (focus["store"], focus["layer"], focus["head"])
    print(f"{'store':<18} {'layer':<22} {'head':<10} " + " ".join(f"{t.replace('²', '2'):>12}" for _, t in metrics)
          + f" {'fit s':>8}  method")
    for r in sorted(document["results"], key=lambda r: -r[metrics[0][0]]):
        mark = document.get("selection") and (r["store"], r["layer"], r["head"]) == chosen
        print(f"{r['store'][:18]:<18} {r['layer'][:22]:<22} {r['head']:<10} "
              + " ".join(f"{r[k]:>12.4g}" for k, _ in metrics)
              + f" {r['fit_seconds']:>8.2f}  {r['method']}" + ("  <- chosen" if mark else ""))
