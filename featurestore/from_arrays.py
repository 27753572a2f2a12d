"""Write features computed elsewhere (numpy arrays) as a store with the same format and guarantees."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import StoreError
from .manifest import StoreConfig
from .sources import array_key_hasher
from .spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
from .store import FeatureStore
from .writer import StoreWriter

__all__ = ["write_arrays", "ARRAY_SHARD_BYTES"]

#: Default shard size of :func:`write_arrays`, in bytes of features.
ARRAY_SHARD_BYTES = 256 * 2**20


def write_arrays(
    path: str | Path,
    features: Mapping[str, np.ndarray],
    *,
    labels: Sequence[object] | None = None,
    splits: Sequence[str | None] | None = None,
    keys: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
    dtype: str = "float32",
    shard_rows: int | None = None,
    name: str = "arrays",
) -> FeatureStore:
    """Write feature matrices as a store and open it.

    Parameters
    ----------
    path : str or Path
        New store directory (or an existing one written from the same arrays).
    features : mapping of str to numpy.ndarray
        One ``(rows, dim)`` array per layer, all with the same number of rows.
    labels, splits, paths : sequence, optional
        Per row; labels are stored as strings.
    keys : sequence of str, optional
        Per-row content keys (e.g. the sha256 of the source images); default: the sha256
        of each row's feature values.
    dtype : {'float32', 'float16'}
    shard_rows : int, optional
        Rows per shard; default: as many as fill :data:`ARRAY_SHARD_BYTES` (at least 2048). The
        rows are committed once, when every shard is written, so a kill loses the call's rows
        whatever the shard size; larger shards mean fewer files to open and check on reads.
    name : str, default='arrays'
        Recorded as the "backbone" in the store's spec.

    Returns
    -------
    FeatureStore
    """
    if not features:
        raise StoreError("write_arrays needs at least one feature matrix")
    arrays = {out: np.asarray(values) for out, values in features.items()}
    n = {len(v) for v in arrays.values()}
    if len(n) != 1 or any(v.ndim != 2 for v in arrays.values()):
        raise StoreError("every feature matrix must be 2-D with the same number of rows; got shapes "
                         + ", ".join(f"{k}: {v.shape}" for k, v in arrays.items()))
    rows = n.pop()
    for what, values in (("labels", labels), ("splits", splits), ("keys", keys), ("paths", paths)):
        if values is not None and len(values) != rows:
            raise StoreError(f"{what} has {len(values)} entries for {rows} rows")
    row_digests = _row_digests(arrays, rows)
    if keys is None:
        keys = [d.hex() for d in row_digests]
    if len(set(keys)) != len(keys):
        raise StoreError("keys must be unique (identical content is stored once)")
    digest = hashlib.sha256()  # identifies the arrays: names, shapes, dtypes and every row's hash
    for out in sorted(arrays):
        digest.update(f"{out}|{arrays[out].dtype.str}|{arrays[out].shape}|".encode())
    digest.update(b"".join(row_digests))
    spec = ModelSpec(
        backbone=name,
        weights=WeightsInfo("none", None, False),
        layers=tuple(LayerSpec(name=out, output=out, channels=v.shape[1], dim=v.shape[1], stride=None,
                               pooling="none") for out, v in arrays.items()),
        preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3),
    )
    config = StoreConfig.from_spec(spec, digest.hexdigest(), dtype=dtype)
    if shard_rows is None:
        row_bytes = sum(v.shape[1] for v in arrays.values()) * np.dtype(dtype).itemsize
        shard_rows = max(2048, ARRAY_SHARD_BYTES // max(row_bytes, 1))
    writer = StoreWriter(path, config, spec, shard_rows=shard_rows, commit_each_shard=False)
    try:
        todo = [i for i, k in enumerate(keys) if k not in writer.stored_keys]
        for start in range(0, len(todo), writer.shard_rows):
            idx = todo[start:start + writer.shard_rows]
            rows_of = slice(idx[0], idx[-1] + 1) if idx[-1] - idx[0] + 1 == len(idx) else idx  # no copy for a block
            writer.add_rows(
                [keys[i] for i in idx], [0] * len(idx),
                [None if labels is None else str(labels[i]) for i in idx],
                [None if splits is None else splits[i] for i in idx],
                [f"{name}:{i}" if paths is None else paths[i] for i in idx],
                {out: v[rows_of] for out, v in arrays.items()},
            )
    finally:
        writer.close(run={"source": f"arrays:{name}", "listed": rows, "decoded": 0})
    return FeatureStore(path)


def _row_digests(arrays: Mapping[str, np.ndarray], rows: int) -> list[bytes]:
    """sha256 of each row as :func:`~featurestore.content_key` hashes an array: the row's float32
    values of every layer, concatenated in order (``f"{dtype.str}|{shape}|"`` then the bytes).

    Rows are hashed from the arrays in place (no concatenated copy) on a few threads: hashlib
    releases the GIL while hashing.
    """
    blocks = [np.ascontiguousarray(v, dtype=np.float32).reshape(rows, -1) for v in arrays.values()]
    width = sum(b.shape[1] for b in blocks)
    prefix = array_key_hasher(np.float32, (width,))

    def hash_rows(start: int, stop: int) -> list[bytes]:
        out = []
        for i in range(start, stop):
            h = prefix.copy()
            for block in blocks:
                h.update(block[i])
            out.append(h.digest())
        return out

    step = 4096
    spans = [(start, min(start + step, rows)) for start in range(0, rows, step)]
    if len(spans) < 2:
        return [d for span in spans for d in hash_rows(*span)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return [d for part in pool.map(lambda span: hash_rows(*span), spans) for d in part]
