"""Image sources: where the images of a run come from, as one iterable of :class:`SourceItem`.

:func:`open_source` turns what a user types (a directory, a CSV/TSV file, ``fashion-mnist``
...) into an :class:`ImageSource`; every source yields items in a deterministic order and
knows its length and class names. Items carry either a file path (read lazily) or an
in-memory array. :func:`content_key` hashes what an item reads, so a store can key its
rows by content rather than by name.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._folder import IMAGE_EXTENSIONS, SPLIT_NAMES, folder_tags, scan_images
from ._idx import read_idx, read_idx_shape
from .errors import ContentTypeError, SourceError

__all__ = [
    "ACCEPTED_FORMS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_EXTENSIONS",
    "SPLIT_NAMES",
    "ArraySource",
    "CsvSource",
    "FashionMnistSource",
    "FolderSource",
    "ImageSource",
    "SourceItem",
    "content_key",
    "open_source",
]

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
ACCEPTED_FORMS = (
    "an ImageSource object; 'fashion-mnist', 'fashion-mnist:train' or 'fashion-mnist:test'; "
    "a directory of images (root/<class>/<image>, root/<image>, root/<split>/<class>/<image> "
    "or root/<split>/<image>); a .csv or .tsv file whose header names the columns path[,label][,split]"
)


@dataclass(frozen=True)
class SourceItem:
    """One image of a source.

    Parameters
    ----------
    path : str
        File path, or a pseudo path such as ``fashion-mnist:train/00012`` for in-memory images.
    label : str or None
        Class name; None when unlabelled.
    split : str or None
        Split tag such as ``train`` or ``test``; None when the source has none.
    array : numpy.ndarray or None
        The image itself for in-memory sources; None means "read the file at ``path``".
        Not part of equality, hashing or ``repr``.
    """

    path: str
    label: str | None = None
    split: str | None = None
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise SourceError(f"SourceItem path must be a non-empty str, got {self.path!r}")
        for name in ("label", "split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SourceError(f"SourceItem {name} must be a str or None, got {value!r} for {self.path!r}")
        if self.array is not None and not isinstance(self.array, np.ndarray):
            raise SourceError(f"SourceItem array must be a numpy array or None, got {type(self.array).__name__}")

    def read(self) -> bytes | np.ndarray:
        """Return :attr:`array` if set, else the bytes of the file at :attr:`path`.

        Raises
        ------
        OSError
            The file cannot be read (``FileNotFoundError`` when it is missing).
        """
        if self.array is not None:
            return self.array
        return Path(self.path).read_bytes()


def content_key(data: bytes | bytearray | memoryview | np.ndarray) -> str:
    """Hash an image's content: the sha256 hex digest that keys it in a store.

    Parameters
    ----------
    data : bytes or numpy.ndarray
        File bytes (hashed as they are), or an array: its dtype, shape and C-order bytes
        are hashed (``f"{dtype.str}|{shape}|"`` then the bytes), so equal pixels with a
        different shape or dtype get a different key.

    Returns
    -------
    str
        64 hexadecimal characters.

    Raises
    ------
    TypeError
        ``data`` is neither bytes nor a numpy array, or an array of Python objects.

    Examples
    --------
    >>> content_key(b"abc")[:12]
    'ba7816bf8f01'
    >>> content_key(np.zeros((2, 3), np.uint8)) == content_key(np.zeros((3, 2), np.uint8))
    False
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).hexdigest()
    if not isinstance(data, np.ndarray):
        raise ContentTypeError(f"content_key takes bytes or a numpy array, not {type(data).__name__}")
    if data.dtype.hasobject:
        raise ContentTypeError(f"content_key cannot hash an array of dtype {data.dtype} (Python objects)")
    digest = array_key_hasher(data.dtype, data.shape)
    digest.update(data.tobytes(order="C"))
    return digest.hexdigest()


def array_key_hasher(dtype: np.dtype, shape: tuple[int, ...]) -> "hashlib._Hash":
    """A sha256 primed as :func:`content_key` primes it for an array of ``dtype`` and ``shape``.

    Feed it the array's C-order bytes (in pieces if need be) to get the array's content key.
    """
    return hashlib.sha256(f"{np.dtype(dtype).str}|{tuple(shape)}|".encode())


@runtime_checkable
class ImageSource(Protocol):
    """What every image source provides.

    Attributes
    ----------
    name : str
        Description used in messages and provenance, e.g. ``folder:/data/imgs``.
    classes : tuple of str
        Sorted distinct labels of the items; empty when unlabelled.
    """

    name: str
    classes: tuple[str, ...]

    def __iter__(self) -> Iterator[SourceItem]:
        """Yield the items in a deterministic order."""
        ...

    def __len__(self) -> int:
        """Number of items."""
        ...


class _ItemListSource:
    """Shared code of the sources that hold a list of items."""

    name: str
    classes: tuple[str, ...]
    _items: list[SourceItem]

    def _set_items(self, items: list[SourceItem]) -> None:
        self._items = items
        self.classes = tuple(sorted({item.label for item in items if item.label is not None}))

    def __iter__(self) -> Iterator[SourceItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images, {len(self.classes)} classes)"


class FolderSource(_ItemListSource):
    """The image files under a directory, labelled and split by their folders.

    Files are found recursively; only the extensions in :data:`IMAGE_EXTENSIONS` count
    (any case), hidden files and folders (name starting with ``.``) are skipped, symbolic
    links are followed (each real directory is scanned once, so link cycles end). Broken
    links and unreadable files are listed like any other file: reading them fails, and
    ``extract`` records the failure. Items come sorted by their path below ``root``.

    The layout is decided from where the images lie:

    - all images directly in ``root`` -> unlabelled, no split;
    - no image directly in ``root`` and the top-level folders that hold images are all
      split names (:data:`SPLIT_NAMES`, any case) -> ``split`` is that folder's name as
      written; inside each split folder, images lying directly in it are unlabelled and
      images in subfolders take the subfolder's name as label (a split may be unlabelled
      while another is labelled, e.g. an unlabelled ``test``);
    - otherwise -> ``label`` is the name of the top-level folder, no split.

    Images deeper down keep the label of their class folder. Images both directly in a
    folder and in its subfolders, or split folders next to other folders, raise
    :class:`SourceError`.

    Parameters
    ----------
    root : str or os.PathLike
        The directory; made absolute (symbolic links in it are kept).

    Raises
    ------
    SourceError
        ``root`` is not a directory, holds no images, or mixes layouts.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.name = f"folder:{self.root}"
        if not self.root.is_dir():
            raise SourceError(f"image folder {str(self.root)!r} is not a directory")
        found = scan_images(self.root)
        if not found:
            raise SourceError(
                f"no images in {str(self.root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}, "
                "skipping hidden files and folders)"
            )
        tags = folder_tags(found, str(self.root))
        base = str(self.root)
        self._set_items(
            [SourceItem(os.path.join(base, *parts), label, split) for parts, (label, split) in zip(found, tags)]
        )


class CsvSource(_ItemListSource):
    """Images listed in a CSV (``.csv``, comma) or TSV (``.tsv``, tab) file.

    The first row must be a header naming the columns ``path`` and optionally ``label``
    and ``split`` (any order and case; other columns are ignored). Relative paths are
    resolved against the file's directory; empty ``label`` / ``split`` cells give None;
    cells are stripped of surrounding spaces and blank rows are skipped. Items keep the
    file's row order. Listed files are not opened until an item is read.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV or TSV file (UTF-8, with or without a byte-order mark).

    Raises
    ------
    SourceError
        The file cannot be read or parsed, has no ``path`` column, a row has an empty
        path, or a path is listed twice.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.name = f"csv:{self.path}"
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                items = _parse_table(csv.reader(fh, delimiter=delimiter), self.path)
        except FileNotFoundError:
            raise SourceError(f"image list {str(self.path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read image list {str(self.path)!r}: {type(exc).__name__}: {exc}") from None
        self._set_items(items)


def _parse_table(reader: Any, path: Path) -> list[SourceItem]:
    where = str(path)
    header = next(reader, None)
    if header is None:
        raise SourceError(f"image list {where!r} is empty; its first row must name the columns path[,label][,split]")
    names = [cell.strip().lower() for cell in header]
    if "path" not in names:
        raise SourceError(
            f"image list {where!r} has no 'path' column (header: {header!r}); the first row must be a "
            "header naming the columns path[,label][,split]"
        )
    columns = {}
    for column in ("path", "label", "split"):
        if names.count(column) > 1:
            raise SourceError(f"image list {where!r} has {names.count(column)} columns named {column!r}")
        columns[column] = names.index(column) if column in names else None

    def cell(row: list[str], column: str) -> str | None:
        index = columns[column]
        value = row[index].strip() if index is not None and index < len(row) else ""
        return value or None

    items: list[SourceItem] = []
    lines: dict[str, int] = {}
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        value = cell(row, "path")
        if value is None:
            raise SourceError(f"image list {where!r}, line {reader.line_num}: the path cell is empty")
        full = str(path.parent / value)
        if full in lines:
            raise SourceError(
                f"image list {where!r}, line {reader.line_num}: {value!r} is already listed on line {lines[full]}"
            )
        lines[full] = reader.line_num
        items.append(SourceItem(full, cell(row, "label"), cell(row, "split")))
    return items


class ArraySource(_ItemListSource):
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


def open_source(spec: str | os.PathLike[str] | ImageSource) -> ImageSource:
    """Open an image source from what a user gives.

    Parameters
    ----------
    spec : str, os.PathLike or ImageSource
        - an :class:`ImageSource` -> returned as is;
        - ``'fashion-mnist:train'``, ``'fashion-mnist:test'`` or ``'fashion-mnist'`` (both,
          train first) -> :class:`FashionMnistSource`;
        - a directory -> :class:`FolderSource`;
        - a ``.csv`` or ``.tsv`` file -> :class:`CsvSource`.

    Returns
    -------
    ImageSource

    Raises
    ------
    SourceError
        Anything else (a missing path, another kind of file, an unknown scheme), or a
        source that cannot be opened.

    Examples
    --------
    >>> source = open_source("fashion-mnist:test")  # doctest: +SKIP
    >>> len(source), source.classes[:2]  # doctest: +SKIP
    (10000, ('Ankle boot', 'Bag'))
    """
    if not isinstance(spec, (str, os.PathLike)):
        if isinstance(spec, ImageSource):
            return spec
        raise SourceError(
            f"cannot open an image source from {type(spec).__name__} {spec!r}; accepted: {ACCEPTED_FORMS}"
        )
    if isinstance(spec, str) and spec.split(":", 1)[0] == "fashion-mnist":
        split = spec.split(":", 1)[1] if ":" in spec else "all"
        if split not in ("train", "test", "all"):
            raise SourceError(f"unknown Fashion-MNIST split in {spec!r}; accepted: {ACCEPTED_FORMS}")
        return FashionMnistSource(split)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return CsvSource(path)
    if path.is_file():
        raise SourceError(
            f"cannot open {str(spec)!r} as an image source: it is a file but not .csv/.tsv; accepted: {ACCEPTED_FORMS}"
        )
    raise SourceError(f"{str(spec)!r} is neither an existing path nor a known source name; accepted: {ACCEPTED_FORMS}")
