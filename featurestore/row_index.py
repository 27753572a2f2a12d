"""The store's row index: every committed row's key, label, split, view and path in one file.

Opening a store reads ``manifest.json``, ``journal.log`` and this file, whatever the number
of shards: the index covers the first ``shards`` shards of the checkpoint that names it, in
their order, so row ``i`` of the index is row ``i`` of the store, and its shard and row
inside the shard follow from the shards' row counts. Shards committed after the last
checkpoint (through the journal) are read from their own files until the next checkpoint
folds them in.

Layout (``STORE/index/rows-<seq>.h5``, plain HDF5, readable with h5py or h5dump)::

    /keys          |S64   (rows,)   content key of each row
    /label_codes   uint32 (rows,)   index into /label_names
    /label_names   utf-8  (labels,) distinct labels ("" = unlabelled)
    /split_codes   uint32 (rows,)   index into /split_names
    /split_names   utf-8  (splits,)
    /view          uint16 (rows,)
    /paths         utf-8  (rows,)
    /aliases/{keys,paths,labels,split}   other places stored content was seen

Its xxh3-128 checksum is in the manifest and is checked before the file is parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import checksum_of, write_bytes_atomic
from .errors import StoreDamagedError
from .metadata import IndexEntry
from .columns import RowColumns
from .hdf5_checks import open_shard
from .shard_write import memory_file
from .store_paths import read_store_file, store_file, store_folder
from .strings import decode_strings, encode_strings

__all__ = ["INDEX_DIR", "write_row_index", "read_row_index", "check_row_index_file", "index_file",
           "stale_index_files"]

INDEX_DIR = "index"
_GROUPS = ("aliases",)
_DATASETS = ("keys", "label_codes", "label_names", "split_codes", "split_names", "view", "paths",
             "aliases/keys", "aliases/paths", "aliases/labels", "aliases/split")
#: dtypes a recorded index column may have (kind, item size limit): strings, codes, views
_KINDS = {"S": 1 << 16, "u": 8}


def write_row_index(store: Path, name: str, columns: RowColumns) -> IndexEntry:
    """Write ``columns`` as ``STORE/index/NAME`` (built in memory, then temporary file, fsync, rename);
    return its manifest entry (covering no shard yet: :meth:`Manifest.save
    <featurestore.manifest.Manifest.save>` sets that)."""
    directory = store_folder(store, INDEX_DIR)
    directory.mkdir(exist_ok=True)
    final = directory / name
    with memory_file(final) as f:
        f.create_dataset("keys", data=np.asarray(columns.keys, dtype="S64"))
        for column, codes, names in (("label", columns.label_codes, columns.label_names),
                                     ("split", columns.split_codes, columns.split_names)):
            f.create_dataset(f"{column}_codes", data=np.asarray(codes, dtype=np.uint32))
            data, string_dtype = encode_strings([str(n) for n in names])
            f.create_dataset(f"{column}_names", data=data, dtype=string_dtype)
        f.create_dataset("view", data=np.asarray(columns.views, dtype=np.uint16))
        if columns.raw_paths.dtype.kind == "S":  # still as read from an index: written as it is
            f.create_dataset("paths", data=columns.raw_paths)
        else:
            data, string_dtype = encode_strings(list(columns.paths))
            f.create_dataset("paths", data=data, dtype=string_dtype)
        group = f.create_group("aliases")
        group.create_dataset("keys", data=np.asarray(columns.aliases["keys"], dtype="S64"))
        for column in ("paths", "labels", "split"):
            data, string_dtype = encode_strings(list(columns.aliases[column]))
            group.create_dataset(column, data=data, dtype=string_dtype)
        f.flush()
        layout = {name: [None if f[name].id.get_offset() is None else int(f[name].id.get_offset()),
                         list(f[name].shape), f[name].dtype.str] for name in _DATASETS}
        image = f.id.get_file_image()
    write_bytes_atomic(final, image)  # HDF5 never writes to disk: a full disk is a plain OSError
    return IndexEntry(f"{INDEX_DIR}/{name}", len(columns), checksum_of(image), layout=layout)


def index_file(store: Path, file: Any) -> Path:
    """The path of the index a manifest names, refused unless it is a regular file directly in ``STORE/index/``."""
    return store_file(store, INDEX_DIR, file, "index")


def read_row_index(store: Path, entry: IndexEntry) -> RowColumns:
    """Read the index a manifest entry names, after checking its checksum.

    The entry records where each column lies in the file (``layout``), so the file is read
    once and its columns are taken from those bytes without parsing HDF5 (nothing it could
    point to is ever followed); entries without a layout are read through h5py after the
    same checks :func:`~featurestore.hdf5_checks.open_shard` makes.

    Raises
    ------
    StoreDamagedError
        The file's checksum, row count or recorded layout disagrees with the manifest.
    UnsafeStoreError
        The entry names a file outside ``STORE/index/``, or (read through h5py) the file
        holds anything the writer does not produce (links, external storage, filters...).
    """
    path = index_file(store, entry.file)
    data = read_store_file(path, "row index")
    if checksum_of(data) != entry.checksum:
        raise StoreDamagedError(f"row index {path} differs from its checksum in the manifest; the store is "
                                "damaged (run `featurestore verify`)")
    read = _columns_from_bytes(path, data, entry.layout) if entry.layout is not None else _columns_from_h5py(path)
    keys, label_codes, split_codes, views = read["keys"], read["label_codes"], read["split_codes"], read["view"]
    labels, splits = decode_strings(read["label_names"]), decode_strings(read["split_names"])
    rows = len(keys)
    if rows != entry.rows or not all(len(c) == rows for c in (label_codes, split_codes, views, read["paths"])) \
            or (rows and (label_codes.max() >= len(labels) or split_codes.max() >= len(splits))):
        raise StoreDamagedError(f"row index {path} does not hold the {entry.rows} rows its manifest entry "
                                "says; the store is damaged (run `featurestore verify`)")
    aliases = {"keys": read["aliases/keys"], "paths": decode_strings(read["aliases/paths"]),
               "labels": decode_strings(read["aliases/labels"]), "split": decode_strings(read["aliases/split"])}
    return RowColumns(keys, label_codes.astype(np.uint32, copy=False), labels, split_codes.astype(np.uint32, copy=False),
                      splits, views, read["paths"], aliases)


def _columns_from_bytes(path: Path, data: bytes, layout: Any) -> dict[str, np.ndarray]:
    """Each column as a read-only view of ``data`` at its recorded offset, checked to lie inside it."""
    def damaged(why: str) -> StoreDamagedError:
        return StoreDamagedError(f"row index {path}: its recorded layout is damaged ({why}); run `featurestore verify`")

    out = {}
    try:
        for name in _DATASETS:
            offset, shape, dtype = layout[name]
            dtype = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            if dtype.kind not in _KINDS or dtype.itemsize > _KINDS[dtype.kind] or len(shape) != 1:
                raise damaged(f"column {name} has dtype {dtype} and shape {shape}")
            if count == 0:
                out[name] = np.empty(0, dtype)
                continue
            if offset is None or not 0 <= int(offset) <= len(data) - count * dtype.itemsize:
                raise damaged(f"column {name} does not lie inside the file")
            out[name] = np.frombuffer(data, dtype, count, int(offset))
    except StoreDamagedError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a missing column, a malformed entry or dtype
        raise damaged(str(exc)) from None
    return out


def _columns_from_h5py(path: Path) -> dict[str, np.ndarray]:
    with open_shard(path, groups=_GROUPS) as f:
        return {name: f[name][()] for name in _DATASETS}


def stale_index_files(store: Path, current: str | None) -> list[Path]:
    """Index files (and temporary ones) in ``STORE/index/`` other than the one the manifest names."""
    directory = Path(store) / INDEX_DIR
    if directory.is_symlink() or not directory.is_dir():
        return []
    keep = Path(current).name if current else None
    return sorted(p for p in directory.iterdir() if p.name != keep)


def check_row_index_file(store: Path, entry: IndexEntry) -> None:
    """Open the index through h5py with :func:`~featurestore.hdf5_checks.open_shard`'s checks (for
    ``featurestore verify``): only the writer's layout, and the columns where the entry says."""
    path = index_file(store, entry.file)
    with open_shard(path, groups=_GROUPS) as f:
        for name, (offset, shape, _) in (entry.layout or {}).items():
            if name not in f or list(f[name].shape) != list(shape) or (offset is not None and f[name].id.get_offset() != offset):
                raise StoreDamagedError(f"row index {path}: column {name} does not lie where the manifest says")
