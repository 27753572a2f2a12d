"""Check a store end to end: every shard's sha256, readability, row counts, finiteness, unique rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._atomic import file_sha256
from .errors import StoreError, UnsafeStoreError
from .manifest import Manifest
from .shard import SHARD_DIR, open_shard, shard_file, uncommitted_shards

__all__ = ["verify_store", "orphan_files", "require_valid"]

_ROW_COLUMNS = ("keys", "labels", "split", "view", "paths")


def verify_store(path: str | Path) -> list[str]:
    """Return the problems found in the store at ``path`` (an empty list means it verifies).

    Checks that the manifest reads and names only files in ``shards/``; that each shard
    exists, matches its sha256, opens as HDF5 with only what the writer produces (no links,
    external storage, virtual datasets, chunks or filters), holds the manifest's row count in every row column and layer (with the
    layer's width), and has no NaN or Inf; and that no (key, view) row appears twice.

    Raises
    ------
    StoreError
        The manifest itself cannot be read (:class:`UnsafeStoreError` when it names a shard
        outside ``shards/``).
    """
    path = Path(path)
    manifest = Manifest.load(path)
    spec = manifest.spec
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    for shard in manifest.shards:
        try:
            file = shard_file(path, shard["file"])
        except UnsafeStoreError as exc:
            problems.append(f"{shard['file']}: {exc}")
            continue
        if not file.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        if file_sha256(file) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest (file changed or damaged)")
            continue
        try:
            problems += _check_shard(shard, file, spec.layers, seen)
        except UnsafeStoreError as exc:
            problems.append(f"{shard['file']}: {exc}")
        except (OSError, KeyError, ValueError) as exc:
            problems.append(f"{shard['file']}: unreadable ({type(exc).__name__}: {exc})")
    return problems


def orphan_files(path: str | Path) -> list[str]:
    """Shard files no manifest names (left by an interrupted run; the next extract removes them)."""
    path = Path(path)
    return [f"{SHARD_DIR}/{item.name}" for item in uncommitted_shards(path, Manifest.load(path).shards)]


def _check_shard(shard: dict, file: Path, layers, seen: set[tuple[str, int]]) -> list[str]:
    rows = shard["rows"]
    problems = []
    with open_shard(file) as f:
        for column in _ROW_COLUMNS:
            if len(f[column]) != rows:
                problems.append(f"{shard['file']}: /{column} has {len(f[column])} rows, manifest says {rows}")
        for layer in layers:
            dataset = f["features"][layer.output]
            if dataset.shape[0] != rows or (layer.pooling != "none" and dataset.shape[1:] != (layer.dim,)):
                problems.append(f"{shard['file']}: layer {layer.output} has shape {dataset.shape}, "
                                f"expected ({rows}, {layer.dim})")
                continue
            values = dataset[()]
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                problems.append(f"{shard['file']}: layer {layer.output} has {bad} NaN/Inf values")
        for key, view in zip(f["keys"][()].astype(str).tolist(), f["view"][()].tolist()):
            if (key, view) in seen:
                problems.append(f"{shard['file']}: row key {key[:12]}... view {view} is stored twice")
            seen.add((key, view))
    return problems


def require_valid(path: str | Path) -> None:
    """Raise :class:`StoreError` listing the problems, if any."""
    problems = verify_store(path)
    if problems:
        raise StoreError(f"store {path} does not verify:\n  " + "\n  ".join(problems))
