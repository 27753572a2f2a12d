"""Reading a shard's row columns and where its feature datasets lie (the format: :mod:`featurestore.shard_write`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .columns import RowColumns
from .hdf5_checks import open_shard
from .metadata import FeatureLayout
from .strings import decode_strings

__all__ = ["read_columns", "read_layouts", "read_index", "read_strings", "dataset_layout"]


def read_strings(dataset: h5py.Dataset) -> np.ndarray:
    """A string column as an object array of str (fixed-length or, in older shards, variable-length)."""
    return decode_strings(dataset[()])


def dataset_layout(dataset: h5py.Dataset) -> FeatureLayout:
    """Where ``dataset``'s values lie in its file (offset None unless contiguous and unfiltered)."""
    offset = dataset.id.get_offset() if dataset.chunks is None and dataset.compression is None else None
    return FeatureLayout(None if offset is None else int(offset), tuple(dataset.shape), np.dtype(dataset.dtype))


def read_columns(path: Path) -> tuple[RowColumns, dict[str, FeatureLayout]]:
    """The per-row columns and aliases of a shard (keys as S64) and where each feature dataset lies."""
    with open_shard(path) as f:
        group = f["aliases"]
        columns = RowColumns.from_strings(
            f["keys"][()], read_strings(f["labels"]), read_strings(f["split"]), f["view"][()],
            read_strings(f["paths"]),
            {"keys": group["keys"][()], "paths": read_strings(group["paths"]),
             "labels": read_strings(group["labels"]), "split": read_strings(group["split"])})
        return columns, {name: dataset_layout(dataset) for name, dataset in f["features"].items()}


def read_layouts(path: Path) -> dict[str, FeatureLayout]:
    """Where each feature dataset of a shard lies in its file."""
    with open_shard(path) as f:
        return {name: dataset_layout(dataset) for name, dataset in f["features"].items()}


def read_index(path: Path) -> dict[str, np.ndarray]:
    """The per-row columns of a shard: keys (str), labels, split, view, paths."""
    columns = read_columns(path)[0]
    return {"keys": columns.keys.astype(str), "labels": columns.labels, "split": columns.splits,
            "view": columns.views, "paths": columns.paths}
