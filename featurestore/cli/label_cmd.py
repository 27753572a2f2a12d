"""``featurestore label STORE TABLE.csv``: attach or update a task (class, number, or label set per image)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..metadata import TASK_TYPES

    p = subparsers.add_parser(name, help="attach or update a task from a table (path or sha256 -> value); "
                                         "reads no image")
    p.add_argument("store", type=Path)
    p.add_argument("table", type=Path, help="CSV (TSV for .tsv) with a header: path (or sha256) and the values")
    p.add_argument("--task", default=None, help="task name (default: the table's value column's name)")
    p.add_argument("--type", dest="task_type", choices=TASK_TYPES, default=None,
                   help="default: the existing task's type, else inferred (numbers: regression; a|b: multilabel)")
    p.add_argument("--key", choices=("path", "sha256"), default="path",
                   help="match rows by the path extracted from, or by content key (default: path)")
    p.add_argument("--sep", default="|", help="separator of a multilabel cell's labels (default: |)")
    p.add_argument("--commit-rows", type=int, default=None, help="values per commit (default: 65536)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..tasks import COMMIT_ROWS, attach_task

    report = attach_task(args.store, args.table, task=args.task, task_type=args.task_type, key=args.key,
                         sep=args.sep, commit_rows=args.commit_rows or COMMIT_ROWS)
    lines = report.lines()
    print(lines[0])
    for line in lines[1:]:
        print(line, file=sys.stderr)
    return 0
