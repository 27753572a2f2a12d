"""``featurestore migrate STORE``: upgrade a store written by an earlier version to the current schema."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="upgrade a store to the current schema in place (shards are kept as they are)")
    p.add_argument("store", type=Path)
    return p


def run(args: argparse.Namespace) -> int:
    from ..manifest import STORE_SCHEMA_VERSION
    from ..migrate import migrate_store

    before = migrate_store(args.store)
    if before == STORE_SCHEMA_VERSION:
        print(f"{args.store}: already at store schema {STORE_SCHEMA_VERSION}")
    else:
        print(f"{args.store}: upgraded from store schema {before} to {STORE_SCHEMA_VERSION}")
    return 0
