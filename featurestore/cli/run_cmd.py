"""``featurestore run PIPELINE.toml``: run a declared pipeline, skipping up-to-date steps."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="run the exports, extractions and benches of a pipeline file")
    p.add_argument("pipeline", type=Path, help="TOML file (see examples/)")
    p.add_argument("--workdir", type=Path, help="override the file's workdir")
    p.add_argument("--limit", type=int, help="override every extraction's image limit (0 = all images)")
    return p


def run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    outcomes = run_pipeline(args.pipeline, workdir=args.workdir, limit=args.limit)
    ran = sum(o.status == "ran" for o in outcomes)
    print(f"{len(outcomes)} steps: {ran} ran, {len(outcomes) - ran} skipped (up to date)")
    for o in outcomes:
        if o.kind == "bench":
            print(f"report: {o.detail.removeprefix('report: ')}")
    return 0
