"""Write features computed elsewhere (numpy arrays) as a store with the same format and guarantees."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import StoreError
from .manifest import StoreConfig
from .sources import content_key
from .spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
from .store import FeatureStore
from .writer import StoreWriter

__all__ = ["write_arrays"]


def write_arrays(
    path: str | Path,
    features: Mapping[str, np.ndarray],
    *,
    labels: Sequence[object] | None = None,
    splits: Sequence[str | None] | None = None,
    keys: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
    dtype: str = "float32",
    shard_rows: int = 2048,
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
    shard_rows : int, default=2048
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
    if keys is None:
        keys = [content_key(np.concatenate([v[i].ravel().astype(np.float32) for v in arrays.values()]))
                for i in range(rows)]
    if len(set(keys)) != len(keys):
        raise StoreError("keys must be unique (identical content is stored once)")
    digest = hashlib.sha256()
    for out in sorted(arrays):
        digest.update(out.encode() + np.ascontiguousarray(arrays[out]).tobytes())
    spec = ModelSpec(
        backbone=name,
        weights=WeightsInfo("none", None, False),
        layers=tuple(LayerSpec(name=out, output=out, channels=v.shape[1], dim=v.shape[1], stride=None,
                               pooling="none") for out, v in arrays.items()),
        preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3),
    )
    config = StoreConfig.from_spec(spec, digest.hexdigest(), dtype=dtype)
    writer = StoreWriter(path, config, spec, shard_rows=shard_rows)
    try:
        todo = [i for i, k in enumerate(keys) if k not in writer.stored_keys]
        for start in range(0, len(todo), writer.shard_rows):
            idx = todo[start:start + writer.shard_rows]
            writer.add_rows(
                [keys[i] for i in idx], [0] * len(idx),
                [None if labels is None else str(labels[i]) for i in idx],
                [None if splits is None else splits[i] for i in idx],
                [f"{name}:{i}" if paths is None else paths[i] for i in idx],
                {out: v[idx] for out, v in arrays.items()},
            )
    finally:
        writer.close(run={"source": f"arrays:{name}", "listed": rows, "decoded": 0})
    return FeatureStore(path)
