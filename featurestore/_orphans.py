"""``STORE/orphans/``: complete shard files that nothing commits, moved aside instead of deleted.

A writer opening a store moves the files in ``shards/`` that neither the checkpoint nor the
journal names (a writer killed between writing a shard and committing it, or a journal that
was lost) into ``orphans/``; ``featurestore info`` and ``verify`` list them and
``featurestore repair`` commits back those holding rows the store lacks.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._atomic import fsync_dir
from .store_paths import store_folder

__all__ = ["ORPHAN_DIR", "orphan_files_in", "move_aside"]

ORPHAN_DIR = "orphans"


def orphan_files_in(store: Path) -> list[Path]:
    """The files in ``STORE/orphans/`` (none when it does not exist), sorted.

    Raises
    ------
    UnsafeStoreError
        ``orphans`` is a link or not a folder.
    """
    directory = store_folder(store, ORPHAN_DIR)
    if not directory.is_dir():
        return []
    return sorted(item for item in directory.iterdir() if not item.name.startswith("."))


def move_aside(store: Path, file: Path, folder: str = ORPHAN_DIR) -> Path:
    """Move ``file`` into ``STORE/<folder>/`` under its name (with ``-1``, ``-2``... before the
    suffix when that is taken); returns the new path. Both folders are fsynced."""
    directory = store_folder(store, folder)
    directory.mkdir(exist_ok=True)
    target = directory / file.name
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = directory / f"{file.stem}-{n}{file.suffix}"
    os.rename(file, target)
    fsync_dir(directory)
    fsync_dir(file.parent)
    return target
