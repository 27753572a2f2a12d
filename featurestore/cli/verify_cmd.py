"""``featurestore verify STORE``: non-zero exit naming each bad shard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="check every shard's checksum, row counts, readability and values, and the row index")
    p.add_argument("store", type=Path)
    return p


def run(args: argparse.Namespace) -> int:
    from ..journal import JOURNAL_NAME, read_journal
    from ..manifest import Manifest
    from ..verify import orphan_files, verify_store

    problems = verify_store(args.store)
    manifest = Manifest.load(args.store)
    for orphan in orphan_files(args.store):
        print(f"note: {orphan} is not committed (left by an interrupted run, or its commit was lost); "
              f"`featurestore repair {args.store}` commits it again if it holds rows the store lacks")
    if read_journal(args.store).torn:
        print(f"note: {JOURNAL_NAME} ends with a torn record (a writer was killed while committing); readers "
              "ignore it and the next writer cuts it off, moving its shard file to orphans/")
    if problems:
        for problem in problems:
            print(f"BAD {problem}", file=sys.stderr)
        print(f"{args.store}: {len(problems)} problem(s) in {len(manifest.shards)} shards", file=sys.stderr)
        return 1
    print(f"{args.store}: OK ({manifest.rows} rows in {len(manifest.shards)} shards)")
    return 0
