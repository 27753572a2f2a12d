"""What a bench reads from one store (or several joined by content key): its labelled features,
loaded once for every cell. Its own module, so that :mod:`heads.bench` and :mod:`heads.joined`
both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StoreData"]


@dataclass
class StoreData:
    """One store's labelled features, loaded once for every cell (``name``: how the report calls it)."""

    name: str
    path: str
    backbone: str
    fingerprint: str
    random_init: bool
    layers: list[str]
    X: dict[str, np.ndarray]
    y: np.ndarray
    keys: np.ndarray
    test: np.ndarray | None
    classes: tuple[str, ...]
    weights_source: str = ""  # WeightsInfo.source: offline:..., file:..., module, random-init, none
    joined: bool = False  # several stores matched by content key (heads.joined)
    #: per layer, the augmented views of each row: ``(views, rows, dim)``, aligned with ``X`` (None: clean only)
    augmented: dict[str, np.ndarray] | None = None
    #: where each row's image was first seen (a file or pseudo path), for the report's thumbnails
    paths: np.ndarray | None = None
    #: the task ``y`` is for (None: the labels) and its type: ``y`` holds class indices, or floats for regression
    task: str | None = None
    task_type: str = "classification"
