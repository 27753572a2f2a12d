"""One image of a source (:class:`SourceItem`), the content key that names it in a store, and
the :class:`ImageSource` protocol every source follows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .._atomic import read_regular_file
from ..errors import ContentTypeError, SourceError

__all__ = ["SourceItem", "content_key", "array_key_hasher", "ImageSource", "ItemListSource", "MAX_FILE_BYTES"]

#: Default bound on the size of an image file (``--max-file-bytes``): 256 MiB, the size of an
#: uncompressed 8-bit RGB image of :data:`~featurestore.decode.MAX_PIXELS` pixels (89,478,485 x 3
#: bytes), the largest the decoder accepts; any real encoded image is far smaller.
MAX_FILE_BYTES = 256 * 1024 * 1024


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
    reader : callable, optional
        For content that is not a file of its own (an archive member, a table cell):
        ``reader(max_bytes)`` returns its bytes, or raises ``OSError`` (such as
        :class:`~featurestore.errors.ArchiveMemberError`) when it is refused or unreadable.
        Not part of equality, hashing or ``repr``.
    """

    path: str
    label: str | None = None
    split: str | None = None
    array: np.ndarray | None = field(default=None, compare=False, repr=False)
    reader: Callable[[int | None], bytes] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise SourceError(f"SourceItem path must be a non-empty str, got {self.path!r}")
        for name in ("label", "split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SourceError(f"SourceItem {name} must be a str or None, got {value!r} for {self.path!r}")
        if self.array is not None and not isinstance(self.array, np.ndarray):
            raise SourceError(f"SourceItem array must be a numpy array or None, got {type(self.array).__name__}")
        if self.reader is not None and (self.array is not None or not callable(self.reader)):
            raise SourceError(f"SourceItem reader must be a callable, and only without an array, for {self.path!r}")

    def read(self, max_bytes: int | None = MAX_FILE_BYTES) -> bytes | np.ndarray:
        """Return :attr:`array` if set, else what :attr:`reader` returns, else the bytes of the file at :attr:`path`.

        Only regular files are read (links to them are followed): a device, FIFO or socket is
        refused without being opened, and a file over ``max_bytes`` before it is read.

        Parameters
        ----------
        max_bytes : int or None, default=MAX_FILE_BYTES
            Refuse files larger than this (None: no bound).

        Raises
        ------
        OSError
            The file cannot be read (``FileNotFoundError`` when it is missing;
            :class:`~featurestore.errors.NotAFileError` for a device, FIFO, socket or folder;
            :class:`~featurestore.errors.FileTooLargeError` over ``max_bytes``).
        """
        if self.array is not None:
            return self.array
        if self.reader is not None:
            return self.reader(max_bytes)
        return read_regular_file(self.path, max_bytes=max_bytes)


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


class ItemListSource:
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
