"""Upgrade a store to the current schema in place: layouts recorded, row index and journal written."""

from __future__ import annotations

from pathlib import Path

from .manifest import STORE_SCHEMA_VERSION, Manifest
from .writer import StoreWriter

__all__ = ["migrate_store"]


def migrate_store(path: str | Path) -> int:
    """Upgrade the store at ``path`` to schema :data:`~featurestore.manifest.STORE_SCHEMA_VERSION`.

    Shards are not rewritten: the manifest gains each shard's feature offsets, a row index
    covering every shard is written, and the journal is created. A store already at the
    current schema is left as it is. Any writer opening an older store does the same, so
    ``featurestore extract`` into an old store upgrades it too.

    Returns
    -------
    int
        The schema the store had.

    Raises
    ------
    StoreLockedError
        Another process is writing to the store.
    """
    manifest = Manifest.load(path)
    before = manifest.schema_version
    if before < STORE_SCHEMA_VERSION:
        StoreWriter(path, manifest.config, manifest.spec).close()
    return before
