"""The files holding a store's task values, and the values they give each row.

A task (:class:`~featurestore.metadata.TaskEntry`) gives values to content keys; its values
lie in one or more files ``STORE/tasks/<name>.h5``, each written once (built in memory,
temporary file, fsync, rename) and named by the journal record that commits it. The parts
are read in order; a later part's value for a key replaces an earlier one's.

Layout of a part (plain HDF5, readable with h5py or h5dump)::

    /keys    |S64    (n,)     content keys
    /codes   uint32  (n,)     classification: index into /names
    /names   utf-8   (k,)     classification, multilabel: the class or label names
    /values  float64 (n,)     regression: the target
    /matrix  uint8   (n, k)   multilabel: 1 where the row has label k

Its xxh3-128 checksum is in the manifest and is checked before the file is parsed; the
file is then opened with :func:`~featurestore.hdf5_checks.open_shard`'s checks (a store is
untrusted), and every dataset must hold exactly the bytes its shape says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ._atomic import checksum_of, write_bytes_atomic
from .errors import StoreDamagedError
from .hdf5_checks import open_shard
from .metadata import TaskEntry, TaskPart
from .shard_write import memory_file
from .store_paths import TASK_DIR, read_store_file, store_folder, task_file
from .strings import decode_strings, encode_strings

__all__ = ["Value", "write_task_part", "read_task_part", "task_values", "RowTargets", "row_targets"]

#: A task's value for one key: a class name, a float, or a sorted tuple of label names.
Value = Union[str, float, tuple]


def write_task_part(store: Path, name: str, task_type: str, keys: list[str], values: list[Value]) -> TaskPart:
    """Write ``values`` (one per key, of ``task_type``) as ``STORE/tasks/NAME`` atomically; return its entry."""
    directory = store_folder(store, TASK_DIR)
    directory.mkdir(exist_ok=True)
    final = directory / name
    with memory_file(final) as f:
        f.create_dataset("keys", data=np.asarray(keys, dtype="S64").reshape(-1))
        if task_type == "regression":
            f.create_dataset("values", data=np.asarray(values, dtype=np.float64).reshape(-1))
        else:
            labels = sorted({v for v in values} if task_type == "classification" else {x for v in values for x in v})
            data, string_dtype = encode_strings(labels)
            f.create_dataset("names", data=data, dtype=string_dtype)
            column = {label: i for i, label in enumerate(labels)}
            if task_type == "classification":
                f.create_dataset("codes", data=np.array([column[v] for v in values], dtype=np.uint32).reshape(-1))
            else:
                matrix = np.zeros((len(values), len(labels)), dtype=np.uint8)
                for row, value in enumerate(values):
                    matrix[row, [column[x] for x in value]] = 1
                f.create_dataset("matrix", data=matrix)
        f.flush()
        image = f.id.get_file_image()
    write_bytes_atomic(final, image)
    return TaskPart(f"{TASK_DIR}/{name}", len(keys), checksum_of(image))


def _dataset(f: Any, name: str, path: Path, kind: str, ndim: int) -> np.ndarray:
    """Dataset ``name`` of an open part, refused unless of ``kind``, ``ndim`` and stored whole."""
    if name not in f:
        raise StoreDamagedError(f"task file {path} has no dataset /{name}; the store is damaged (run `featurestore "
                                "verify`)")
    dataset = f[name]
    if dataset.dtype.kind != kind or dataset.ndim != ndim or dataset.id.get_storage_size() != dataset.nbytes:
        raise StoreDamagedError(f"task file {path}: /{name} is {dataset.dtype} {dataset.shape}, not what a writer "
                                "writes; the store is damaged (run `featurestore verify`)")
    return dataset[()]


def read_task_part(store: Path, part: TaskPart, task_type: str) -> tuple[list[str], list[Value]]:
    """The keys of a part and their values, after checking its checksum and contents.

    Raises
    ------
    StoreDamagedError
        The file differs from its checksum, or holds other than ``part.rows`` values of ``task_type``.
    UnsafeStoreError
        The entry names a file outside ``STORE/tasks/``, or the file holds anything the writer does not produce.
    FileNotFoundError
        The file is missing.
    """
    path = task_file(store, part.file)
    data = read_store_file(path, "task file")
    if checksum_of(data) != part.checksum:
        raise StoreDamagedError(f"task file {path} differs from its checksum in the manifest; the store is damaged "
                                "(run `featurestore verify`)")
    with open_shard(path, groups=()) as f:
        keys = _dataset(f, "keys", path, "S", 1)
        if task_type == "regression":
            values = _dataset(f, "values", path, "f", 1)
            good = len(values) == len(keys) and bool(np.isfinite(values).all())
            out: list[Value] = values.tolist()
        else:
            names = decode_strings(_dataset(f, "names", path, "S", 1)).tolist()
            if task_type == "classification":
                codes = _dataset(f, "codes", path, "u", 1)
                good = len(codes) == len(keys) and (not len(codes) or int(codes.max()) < len(names))
                out = [names[c] for c in codes.tolist()] if good else []
            else:
                matrix = _dataset(f, "matrix", path, "u", 2)
                good = matrix.shape == (len(keys), len(names)) and (not matrix.size or int(matrix.max()) <= 1)
                out = [tuple(names[i] for i in np.flatnonzero(row)) for row in matrix] if good else []
    keys_str = keys.astype(str).tolist()
    if not good or len(keys_str) != part.rows or len(set(keys_str)) != len(keys_str):
        raise StoreDamagedError(f"task file {path} does not hold the {part.rows} {task_type} values of distinct keys "
                                "its entry says; the store is damaged (run `featurestore verify`)")
    return keys_str, out


def task_values(store: Path, task: TaskEntry) -> dict[str, Value]:
    """Key -> value of ``task``: its parts read in order, a later value for a key replacing an earlier one."""
    values: dict[str, Value] = {}
    for part in task.parts:
        keys, part_values = read_task_part(store, part, task.type)
        values.update(zip(keys, part_values))
    return values


@dataclass(frozen=True)
class RowTargets:
    """A task's values for each row of a store.

    Attributes
    ----------
    type : {'classification', 'regression', 'multilabel'}
    present : numpy.ndarray of bool
        ``(rows,)``: whether the row has a value.
    y : numpy.ndarray
        classification: ``int64`` index into ``classes`` (-1 without a value); regression:
        ``float64`` (NaN without a value); multilabel: ``uint8 (rows, len(classes))`` 0/1 matrix.
    classes : tuple of str
        Class names (classification) or label names (multilabel), sorted; empty for regression.
    """

    type: str
    present: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]


def row_targets(keys: np.ndarray, task_type: str, values: dict[str, Value]) -> RowTargets:
    """The targets of rows with content ``keys`` (str) from key -> value (every view of a key gets its value)."""
    row_values = [values.get(k) for k in keys.tolist()]
    present = np.array([v is not None for v in row_values], dtype=bool).reshape(-1)
    if task_type == "regression":
        y = np.array([np.nan if v is None else v for v in row_values], dtype=np.float64).reshape(-1)
        return RowTargets(task_type, present, y, ())
    if task_type == "classification":
        classes = tuple(sorted({v for v in values.values()}))
        code = {c: i for i, c in enumerate(classes)}
        y = np.array([-1 if v is None else code[v] for v in row_values], dtype=np.int64).reshape(-1)
        return RowTargets(task_type, present, y, classes)
    classes = tuple(sorted({x for v in values.values() for x in v}))
    code = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(row_values), len(classes)), dtype=np.uint8)
    for row, value in enumerate(row_values):
        if value:
            y[row, [code[x] for x in value]] = 1
    return RowTargets(task_type, present, y, classes)
