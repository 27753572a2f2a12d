"""``featurestore bench STORE [STORE ...] -o REPORT_DIR``: layers x fusion x heads, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="fit and score heads on stored features (layers x fusion x heads)",
        description="Score every head on every stored layer (and fusions of all layers) of each store: the "
                    "test split when the store has one, else stratified k-fold CV. Writes results.csv, "
                    "results.json, report.md and PNG plots. Reads features only; decodes no image.",
    )
    p.add_argument("stores", nargs="+", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="report directory")
    p.add_argument("--heads", default="logreg,svm,tree,nb,xgb", help="comma-separated heads, or `all`")
    p.add_argument("--fusions", default="concat,attention", help="fusions of all layers ('' for none)")
    p.add_argument("--layers", help="comma-separated layers to use, by output or layer name (default: all)")
    p.add_argument("--no-per-layer", action="store_true", help="skip the single-layer cells")
    p.add_argument("--cv", type=int, default=5, help="folds when a store has no test split")
    p.add_argument("--search", action="store_true", help="small grid search per head")
    p.add_argument("--jobs", type=int, help="cells in parallel (default: all cores; 1 for clean fit timings)")
    p.add_argument("--max-train-rows", type=int, help="stratified subsample of the training rows")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> int:
    from heads.bench import BenchConfig, run_bench

    config = BenchConfig(
        heads=tuple(h for h in args.heads.split(",") if h), fusions=tuple(f for f in args.fusions.split(",") if f),
        layers=tuple(args.layers.split(",")) if args.layers else None, per_layer=not args.no_per_layer,
        cv=args.cv, search=args.search, n_jobs=args.jobs, seed=args.seed, max_train_rows=args.max_train_rows,
    )
    document = run_bench(args.stores, args.output, config)
    print_table(document)
    return 0


def print_table(document: dict) -> None:
    """The sorted results as a plain-text table."""
    rows = sorted(document["results"], key=lambda r: -r["accuracy"])
    print(f"{'store':<18} {'layer':<22} {'head':<10} {'accuracy':>8} {'macro-F1':>8} {'fit s':>8}  method")
    for r in rows:
        print(f"{r['store'][:18]:<18} {r['layer'][:22]:<22} {r['head']:<10} {r['accuracy']:>8.4f} "
              f"{r['macro_f1']:>8.4f} {r['fit_seconds']:>8.2f}  {r['method']}")
