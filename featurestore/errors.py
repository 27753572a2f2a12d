"""Exceptions raised by :mod:`featurestore`.

Each exception also subclasses the builtin a caller would naturally catch
(``ValueError``, ``KeyError``, ``FileNotFoundError`` ...), so code that does not
know this package still handles them.
"""

from __future__ import annotations

__all__ = [
    "FeatureStoreError",
    "SpecError",
    "ImageDecodeError",
    "ModelInputError",
    "SourceError",
    "StoreError",
    "StoreMismatchError",
    "StoreLockedError",
    "StoreWriteError",
    "StoreDamagedError",
    "MalformedRecordError",
    "UnsafeStoreError",
    "UnsafeModelError",
    "LayerNotInStoreError",
    "KeyNotInStoreError",
    "TaskNotInStoreError",
    "TaskTableError",
    "RowIndexError",
    "OptionsError",
    "BackendUnavailableError",
    "ModelNotFoundError",
    "MissingOutputError",
    "ContentTypeError",
    "SourceChangedError",
    "NotAFileError",
    "FileTooLargeError",
    "ArchiveMemberError",
    "PipelineError",
    "WorkerError",
    "PackageError",
]


class FeatureStoreError(Exception):
    """Base class of every error this package raises on purpose."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else ""


class SpecError(FeatureStoreError, ValueError):
    """An ONNX file carries no featurestore spec, or one this version cannot read."""


class ImageDecodeError(FeatureStoreError, ValueError):
    """An image file could not be decoded (empty, truncated, not an image, too large).

    Attributes
    ----------
    path : str
        The file (or a description of the in-memory source) that failed.
    cause : str
        Class name of the underlying exception.
    """

    def __init__(self, path: str, cause: str, message: str) -> None:
        super().__init__(f"cannot decode image {path!r}: {cause}: {message}")
        self.path = path
        self.cause = cause
        self.message = message


class ModelInputError(FeatureStoreError, ValueError):
    """A batch handed to a model has the wrong dtype or shape."""


class SourceError(FeatureStoreError, ValueError):
    """An image source could not be opened: unknown form, missing path, bad layout or file."""


class StoreError(FeatureStoreError, ValueError):
    """A store cannot be opened, is corrupt, or a request does not fit it."""


class StoreMismatchError(StoreError):
    """The store was built with another model, layer set, preprocessing, views or dtype."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class StoreWriteError(StoreError, OSError):
    """The store's file system refused a write (disk full, read-only, no permission).

    What was committed before stays valid; the message says how many rows that is and what
    to do, and rerunning the same command resumes.

    Attributes
    ----------
    errno : int or None
        The operating system's error number (``errno.ENOSPC`` ...), when known.
    committed_rows : int
        Rows the store holds on disk.
    """

    def __init__(self, message: str, errno: int | None, committed_rows: int) -> None:
        super().__init__(message)
        self.errno = errno
        self.committed_rows = committed_rows


class StoreDamagedError(StoreError):
    """A store's own files disagree with one another (a checksum, a row count, a recorded layout)."""


class MalformedRecordError(StoreDamagedError):
    """A manifest or journal record is not what a writer writes (its message says where; the
    manifest and journal readers name their file in the :class:`StoreDamagedError` they raise)."""


class UnsafeStoreError(StoreError):
    """A store refers to files outside itself, or its shards use HDF5 features the writer never
    produces (links, external storage, virtual datasets, chunked or filtered layouts); it is
    refused before any of them is followed."""


class UnsafeModelError(FeatureStoreError, ValueError):
    """An ONNX file whose external data lies outside its own folder; refused before it is loaded."""


class LayerNotInStoreError(StoreError, KeyError):
    """A requested layer is not in the store."""


class KeyNotInStoreError(StoreError, KeyError):
    """A requested key (content hash) is not in the store."""


class TaskNotInStoreError(StoreError, KeyError):
    """A requested task is not attached to the store."""


class TaskTableError(FeatureStoreError, ValueError):
    """A table of task values (``featurestore label``) cannot be read or does not fit the task."""


class RowIndexError(StoreError, IndexError):
    """Row indices outside the store."""


class OptionsError(FeatureStoreError, ValueError):
    """A parameter of an extraction or a run is unknown, out of range, or combined with one it excludes."""


class BackendUnavailableError(FeatureStoreError, RuntimeError):
    """A device or optional engine that was asked for is not there (CUDA, TorchCodec's decoder, Ray Data)."""


class ModelNotFoundError(FeatureStoreError, FileNotFoundError):
    """An ONNX model file does not exist."""


class MissingOutputError(FeatureStoreError, KeyError):
    """A model lacks an output the command needs (e.g. ``logits`` for ``classify``)."""


class ContentTypeError(FeatureStoreError, TypeError):
    """Content that cannot be keyed: neither bytes nor a numeric numpy array."""


class SourceChangedError(FeatureStoreError, OSError):
    """A file changed between being listed (and keyed) and being read."""


class NotAFileError(FeatureStoreError, OSError):
    """A path that must be a regular file is a device, FIFO, socket or folder (or a link where links are
    refused); it is never read."""


class FileTooLargeError(FeatureStoreError, OSError):
    """A file is larger than the bound set for reading it (``--max-file-bytes``); it is refused before it is read."""


class ArchiveMemberError(FeatureStoreError, OSError):
    """A member of an archive (zip, tar) or a cell of a table that is refused or cannot be read: a name
    that escapes the archive, a link or device, an encrypted or duplicated member, a zip bomb, a
    truncated or corrupt member. It is recorded as a failure and never written to disk."""


class PipelineError(FeatureStoreError, ValueError):
    """A pipeline file is malformed or refers to something it does not define."""


class WorkerError(FeatureStoreError, RuntimeError):
    """A distributed worker reported an error of a kind this process does not know."""


class PackageError(FeatureStoreError, ValueError):
    """A fitted step of a head (or its fusion) has no ONNX conversion yet; it is named and nothing is written."""
