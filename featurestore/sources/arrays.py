"""Images already in memory, as numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SourceError
from .item import ItemListSource, SourceItem

__all__ = ["ArraySource"]


class ArraySource(ItemListSource):
    """Images already in memory.

    Parameters
    ----------
    images : numpy.ndarray or sequence of numpy.ndarray
        One array ``(N, H, W)`` or ``(N, H, W, C)``, or N arrays ``(H, W)`` / ``(H, W, C)``.
        Items hold views of these arrays, not copies.
    labels : sequence, optional
        N labels, converted with ``str()``; None entries stay unlabelled.
    splits : sequence, optional
        N split tags, converted with ``str()``; None entries stay untagged.
    name : str, default="arrays"
        Description used in messages and provenance.

    Raises
    ------
    SourceError
        Images of the wrong rank or of object dtype, or labels/splits of another length.

    Examples
    --------
    >>> source = ArraySource(np.zeros((2, 8, 8), np.uint8), labels=[0, 1])
    >>> [(item.path, item.label) for item in source]
    [('array:00000', '0'), ('array:00001', '1')]
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        name: str = "arrays",
    ) -> None:
        self.name = name
        arrays = _as_image_list(images, name)
        n = len(arrays)
        tags = {key: _as_tags(values, key, n, name) for key, values in (("labels", labels), ("splits", splits))}
        width = max(5, len(str(max(n - 1, 0))))
        self._set_items(
            [
                SourceItem(f"array:{i:0{width}d}", tags["labels"][i], tags["splits"][i], arrays[i])
                for i in range(n)
            ]
        )


def _as_image_list(images: Any, name: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise SourceError(f"{name}: an image array must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
        arrays = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        arrays = [np.asarray(image) for image in images]
        for i, image in enumerate(arrays):
            if image.ndim not in (2, 3):
                raise SourceError(f"{name}: image {i} must be (H, W) or (H, W, C), got shape {image.shape}")
    else:
        raise SourceError(f"{name}: images must be a numpy array or a list of arrays, not {type(images).__name__}")
    for i, image in enumerate(arrays):
        if image.dtype.hasobject:
            raise SourceError(f"{name}: image {i} has dtype {image.dtype}; use a numeric dtype such as uint8")
    return arrays


def _as_tags(values: Sequence[Any] | None, what: str, n: int, name: str) -> list[str | None]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or len(values) != n:
        given = "a string" if isinstance(values, (str, bytes)) else f"{len(values)}"
        raise SourceError(f"{name}: {what} must be a sequence of {n} values (one per image), got {given}")
    return [None if value is None else str(value) for value in values]
