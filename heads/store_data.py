"""What a bench reads from one store (or several joined by content key): its labelled features,
loaded once for every cell. Its own module, so that :mod:`heads.bench` and :mod:`heads.joined`
both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featurestore import FeatureSet

__all__ = ["StoreData"]


@dataclass
class StoreData:
    """One store's labelled features, loaded once for every cell: a :class:`featurestore.FeatureSet`
    and where it came from.

    The rows are read through the feature set's own names (``X``, ``y``, ``keys``, ``classes``,
    ``paths``, ``splits``, ``test``, ``task``, ``task_type``); this class adds only what a bench
    reports about the store.

    Attributes
    ----------
    name : str
        How the report calls the store (its folder's name; ``a+b`` for stores joined).
    path : str
        The store's directory (the directories, comma-separated, of stores joined).
    backbone, fingerprint : str
        The store's backbone and fingerprint (``+``-joined, and a hash of the fingerprints, when joined).
    random_init : bool
        Whether the backbone's weights were random (any of them, when joined).
    features : featurestore.FeatureSet
        The clean view (0) of the rows with a target for ``task``, ``X`` as float32, ``y`` its targets.
    weights_source : str
        ``WeightsInfo.source``: offline:..., file:..., module, random-init, none.
    joined : bool
        Several stores matched by content key (:func:`heads.joined.join_store_data`).
    augmented : featurestore.FeatureSet or None
        The stored augmented views of the same rows, view 1 of every row first, then view 2, ...
        (its ``views`` column says which); None: clean only.
    """

    name: str
    path: str
    backbone: str
    fingerprint: str
    random_init: bool
    features: FeatureSet
    weights_source: str = ""
    joined: bool = False
    augmented: FeatureSet | None = None

    @property
    def X(self) -> dict[str, np.ndarray]:
        """``(rows, dim)`` float32 features per layer."""
        return self.features.X

    @property
    def layers(self) -> list[str]:
        """The layers of ``X``, in order."""
        return list(self.features.X)

    @property
    def y(self) -> np.ndarray:
        """Class indices, floats (regression) or a 0/1 matrix (multilabel)."""
        return self.features.y

    @property
    def keys(self) -> np.ndarray:
        """Content key of each row."""
        return self.features.keys

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, or the label names of a multilabel task; empty for a regression task."""
        return self.features.classes

    @property
    def paths(self) -> np.ndarray:
        """Where each row's image was first seen (a file or pseudo path), for the report's thumbnails."""
        return self.features.paths

    @property
    def splits(self) -> np.ndarray:
        """Each row's split (``""`` where none)."""
        return self.features.splits

    @property
    def test(self) -> np.ndarray | None:
        """:attr:`featurestore.FeatureSet.test`: the test split's rows, or None to cross-validate."""
        return self.features.test

    @property
    def task(self) -> str | None:
        """The task ``y`` is for (None: the labels)."""
        return self.features.task

    @property
    def task_type(self) -> str:
        """``classification``, ``regression`` or ``multilabel``."""
        return self.features.task_type

    def augmented_views(self, layers: list[str] | tuple[str, ...]) -> np.ndarray | None:
        """Every augmented view of every row, ``layers`` concatenated: ``(views, rows, D)``; None
        without augmented views."""
        if self.augmented is None:
            return None
        rows = len(self.features)
        return self.augmented.matrix(layers).reshape(len(self.augmented) // max(rows, 1), rows, -1)
