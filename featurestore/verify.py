"""Check a store end to end: every shard's checksum, readability, row counts, finiteness, unique rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._atomic import CHECKSUM_PREFIX, file_checksum, file_sha256
from .columns import RowColumns
from .errors import StoreError, UnsafeStoreError
from .manifest import Manifest
from .row_index import check_row_index_file, read_row_index
from ._orphans import ORPHAN_DIR, orphan_files_in
from .metadata import IndexEntry, ShardEntry
from .hdf5_checks import open_shard
from .shard_read import read_columns
from .shard_write import CONTENT_CHECKSUM_ATTR, content_checksum
from .store_paths import SHARD_DIR, shard_file, uncommitted_shards
from .task_files import read_task_part

__all__ = ["verify_store", "orphan_files"]

_ROW_COLUMNS = ("keys", "labels", "split", "view", "paths")


def verify_store(path: str | Path) -> list[str]:
    """Return the problems found in the store at ``path`` (an empty list means it verifies).

    Checks that the manifest and journal read and name only files in ``shards/``; that each
    shard exists, matches its checksum, opens as HDF5 with only what the writer produces (no
    links, external storage, virtual datasets, chunks or filters), holds the manifest's row
    count in every row column and layer (with the layer's width) at the byte offsets the
    manifest records, matches the checksum of its contents in its own attributes (when it has
    one), and has no NaN or Inf; that no (key, view) row appears twice; that
    the row index matches its checksum and, row for row, the shards it covers; and that each
    task's files match their checksums and hold what their entries say.

    Raises
    ------
    StoreError
        The manifest itself cannot be read (:class:`UnsafeStoreError` when it names a shard
        outside ``shards/``, :class:`StoreDamagedError` when the journal is damaged or missing).
    """
    path = Path(path)
    manifest = Manifest.load(path)
    spec = manifest.spec
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    dtype = np.dtype(manifest.config.dtype)
    index = manifest.index
    covered = index.shards if index else 0
    indexed: list[RowColumns] = []
    for s, shard in enumerate(manifest.shards):
        try:
            file = shard_file(path, shard.file)
        except UnsafeStoreError as exc:
            problems.append(f"{shard.file}: {exc}")
            continue
        if not file.is_file():
            problems.append(f"{shard.file}: missing")
            continue
        if not _checksum_matches(file, shard):
            problems.append(f"{shard.file}: checksum differs from the manifest (file changed or damaged)")
            continue
        try:
            problems += _check_shard(shard, file, spec.layers, seen)
            columns, layout = read_columns(file)
            recorded = shard.feature_layouts(dtype)
            if recorded is not None and {k: (v.offset, v.shape) for k, v in recorded.items()} != \
                    {k: (v.offset, v.shape) for k, v in layout.items()}:
                problems.append(f"{shard.file}: the feature offsets the manifest records differ from the file's")
            if s < covered:
                indexed.append(columns)
        except UnsafeStoreError as exc:
            problems.append(f"{shard.file}: {exc}")
        except (OSError, KeyError, ValueError) as exc:
            problems.append(f"{shard.file}: unreadable ({type(exc).__name__}: {exc})")
    if index:
        problems += _check_index(path, index, indexed, covered)
    for task in manifest.tasks.values():  # each file's checksum and contents, values of distinct keys
        for part in task.parts:
            try:
                read_task_part(path, part, task.type)
            except (StoreError, OSError, KeyError, ValueError) as exc:
                problems.append(f"{part.file} (task {task.name}): {exc}")
    return problems


def _checksum_matches(file: Path, shard: ShardEntry) -> bool:
    """Whether a shard matches its recorded checksum (xxh3-128, or sha256 in schema-1 entries)."""
    if shard.checksum_field == "checksum":
        return shard.checksum.startswith(CHECKSUM_PREFIX) and file_checksum(file) == shard.checksum
    return file_sha256(file) == shard.checksum


def _check_index(path: Path, index: IndexEntry, indexed: list[RowColumns], covered: int) -> list[str]:
    """The row index's checksum, and its rows against the shards it covers (all readable ones)."""
    try:
        rows = read_row_index(path, index)
        check_row_index_file(path, index)
    except (StoreError, OSError, KeyError, ValueError) as exc:
        return [f"{index.file}: {exc}"]
    if len(indexed) < covered:
        return []  # the shards' own problems are listed; the index cannot be compared row for row
    shards = RowColumns.concatenate(indexed)
    for name in ("keys", "labels", "splits", "views", "paths"):
        mine, theirs = getattr(rows, name), getattr(shards, name)
        if len(mine) != len(theirs) or not np.array_equal(mine.astype(str), theirs.astype(str)):
            return [f"{index.file}: its {name} differ from those of the {covered} shards it covers"]
    return []


def orphan_files(path: str | Path) -> list[str]:
    """Shard files nothing commits: in ``shards/`` (left by an interrupted run; the next writer moves
    them to ``orphans/``) and in ``orphans/`` (``featurestore repair`` recommits those holding rows
    the store lacks). Temporary files of an interrupted write are not listed."""
    path = Path(path)
    loose = [f"{SHARD_DIR}/{item.name}" for item in uncommitted_shards(path, Manifest.load(path).shards)
             if not item.name.startswith(".")]
    return loose + [f"{ORPHAN_DIR}/{item.name}" for item in orphan_files_in(path)]


def _check_shard(shard: ShardEntry, file: Path, layers, seen: set[tuple[str, int]]) -> list[str]:
    rows = shard.rows
    problems = []
    with open_shard(file) as f:
        recorded = f.attrs.get(CONTENT_CHECKSUM_ATTR)
        if recorded is not None and recorded != content_checksum(f):
            problems.append(f"{shard.file}: its contents do not match the checksum in its own attributes")
        for column in _ROW_COLUMNS:
            if len(f[column]) != rows:
                problems.append(f"{shard.file}: /{column} has {len(f[column])} rows, manifest says {rows}")
        for layer in layers:
            dataset = f["features"][layer.output]
            if dataset.shape[0] != rows or (layer.pooling != "none" and dataset.shape[1:] != (layer.dim,)):
                problems.append(f"{shard.file}: layer {layer.output} has shape {dataset.shape}, "
                                f"expected ({rows}, {layer.dim})")
                continue
            values = dataset[()]
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                problems.append(f"{shard.file}: layer {layer.output} has {bad} NaN/Inf values")
        for key, view in zip(f["keys"][()].astype(str).tolist(), f["view"][()].tolist()):
            if (key, view) in seen:
                problems.append(f"{shard.file}: row key {key[:12]}... view {view} is stored twice")
            seen.add((key, view))
    return problems

