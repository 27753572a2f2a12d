"""Fashion-MNIST from the IDX files of the Debian package ``dataset-fashion-mnist``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .._idx import read_idx, read_idx_shape
from ..errors import SourceError
from .item import SourceItem

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FASHION_MNIST_ENV", "FashionMnistSource"]

#: Default directory of the Debian package ``dataset-fashion-mnist``.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variable that overrides :data:`FASHION_MNIST_DIR`.
FASHION_MNIST_ENV = "FEATURESTORE_FASHION_MNIST_DIR"
#: Fashion-MNIST class names, indexed by the label stored in the IDX files.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class FashionMnistSource:
    """Fashion-MNIST from the IDX files of the Debian package ``dataset-fashion-mnist``.

    Items have pseudo paths ``fashion-mnist:<split>/<index>`` (index zero-padded to 5
    digits), the class name as label (:data:`FASHION_MNIST_CLASSES`), the split tag and
    the 28x28 ``uint8`` image as ``array``. Labels are read when the source is made; the
    images are decompressed once, on first iteration.

    Parameters
    ----------
    split : {'train', 'test', 'all'} or None, default='train'
        ``all`` (or None) gives the 60,000 training images, then the 10,000 test images.
    limit : int, optional
        Keep only the first ``limit`` images of each split.
    root : str or os.PathLike, optional
        Directory of the IDX files; defaults to ``$FEATURESTORE_FASHION_MNIST_DIR``, then
        :data:`FASHION_MNIST_DIR`.

    Raises
    ------
    SourceError
        Unknown split, negative limit, missing directory or files, or malformed files.

    Examples
    --------
    >>> source = FashionMnistSource("test", limit=2)  # doctest: +SKIP
    >>> [(item.path, item.label) for item in source]  # doctest: +SKIP
    [('fashion-mnist:test/00000', 'Ankle boot'), ('fashion-mnist:test/00001', 'Pullover')]
    """

    def __init__(
        self, split: str | None = "train", limit: int | None = None, root: str | os.PathLike[str] | None = None
    ) -> None:
        if split not in ("train", "test", "all", None):
            raise SourceError(f"Fashion-MNIST split {split!r} is not one of 'train', 'test', 'all'")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise SourceError(f"limit must be None or an integer >= 0, got {limit!r}")
        self.split = split
        self.limit = limit
        self.root = Path(root if root is not None else os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
        self.splits = ("train", "test") if split in ("all", None) else (split,)
        self.name = "fashion-mnist" if len(self.splits) == 2 else f"fashion-mnist:{split}"
        if not self.root.is_dir():
            raise SourceError(
                f"Fashion-MNIST directory {str(self.root)!r} does not exist; install the Debian package "
                f"(apt-get install dataset-fashion-mnist) or point {FASHION_MNIST_ENV} at the IDX files"
            )
        self._labels = {s: self._read_labels(s) for s in self.splits}
        self._images: dict[str, np.ndarray] = {}
        seen = np.unique(np.concatenate(list(self._labels.values())))
        self.classes = tuple(sorted(FASHION_MNIST_CLASSES[i] for i in seen))

    def _read_labels(self, split: str) -> np.ndarray:
        images_file, labels_file = (self.root / name for name in _FASHION_MNIST_FILES[split])
        labels = read_idx(labels_file, ndim=1)
        shape = read_idx_shape(images_file, ndim=3)
        if shape[0] != len(labels):
            raise SourceError(
                f"{str(images_file)!r} holds {shape[0]} images but {str(labels_file)!r} holds {len(labels)} labels"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise SourceError(f"{str(labels_file)!r} holds label {labels.max()}; Fashion-MNIST labels are 0..9")
        return labels[: self.limit]

    def _load(self, split: str) -> np.ndarray:
        if split not in self._images:
            path = self.root / _FASHION_MNIST_FILES[split][0]
            self._images[split] = read_idx(path, ndim=3, limit=len(self._labels[split]))
        return self._images[split]

    def __iter__(self) -> Iterator[SourceItem]:
        for split in self.splits:
            images = self._load(split)
            names = [FASHION_MNIST_CLASSES[i] for i in self._labels[split].tolist()]
            for i, label in enumerate(names):
                yield SourceItem(f"fashion-mnist:{split}/{i:05d}", label, split, images[i])

    def __len__(self) -> int:
        return sum(len(labels) for labels in self._labels.values())

    def __repr__(self) -> str:
        return f"FashionMnistSource({self.name!r}, {len(self)} images, root={str(self.root)!r})"
