"""Several stores of the same images as one: rows matched by content key, every store's layers side by side.

Stores extracted with different backbones (MobileNetV2, EfficientNet-Lite0/1/2, ...) from the
same source hold the same content keys; the bench fuses their layers as one more candidate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .errors import HeadDataError
from .store_data import StoreData

__all__ = ["join_store_data"]


def join_store_data(stores: Sequence[StoreData]) -> StoreData:
    """The rows whose content key every store holds, in the first store's order.

    Layers are named ``<store>/<output>``; targets, splits and paths come from the first store,
    and every store must agree on the classes and on each shared row's label.

    Raises
    ------
    HeadDataError
        Fewer than two stores, stores with other classes, a label that differs between stores,
        or fewer than two rows in common.
    """
    if len(stores) < 2:
        raise HeadDataError("joining stores needs at least two")
    first = stores[0]
    for other in stores[1:]:
        if tuple(other.classes) != tuple(first.classes):
            raise HeadDataError(f"stores {first.name} and {other.name} have different classes; they cannot be joined")
    positions = [{key: i for i, key in enumerate(s.keys.tolist())} for s in stores]
    rows = [i for i, key in enumerate(first.keys.tolist()) if all(key in p for p in positions[1:])]
    if len(rows) < 2:
        raise HeadDataError(f"stores {', '.join(s.name for s in stores)} share fewer than 2 labelled images")
    keys = first.keys[rows]
    index = [np.array(rows)] + [np.array([p[k] for k in keys.tolist()]) for p in positions[1:]]
    for store, idx in zip(stores[1:], index[1:]):
        if not np.array_equal(store.y[idx], first.y[rows]):
            raise HeadDataError(f"stores {first.name} and {store.name} label the same images differently")
    X = {f"{store.name}/{layer}": store.X[layer][idx] for store, idx in zip(stores, index) for layer in store.layers}
    name = "+".join(s.name for s in stores)
    return StoreData(
        name=name, path=", ".join(s.path for s in stores), backbone="+".join(s.backbone for s in stores),
        fingerprint=hashlib.sha256("".join(s.fingerprint for s in stores).encode()).hexdigest(),
        random_init=any(s.random_init for s in stores), features=replace(first.features.take(rows), X=X),
        weights_source="+".join(s.weights_source for s in stores), joined=True,
    )
