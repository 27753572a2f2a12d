"""What the archive and table sources share: checking a member's name, and readers for members.

A member's name is untrusted: :func:`unsafe_name` refuses any name that could point outside
the archive were it ever written out (absolute, ``..``, backslashes, drive letters, control
characters); ``.`` and empty parts (``./a.jpg``, as ``tar -C dir .`` writes) are harmless. Members are never written to disk; their bytes go from the archive to the
decoder in memory, and a refused member becomes an item whose reader raises
:class:`~featurestore.errors.ArchiveMemberError`, so ``extract`` records it as a failure.
"""

from __future__ import annotations

import re

from ..errors import ArchiveMemberError, FileTooLargeError

__all__ = ["Refused", "InMemory", "member_path", "plain_parts", "too_large", "unsafe_name"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def member_path(archive: str, member: str) -> str:
    """The path recorded for a member: ``archive#member``."""
    return f"{archive}#{member}"


def unsafe_name(name: str) -> str | None:
    """Why a member name is refused, or None when it is a plain relative path.

    Examples
    --------
    >>> unsafe_name("cat/001.jpg") is None
    True
    >>> unsafe_name("../etc/passwd")
    "its name has a '..' part: it escapes the archive"
    """
    if not name:
        return "its name is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "its name holds control characters"
    if "\\" in name:
        return "its name holds a backslash: it may escape the archive on Windows"
    if name.startswith("/"):
        return "its name is an absolute path: it escapes the archive"
    if _DRIVE.match(name):
        return "its name starts with a drive letter: it escapes the archive"
    if ".." in name.split("/"):
        return "its name has a '..' part: it escapes the archive"
    if not plain_parts(name):
        return "its name has no part but '.' and '/'"
    return None


def plain_parts(name: str) -> tuple[str, ...]:
    """The parts of a member name without the empty and ``.`` ones (``./cat//a.jpg`` -> ``('cat', 'a.jpg')``)."""
    return tuple(part for part in name.split("/") if part not in ("", "."))


class Refused:
    """The reader of a refused member: raises :class:`ArchiveMemberError` with its reason (or ``error``)."""

    def __init__(self, path: str, reason: str, error: OSError | None = None) -> None:
        self.path, self.reason, self.error = path, reason, error

    def __call__(self, max_bytes: int | None = None) -> bytes:
        if self.error is not None:
            raise self.error
        raise ArchiveMemberError(f"{self.path!r} is refused: {self.reason}; nothing was extracted")


class InMemory:
    """The reader of a member already read while streaming its archive (bounded when it was read)."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path, self.data = path, data

    def __call__(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and len(self.data) > max_bytes:
            raise too_large(self.path, len(self.data), max_bytes)
        return self.data


def too_large(path: str, size: int, limit: int) -> FileTooLargeError:
    """The error for a member over ``--max-file-bytes``."""
    return FileTooLargeError(f"{path!r} holds {size} bytes, over the limit of {limit} bytes; "
                             "raise --max-file-bytes to read it")
