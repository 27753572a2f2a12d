"""Path safety: the files a store's metadata names stay inside the store, and are opened without following links.

A store from elsewhere is untrusted: every shard the manifest or journal names must be a
regular file directly in ``STORE/shards/`` (no ``..``, absolute path or link), the row index a
regular file directly in ``STORE/index/``, and the store's own files (manifest, journal, lock)
are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from ._atomic import path_kind, read_regular_file
from .errors import NotAFileError, UnsafeStoreError
from .metadata import ShardEntry

__all__ = ["SHARD_DIR", "store_folder", "check_store_name", "store_file", "read_store_file", "open_store_file",
           "shard_dir", "uncommitted_shards", "check_shard_name", "shard_file", "TASK_DIR", "task_file"]

SHARD_DIR = "shards"
#: Where the files of a store's tasks lie (see :mod:`featurestore.tasks`).
TASK_DIR = "tasks"


def store_folder(store: Path, folder: str) -> Path:
    """``STORE/<folder>``, refused if it is a link or not a folder (it would lead reads and deletions
    outside the store)."""
    directory = Path(store) / folder
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UnsafeStoreError(f"{directory} is a link or not a folder; refusing the store (it must never make "
                               "us read or delete outside it)")
    return directory


def check_store_name(file: Any, folder: str, what: str) -> str:
    """Refuse a manifest entry that names anything but a file directly in ``<folder>/``.

    Returns the file name. Raises :class:`UnsafeStoreError` for absolute paths, ``..``, other
    folders or hidden names: a store must never make us read files outside it. (String
    operations, not pathlib: this runs for every shard each time a store is opened.)
    """
    prefix = f"{folder}/"
    if isinstance(file, str) and file.startswith(prefix):
        name = file[len(prefix):]
        if name and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name:
            return name
    raise UnsafeStoreError(f"the manifest names {what} {file!r}, which is not a file in {folder}/; "
                           "refusing the store (it must never make us read outside it)")


def store_file(store: Path, folder: str, file: Any, what: str) -> Path:
    """The path of a file a manifest names in ``STORE/<folder>/``, checked to be a regular file there (no link)."""
    path = store_folder(store, folder) / check_store_name(file, folder, what)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UnsafeStoreError(f"{what} {path} is a link or not a regular file; refusing to read it")
    return path


def read_store_file(path: Path, what: str) -> bytes:
    """The bytes of a store's own file, opened without following a link (``O_NOFOLLOW``).

    Raises
    ------
    UnsafeStoreError
        The path is a link, a FIFO, a device or anything but a regular file.
    FileNotFoundError
        It does not exist.
    """
    try:
        return read_regular_file(path, follow_links=False)
    except NotAFileError as exc:
        raise UnsafeStoreError(f"{what} {path} is {path_kind(path)}, not a regular file; refusing the store (it must "
                               f"never make us read or lock anything outside it)") from exc


def open_store_file(path: Path, what: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open a store's own file without following a link (``O_NOFOLLOW``, ``O_NONBLOCK``); return the descriptor.

    Raises
    ------
    UnsafeStoreError
        The path is a link or, once open, not a regular file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafeStoreError(f"{what} {path} is a symbolic link; refusing the store (it must never make us read "
                               "or lock anything outside it)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeStoreError(f"{what} {path} is not a regular file; refusing the store")
    return fd


def shard_dir(store: Path) -> Path:
    """``STORE/shards`` (see :func:`store_folder`)."""
    return store_folder(store, SHARD_DIR)


def uncommitted_shards(store: Path, shards: list[ShardEntry]) -> list[Path]:
    """Files in ``STORE/shards/`` that no committed entry names (left by a killed writer or actor), sorted."""
    directory = shard_dir(store)
    if not directory.is_dir():
        return []
    committed = {shard.name for shard in shards}
    return sorted(item for item in directory.iterdir() if item.name not in committed)


def check_shard_name(file: Any) -> str:
    """The file name of a shard entry, refused unless directly in ``shards/`` (see :func:`check_store_name`)."""
    return check_store_name(file, SHARD_DIR, "shard")


def shard_file(store: Path, file: str) -> Path:
    """The path of a committed shard, checked to be a regular file inside ``STORE/shards/`` (no link)."""
    return store_file(store, SHARD_DIR, file, "shard")


#: The groups a shard holds (one level below the root; datasets only inside them).


def task_file(store: Path, file: Any) -> Path:
    """The path of a task's file, checked to be a regular file inside ``STORE/tasks/`` (no link)."""
    return store_file(store, TASK_DIR, file, "task file")
