"""Exceptions raised by :mod:`heads`.

Each exception also subclasses the builtin a caller would naturally catch
(``KeyError`` for an unknown name, ``ValueError`` for a bad parameter or an
unusable saved model), so code that does not know this package still handles
them.
"""

from __future__ import annotations

from featurestore.errors import FeatureStoreError

__all__ = [
    "HeadError",
    "UnknownHeadError",
    "HeadParamError",
    "DuplicateHeadError",
    "HeadModelFileError",
    "HeadDataError",
    "HeadFileNotFoundError",
    "UnsafeHeadError",
    "HeadModelMismatchError",
]


class HeadError(FeatureStoreError):
    """Base class of every error this package raises on purpose (a :class:`FeatureStoreError`)."""


class UnknownHeadError(HeadError, KeyError):
    """A head name is not in the registry."""


class HeadParamError(HeadError, ValueError):
    """A head was asked for with a parameter it does not take, or a bad value."""


class DuplicateHeadError(HeadError, ValueError):
    """A second builder was registered under a name that is already taken."""


class HeadModelFileError(HeadError, ValueError):
    """A saved head model cannot be written or read back (missing metadata, bad labels)."""


class HeadDataError(HeadError, ValueError):
    """Training data a head cannot learn from (e.g. labels of a single class)."""


class HeadFileNotFoundError(HeadError, FileNotFoundError):
    """A head file that was named does not exist."""


class UnsafeHeadError(HeadError, ValueError):
    """A head file that is not a skops archive, or that holds types outside the allowlist."""


class HeadModelMismatchError(HeadError, ValueError):
    """The head was trained on features of another model or layers than the one given."""
