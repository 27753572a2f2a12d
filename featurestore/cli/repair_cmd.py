"""``featurestore repair STORE``: rebuild the checkpoint, journal and row index from the shard files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="rebuild the checkpoint, journal and row index from the shard files "
                                         "(after a lost or damaged journal or index); recommits orphans/")
    p.add_argument("store", type=Path)
    return p


def run(args: argparse.Namespace) -> int:
    from ..repair import repair_store

    print(repair_store(args.store).summary())
    return 0
