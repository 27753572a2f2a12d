"""One shard: a plain HDF5 file holding a block of rows, written once and never modified.

Layout (readable with h5py or h5dump, without featurestore)::

    /keys              |S64  (rows,)        sha256 of each image's content
    /labels            utf-8 (rows,)        class name, "" when unlabelled
    /split             utf-8 (rows,)        split tag, "" when none
    /view              uint16 (rows,)       0 = the clean image, k = k-th augmented view
    /paths             utf-8 (rows,)        where the content was first seen
    /features/<output> float32|float16 (rows, dim)   one dataset per exported layer
    /aliases/{keys,paths,labels,split}      other places the same content was seen
    attrs: featurestore_store_schema, fingerprint, model_sha256

Datasets are contiguous (fast full and random reads); integrity comes from the shard's
sha256 in the manifest, which ``featurestore verify`` checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._atomic import file_sha256, fsync_dir
from .errors import StoreError

__all__ = ["SHARD_DIR", "FLOAT16_MAX", "ShardBuffer", "write_shard", "read_index", "read_aliases", "layer_stats"]

SHARD_DIR = "shards"
FLOAT16_MAX = 65504.0
_STR = h5py.string_dtype("utf-8")


@dataclass
class ShardBuffer:
    """Rows waiting to be written as one shard."""

    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    aliases: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def add_rows(self, keys: list[str], labels: list[str], splits: list[str], views: list[int],
                 paths: list[str], features: dict[str, np.ndarray]) -> None:
        """Append rows; ``features`` maps each output to an array of ``len(keys)`` rows."""
        self.keys += keys
        self.labels += labels
        self.splits += splits
        self.views += views
        self.paths += paths
        for name, values in features.items():
            self.features.setdefault(name, []).append(values)


def layer_stats(values: np.ndarray) -> dict[str, float]:
    """Aggregatable statistics of one layer's rows: count, sum, sum of squares, min, max, norms."""
    v = values.astype(np.float64, copy=False)
    finite = np.isfinite(v)
    return {
        "count": int(v.size),
        "sum": float(v[finite].sum()),
        "sumsq": float(np.square(v[finite]).sum()),
        "min": float(v[finite].min()) if finite.any() else float("nan"),
        "max": float(v[finite].max()) if finite.any() else float("nan"),
        "nonfinite": int(v.size - finite.sum()),
        "norm_sum": float(np.linalg.norm(np.where(finite, v, 0.0), axis=1).sum()) if v.ndim == 2 else 0.0,
    }


def write_shard(store: Path, name: str, buffer: ShardBuffer, *, dtype: str, layers: dict[str, tuple[int, ...]],
                attrs: dict[str, Any]) -> dict[str, Any]:
    """Write ``buffer`` as ``STORE/shards/NAME`` crash-safely; return its manifest entry.

    The file is written under a temporary name, flushed, fsynced and renamed into place,
    and the directory is fsynced. Only the manifest makes it part of the store.

    ``layers`` maps every output to its row shape, so that a shard holding only aliases
    still has every (empty) feature dataset.

    Raises
    ------
    StoreError
        ``dtype='float16'`` and a value would overflow it (|x| > 65504).
    """
    features = {
        out: np.concatenate(buffer.features[out]) if out in buffer.features else np.empty((0, *shape), np.float32)
        for out, shape in layers.items()
    }
    if dtype == "float16":
        for out, values in features.items():
            peak = float(np.abs(values[np.isfinite(values)]).max(initial=0.0))
            if peak > FLOAT16_MAX:
                raise StoreError(
                    f"layer {out!r} has values up to {peak:.4g}, beyond float16's range ({FLOAT16_MAX}); "
                    "extract with --dtype float32"
                )
    directory = store / SHARD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            f.create_dataset("keys", data=np.array(buffer.keys, dtype="S64"))
            f.create_dataset("labels", data=np.array(buffer.labels, dtype=object), dtype=_STR)
            f.create_dataset("split", data=np.array(buffer.splits, dtype=object), dtype=_STR)
            f.create_dataset("view", data=np.array(buffer.views, dtype=np.uint16))
            f.create_dataset("paths", data=np.array(buffer.paths, dtype=object), dtype=_STR)
            group = f.create_group("features")
            for out, values in features.items():
                group.create_dataset(out, data=values.astype(dtype, copy=False))
            aliases = f.create_group("aliases")
            columns = list(zip(*buffer.aliases)) if buffer.aliases else [(), (), (), ()]
            aliases.create_dataset("keys", data=np.array(columns[0], dtype="S64"))
            for col, values in zip(("paths", "labels", "split"), columns[1:]):
                aliases.create_dataset(col, data=np.array(values, dtype=object), dtype=_STR)
            f.attrs.update(attrs)
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return {
        "file": f"{SHARD_DIR}/{name}",
        "rows": len(buffer),
        "aliases": len(buffer.aliases),
        "sha256": file_sha256(final),
        "stats": {out: layer_stats(values) for out, values in features.items()},
    }


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    return dataset.asstr()[()] if len(dataset) else np.array([], dtype=object)


def read_index(path: Path) -> dict[str, np.ndarray]:
    """The per-row columns of a shard (keys as str, labels, split, view, paths)."""
    with h5py.File(path, "r") as f:
        return {
            "keys": f["keys"][()].astype(str),
            "labels": _strings(f["labels"]),
            "split": _strings(f["split"]),
            "view": f["view"][()],
            "paths": _strings(f["paths"]),
        }


def read_aliases(path: Path) -> dict[str, np.ndarray]:
    """The aliases of a shard: other (key, path, label, split) observations of stored content."""
    with h5py.File(path, "r") as f:
        group = f["aliases"]
        return {
            "keys": group["keys"][()].astype(str),
            "paths": _strings(group["paths"]),
            "labels": _strings(group["labels"]),
            "split": _strings(group["split"]),
        }
