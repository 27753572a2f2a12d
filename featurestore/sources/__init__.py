"""Image sources: where the images of a run come from, as one iterable of :class:`SourceItem`.

:func:`open_source` turns what a user types (a directory, a CSV/TSV file, ``fashion-mnist``
...) into an :class:`ImageSource`; every source yields items in a deterministic order and
knows its length and class names. Items carry either a file path (read lazily) or an
in-memory array. :func:`content_key` hashes what an item reads, so a store can key its
rows by content rather than by name.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._folder import IMAGE_EXTENSIONS, SPLIT_NAMES, scan_images
from ..errors import SourceError
from .arrays import ArraySource
from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_ENV, FashionMnistSource
from .folder import FolderSource
from .item import MAX_FILE_BYTES, ImageSource, SourceItem, array_key_hasher, content_key
from .parquet import HF_MARKERS, TableSource, is_table_folder
from .table import CsvSource
from .webdataset import WebDatasetSource
from .ziparchive import MAX_COMPRESSION_RATIO, ZipSource

__all__ = [
    "ACCEPTED_FORMS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV",
    "IMAGE_EXTENSIONS",
    "MAX_COMPRESSION_RATIO",
    "MAX_FILE_BYTES",
    "SPLIT_NAMES",
    "ArraySource",
    "CsvSource",
    "FashionMnistSource",
    "FolderSource",
    "ImageSource",
    "SourceItem",
    "TableSource",
    "WebDatasetSource",
    "ZipSource",
    "array_key_hasher",
    "content_key",
    "open_source",
]

ACCEPTED_FORMS = (
    "an ImageSource object; 'fashion-mnist', 'fashion-mnist:train' or 'fashion-mnist:test'; "
    "a directory of images (root/<class>/<image>, root/<image>, root/<split>/<class>/<image> "
    "or root/<split>/<image>); a .zip of such a folder tree; WebDataset shards as 'wds:PATTERN' "
    "(brace patterns such as shard-{000..099}.tar) or a .tar file; a .parquet or .arrow file, a folder of "
    ".parquet files or a folder written by datasets.save_to_disk; "
    "a .csv or .tsv file whose header names the columns path[,label][,split]"
)
#: Suffixes of a WebDataset shard given as a plain path.
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")


def open_source(spec: str | os.PathLike[str] | ImageSource, *, label_from: str | None = None,
                image_from: str | None = None, max_file_bytes: int = MAX_FILE_BYTES) -> ImageSource:
    """Open an image source from what a user gives.

    Parameters
    ----------
    spec : str, os.PathLike or ImageSource
        - an :class:`ImageSource` -> returned as is;
        - ``'fashion-mnist:train'``, ``'fashion-mnist:test'`` or ``'fashion-mnist'`` (both,
          train first) -> :class:`FashionMnistSource`;
        - a directory -> :class:`FolderSource`;
        - a ``.zip`` file -> :class:`ZipSource`;
        - ``'wds:PATTERN'`` (brace patterns expanded) or a ``.tar`` file -> :class:`WebDatasetSource`;
        - a ``.parquet`` or ``.arrow`` file, a folder written by ``datasets.save_to_disk`` or a
          folder of ``.parquet`` files (and no images) -> :class:`TableSource`;
        - a ``.csv`` or ``.tsv`` file -> :class:`CsvSource`.
    label_from, image_from : str, optional
        Where a WebDataset or table source takes labels and images (see :class:`WebDatasetSource`,
        :class:`TableSource`); refused for the other sources given by name (a source object is
        returned as it is).
    max_file_bytes : int, default=MAX_FILE_BYTES
        Bound on the image members a streamed source (WebDataset, tables) reads into memory; files
        and zip members are bounded when read (:meth:`SourceItem.read`).

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
    source = _open(spec, label_from, image_from, max_file_bytes)
    if source is spec:  # a source object is taken as it is
        return source
    chosen = label_from is not None or image_from is not None
    if chosen and not isinstance(source, (WebDatasetSource, TableSource)):
        raise SourceError(f"--label-from and --image-from apply to WebDataset shards and tables, not to "
                          f"{source.name!r} (its labels come from its layout or columns)")
    return source


def _open(spec: str | os.PathLike[str] | ImageSource, label_from: str | None, image_from: str | None,
          max_file_bytes: int) -> ImageSource:
    if not isinstance(spec, (str, os.PathLike)):
        # Checked first: the protocol check reads every attribute, and a WebDataset source's classes
        # take a pass over all its shards.
        if isinstance(spec, (WebDatasetSource, TableSource)) or isinstance(spec, ImageSource):
            return spec
        raise SourceError(
            f"cannot open an image source from {type(spec).__name__} {spec!r}; accepted: {ACCEPTED_FORMS}"
        )
    if isinstance(spec, str) and spec.split(":", 1)[0] == "fashion-mnist":
        split = spec.split(":", 1)[1] if ":" in spec else "all"
        if split not in ("train", "test", "all"):
            raise SourceError(f"unknown Fashion-MNIST split in {spec!r}; accepted: {ACCEPTED_FORMS}")
        return FashionMnistSource(split)
    if isinstance(spec, str) and spec.startswith("wds:"):
        return WebDatasetSource(spec[4:], label_from, image_from, max_file_bytes)
    path = Path(spec)
    if path.is_dir() and any((path / marker).is_file() for marker in HF_MARKERS):
        return TableSource(path, label_from, image_from, max_file_bytes)
    if path.is_dir():
        try:
            return FolderSource(path)
        except SourceError:  # no images: a folder of Parquet files is a table
            if scan_images(path) or not is_table_folder(path):
                raise
        return TableSource(path, label_from, image_from, max_file_bytes)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".tsv"):
        return CsvSource(path)
    if path.is_file() and suffix == ".zip":
        return ZipSource(path)
    if path.is_file() and suffix in (".parquet", ".arrow"):
        return TableSource(path, label_from, image_from, max_file_bytes)
    if path.is_file() and path.name.lower().endswith(TAR_SUFFIXES):
        return WebDatasetSource(path, label_from, image_from, max_file_bytes)
    if path.is_file():
        raise SourceError(
            f"cannot open {str(spec)!r} as an image source: it is a file but not .csv/.tsv/.zip/.tar/.parquet/.arrow; "
            f"accepted: {ACCEPTED_FORMS}"
        )
    raise SourceError(f"{str(spec)!r} is neither an existing path nor a known source name; accepted: {ACCEPTED_FORMS}")
