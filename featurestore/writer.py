"""Append rows to a store: fingerprint check, exclusive lock, one journal record per shard, checkpoints."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import replace
from collections import Counter
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._version import __version__
from ._orphans import ORPHAN_DIR, move_aside
from .errors import (MalformedRecordError, OptionsError, StoreDamagedError, StoreError, StoreLockedError,
                     StoreMismatchError, StoreWriteError)
from .columns import RowColumns
from .journal import JOURNAL_NAME, cut_torn_tail, read_journal, reset_journal
from .manifest import MANIFEST_NAME, STORE_SCHEMA_VERSION, Manifest, StoreConfig
from .metadata import Failure, JournalRecord, ShardEntry
from .row_index import INDEX_DIR, read_row_index, stale_index_files, write_row_index
from .hdf5_checks import open_shard
from .shard_buffer import ShardBuffer
from .shard_read import read_columns
from .shard_write import write_shard
from .store_paths import SHARD_DIR, open_store_file, shard_file, uncommitted_shards
from .spec import ModelSpec

__all__ = ["StoreWriter", "LOCK_NAME"]

LOCK_NAME = ".lock"


def _leftover(name: str) -> bool:
    """Files a killed first run may leave in a store directory that has no manifest yet."""
    return name in (LOCK_NAME, SHARD_DIR, INDEX_DIR, JOURNAL_NAME, ORPHAN_DIR) or name.startswith(
        (f".{MANIFEST_NAME}.tmp-", f".{JOURNAL_NAME}.tmp-"))


#: A checkpoint folds the journal in once it holds this many records, or as many as the
#: checkpoint has shards if that is more: the checkpoint's O(store) cost then spreads over
#: at least as many O(1) commits, so a commit's amortised cost does not grow with the store.
CHECKPOINT_RECORDS = 512


#: What to do about a refused write, by error number; anything else: "fix the cause".
_REMEDIES = {
    errno.ENOSPC: "free space", errno.EDQUOT: "free space", errno.EFBIG: "free space",
    errno.EACCES: "make {store} writable", errno.EPERM: "make {store} writable",
    errno.EROFS: "make {store} writable",
}


def _os_errno(exc: BaseException | None) -> int | None:
    """The error number behind ``exc`` or the errors it was raised during: an OSError's own, or
    the one HDF5 writes into its message (a failed flush surfaces as a later "Can't destroy cache")."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno
        found = re.search(r"errno = (\d+)", str(exc))
        if found:
            return int(found.group(1))
        exc = exc.__cause__ or exc.__context__
    return None


def _committed_rows(store: Path) -> int:
    """Rows committed on disk (0 if there is no store or it cannot be read)."""
    try:
        return Manifest.load(store).rows
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@contextmanager
def _refused_writes(store: Path) -> Iterator[None]:
    """Turn a write the file system refuses (full, read-only, no permission) into one StoreWriteError.

    h5py reports a failed write as a RuntimeError carrying the errno in its message; both it
    and plain OSErrors become a StoreWriteError saying how many rows the store keeps.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        code = _os_errno(exc)
        if code is None and not isinstance(exc, OSError):
            raise
        reason = os.strerror(code) if code is not None else str(exc)
        rows = _committed_rows(store)
        remedy = _REMEDIES.get(code, "fix the cause").format(store=store)
        raise StoreWriteError(f"cannot write to store {store}: {reason}; {rows} rows are committed and "
                              f"safe; {remedy} and rerun the same command to resume", code, rows) from None


def check_shard_rows(value: object) -> int:
    """``value`` if it is a valid number of rows per shard (an integer >= 1), else an OptionsError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionsError(f"shard_rows must be an integer >= 1, got {value!r}")
    return value


def _cut(keys: list[str], start: int, limit: int, forward: bool = False) -> int:
    """The largest index <= ``limit`` (or, with ``forward``, the smallest >= it) that does not split a key."""
    limit = min(limit, len(keys))
    if limit <= start:
        return start
    if forward:
        while limit < len(keys) and keys[limit] == keys[limit - 1]:
            limit += 1
        return limit
    while start < limit < len(keys) and keys[limit] == keys[limit - 1]:
        limit -= 1
    return limit


class StoreWriter:
    """Open (or create) a store for appending rows extracted with one config.

    Rows are buffered and written ``shard_rows`` at a time as a new shard, which one fsynced
    journal record then commits. Now and then, and on :meth:`close`, the journal is folded
    into a checkpoint: a new row index and ``manifest.json``. On open, temporary files and
    index files that nothing committed names (left by a killed run) are removed, shard files
    nothing commits are moved to ``orphans/`` (never deleted: ``featurestore repair``
    recommits them), and a torn journal tail is cut off. A schema-1 store is upgraded on open.

    Parameters
    ----------
    path : str or Path
        Store directory; created if missing.
    config : StoreConfig
        What the rows depend on; must match an existing store's fingerprint.
    spec : ModelSpec
        The model's spec, recorded in a new store's manifest.
    shard_rows : int, default=2048
        Rows per shard: the most work a kill can lose.
    commit_each_shard : bool, default=True
        Commit every shard through the journal (a kill loses at most one shard's rows). With
        False the shards are committed once, by :meth:`close`: for one-shot writes such as
        :func:`~featurestore.write_arrays`, where a kill loses the whole call's rows anyway
        (the next writer moves the shards nothing names to ``orphans/``).

    Raises
    ------
    StoreMismatchError
        The store exists with another config; nothing is changed.
    StoreLockedError
        Another process is writing to the store.
    """

    def __init__(self, path: str | Path, config: StoreConfig, spec: ModelSpec, *, shard_rows: int = 2048,
                 commit_each_shard: bool = True) -> None:
        self.path = Path(path)
        self.config = config
        self.shard_rows = check_shard_rows(shard_rows)
        self.commit_each_shard = commit_each_shard
        manifest_path = self.path / MANIFEST_NAME
        if manifest_path.is_file():
            existing = Manifest.load(self.path)
            if existing.fingerprint != config.fingerprint:
                diffs = existing.config.differences(config) or ["fingerprint differs"]
                raise StoreMismatchError(
                    f"store {self.path} was built with a different configuration:\n  - " + "\n  - ".join(diffs)
                    + "\nIts rows would not be comparable; write to a new store path (-o NEW_STORE)."
                )
        elif self.path.exists() and any(not _leftover(p.name) for p in self.path.iterdir()):
            raise StoreMismatchError(
                f"{self.path} exists, is not empty and is not a feature store (no {MANIFEST_NAME}); "
                "choose a new store path"
            )
        self._lock = None
        self.run_id = secrets.token_hex(4)
        self._seq = 0
        self.buffer = ShardBuffer()
        self._failures: list[Failure] = []
        self.rows_added = 0
        self._changed = False  # whether this writer committed a shard, a failure or an alias
        self._unsaved: list[JournalRecord] = []  # commits not yet in the journal
        self._refused: StoreWriteError | None = None  # set once the file system refused a write
        self._opened = False  # whether the store was opened (shards named after run_id are this writer's)
        with _refused_writes(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = self._acquire_lock()
        try:
            with _refused_writes(self.path):
                if manifest_path.is_file():
                    self.manifest = Manifest.load(self.path)
                else:
                    self.manifest = Manifest.new(config, spec)
                    self.manifest.save(self.path)
                self._repair_journal()
                self.remove_uncommitted()
                self._opened = True
            self._load_index()
            if self.manifest.schema_version < STORE_SCHEMA_VERSION:
                self._guarded(self._checkpoint)  # upgrade: layouts recorded, row index written
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self) -> int:
        fd = open_store_file(self.path / LOCK_NAME, "lock file", os.O_RDWR | os.O_CREAT)  # never through a link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"store {self.path} is being written by another process; wait for it to finish")
        return fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def _repair_journal(self) -> None:
        """Cut a torn journal tail (a writer killed while appending); recreate a missing journal."""
        if self.manifest.schema_version < STORE_SCHEMA_VERSION:
            return
        state = read_journal(self.path)
        if state.base is None:
            reset_journal(self.path, self.manifest.seq)
        else:
            cut_torn_tail(self.path, state)

    def remove_uncommitted(self) -> None:
        """Clear what nothing committed names: delete temporary files and row indexes left by a
        killed writer or actor, and row indexes an earlier checkpoint replaced; move shard files
        nothing commits to ``orphans/`` (a shard file from before this writer opened is never
        deleted: it may hold committed rows whose journal was lost, which ``featurestore repair``
        recommits). Called again after a distributed job, it deletes the shards this writer's own
        workers wrote and never reported (an actor killed after writing one: its batch was redone).

        Safe while this writer holds the store's lock: only its process commits.
        """
        for pattern in (f".{MANIFEST_NAME}.tmp-*", f".{JOURNAL_NAME}.tmp-*"):
            for item in self.path.glob(pattern):
                item.unlink()
        for item in uncommitted_shards(self.path, self.manifest.shards):
            if item.name.startswith(".") or (self._opened and item.name.startswith(f"{self.run_id}-")):
                item.unlink(missing_ok=True)  # a temporary file (a shard never renamed into place), or see above
            else:
                move_aside(self.path, item)
        index = self.manifest.index
        for item in stale_index_files(self.path, index.file if index else None):
            item.unlink(missing_ok=True)

    def _load_index(self) -> None:
        """Read what is committed: the row index, then the shards committed after it (whose
        layouts a schema-1 store does not record yet)."""
        self._columns: list[RowColumns] = []
        index = self.manifest.index
        covered = index.shards if index else 0
        if index:
            try:
                self._columns.append(read_row_index(self.path, index))
            except FileNotFoundError:
                raise StoreDamagedError(f"{self.path}: its row index {index.file} is missing; nothing was "
                                        f"changed: run `featurestore repair {self.path}` to rebuild it") from None
        shards = self.manifest.shards
        for s in range(covered, len(shards)):
            columns, layout = read_columns(shard_file(self.path, shards[s].file))
            if len(columns) != shards[s].rows:
                raise StoreDamagedError(f"shard {shards[s].file} of {self.path} holds {len(columns)} rows, its "
                                        f"commit says {shards[s].rows}; the store is damaged, nothing was changed: "
                                        f"run `featurestore repair {self.path}`")
            self._columns.append(columns)
            shards[s] = shards[s].with_layout(layout)
        keys = [c.keys.astype(str).tolist() for c in self._columns]
        self.row_ids: set[tuple[str, int]] = set()
        self.seen_paths: set[tuple[str, str]] = set()
        for part, columns in zip(keys, self._columns):
            self.row_ids.update(zip(part, columns.views.tolist()))
            self.seen_paths.update(zip(part, columns.paths.tolist()))
            self.seen_paths.update(zip(columns.aliases["keys"].astype(str).tolist(),
                                       columns.aliases["paths"].tolist()))
        if len(self.row_ids) != sum(len(c) for c in self._columns):
            raise StoreDamagedError(f"{self.path}: a (key, view) row is committed twice; the store is damaged, "
                                    f"nothing was changed: run `featurestore repair {self.path}`")
        self.stored_keys = {key for key, _ in self.row_ids}
        self._committed_names = {shard.name for shard in self.manifest.shards}
        self.failed_keys = {f.key for f in self.manifest.failures if f.key}

    def add_rows(self, keys: list[str], views: list[int], labels: list[str | None], splits: list[str | None],
                 paths: list[str], features: dict[str, np.ndarray]) -> None:
        """Buffer rows (one per key and view), committing a shard each time ``shard_rows`` fill up.

        All views of one key land in the same shard, so a kill never leaves a key half stored.
        """
        labels = [lab or "" for lab in labels]
        splits = [s or "" for s in splits]
        start = 0
        while start < len(keys):
            room = max(self.shard_rows - len(self.buffer), 0)
            stop = _cut(keys, start, start + room)
            if stop == start and len(self.buffer):
                self.commit(save_manifest=self.commit_each_shard)
                continue
            stop = max(stop, _cut(keys, start, start + 1, forward=True))
            self.buffer.add_rows(keys[start:stop], labels[start:stop], splits[start:stop], views[start:stop],
                                 paths[start:stop], {name: v[start:stop] for name, v in features.items()})
            self.row_ids.update(zip(keys[start:stop], views[start:stop]))
            self.stored_keys.update(keys[start:stop])
            self.seen_paths.update(zip(keys[start:stop], paths[start:stop]))
            if len(self.buffer) >= self.shard_rows:
                self.commit(save_manifest=self.commit_each_shard)
            start = stop

    def add_alias(self, key: str, path: str, label: str | None, split: str | None) -> bool:
        """Record another place where stored content was seen; False if already known."""
        if (key, path) in self.seen_paths:
            return False
        self.seen_paths.add((key, path))
        self.buffer.aliases.append((key, path, label or "", split or ""))
        return True

    def add_failure(self, path: str, key: str | None, error: str, message: str) -> None:
        """Record an input that gave no row (committed with the next shard or on close)."""
        self._failures.append(Failure(path, key, error, message))
        if key:
            self.failed_keys.add(key)

    def commit(self, save_manifest: bool = True) -> None:
        """Write buffered rows as a shard (if any) and commit it with the failures recorded so far.

        With ``save_manifest=False`` the shard is written and its commit kept in memory; it
        becomes part of the store at the next commit that saves, or at :meth:`close`.

        Raises
        ------
        StoreWriteError
            The file system refused the write (full, read-only, no permission). The store
            keeps what was committed before; this writer commits nothing more.
        """
        self._guarded(self._commit, save_manifest)

    def _guarded(self, write: Any, *args: Any) -> None:
        """Run a write; once the file system refuses one, this writer writes nothing more."""
        if self._refused is not None:
            raise self._refused
        try:
            with _refused_writes(self.path):
                write(*args)
        except StoreWriteError as exc:
            self._refused = exc
            raise

    def _commit(self, save_manifest: bool) -> None:
        record = None
        if len(self.buffer) or self.buffer.aliases:
            name = f"{self.run_id}-{self._seq:05d}.h5"
            attrs = {"featurestore_store_schema": STORE_SCHEMA_VERSION, "fingerprint": self.config.fingerprint,
                     "model_sha256": self.config.model_sha256}
            layers = {layer.output: (layer.dim,) for layer in self.manifest.spec.layers}
            entry = write_shard(self.path, name, self.buffer, dtype=self.config.dtype, layers=layers, attrs=attrs)
            self._seq += 1
            self.rows_added += len(self.buffer)
            record = JournalRecord(shard=entry, classes=tuple(sorted({lab for lab in self.buffer.labels if lab})))
            self._columns.append(self.buffer.columns())
            self._committed_names.add(name)
            self.buffer = ShardBuffer()
        self._record(record, save_manifest)

    def _record(self, record: JournalRecord | None, save: bool) -> None:
        """Commit ``record`` (if any) with the failures not yet committed: now (one journal append)
        or, with ``save=False``, with the next saved commit."""
        failures = self._new_failures()
        if failures:
            record = replace(record or JournalRecord(), failures=tuple(failures))
        if record is not None:
            self._unsaved.append(record)
            self._changed = True
        if save:
            for pending in self._unsaved:
                self.manifest.append(self.path, pending)
            self._unsaved = []
            journal = self.manifest.seq - self.manifest.journal_seq
            if journal >= max(CHECKPOINT_RECORDS, self.manifest.checkpoint_shards):
                self._checkpoint()

    def _new_failures(self) -> list[Failure]:
        """The failures recorded since the last commit that no commit holds yet (same path and key)."""
        seen = {f.seen for f in self.manifest.failures}
        seen |= {f.seen for r in self._unsaved for f in r.failures or ()}
        new = []
        for failure in self._failures:
            if failure.seen not in seen:
                seen.add(failure.seen)
                new.append(failure)
        self._failures = []
        return new

    def _checkpoint(self) -> None:
        """Fold every commit into a new row index and ``manifest.json``, and reset the journal."""
        for pending in self._unsaved:
            self.manifest.apply(pending.numbered(self.manifest.seq + 1))
        self._unsaved = []
        columns = RowColumns.concatenate(self._columns)
        entry = write_row_index(self.path, f"rows-{self.manifest.seq:010d}-{self.run_id}.h5", columns)
        self.manifest.save(self.path, index=entry)
        self._columns = [columns]

    def commit_record(self, record: JournalRecord) -> None:
        """Commit ``record`` (a task, see :func:`~featurestore.tasks.attach_task`) now: one fsynced
        journal append, with the failures not committed yet.

        Raises
        ------
        StoreWriteError
            The file system refused the write; nothing more is committed by this writer.
        """
        self._guarded(self._record, record, True)

    def commit_external(self, entry: ShardEntry | dict[str, Any], keys: list[str], views: list[int], paths: list[str],
                        labels: list[str], splits: list[str] | None = None) -> None:
        """Commit a complete shard that another process wrote into this store's ``shards/``.

        Used by distributed extraction: workers write shards with :func:`write_shard`, the
        process holding this writer alone commits them. The shard's entry and the failures
        recorded so far are committed in one journal record.

        Parameters
        ----------
        entry : ShardEntry or dict
            The manifest entry :func:`write_shard` returned for the shard (or its JSON object).
        keys, views, paths, labels : list
            The shard's rows, in order.
        splits : list, optional
            The rows' split tags; read from the shard when not given.

        Raises
        ------
        StoreError
            The shard's (key, view) rows are already stored or repeat, its row count
            disagrees with ``entry``, or its file is missing or already committed; nothing
            is changed.
        """
        if not isinstance(entry, ShardEntry):
            try:
                entry = ShardEntry.from_dict(entry)
            except MalformedRecordError as exc:
                raise StoreError(f"refusing to commit a malformed shard entry to {self.path}: {exc}") from None
        rows = list(zip(keys, (int(v) for v in views)))
        file = Path(entry.file)
        if len(rows) != entry.rows or not len(keys) == len(paths) == len(labels):
            raise StoreError(f"shard {file.name}: the manifest entry says {entry.rows} rows, "
                             f"{len(rows)} keys were given")
        path = shard_file(self.path, entry.file)
        if not path.is_file():
            raise StoreError(f"shard {entry.file} is not a file under {self.path / SHARD_DIR}")
        if file.name in self._committed_names:
            raise StoreError(f"shard {file.name} is already committed to {self.path}")
        with open_shard(path) as f:
            held = len(f["keys"])
        if held != entry.rows:
            raise StoreError(f"shard {file.name} holds {held} rows, its entry says {entry.rows}; it was not committed")
        repeated = [row for row in rows if row in self.row_ids]
        repeated += [row for row, count in Counter(rows).items() if count > 1]
        if repeated:
            key, view = repeated[0]
            raise StoreError(f"shard {file.name} holds {len(repeated)} row(s) already stored or repeated, e.g. "
                             f"key {key[:12]}... view {view}; it was not committed")
        if splits is None or len(splits) != len(keys):
            columns = read_columns(path)[0]
        else:
            columns = RowColumns.from_strings(keys, [lab or "" for lab in labels], [s or "" for s in splits],
                                              views, paths)
        self.row_ids.update(rows)
        self.stored_keys.update(keys)
        self.seen_paths.update(zip(keys, paths))
        self.rows_added += len(rows)
        self._columns.append(columns)
        self._committed_names.add(file.name)
        self._guarded(self._record, JournalRecord(shard=entry, classes=tuple(sorted({lab for lab in labels if lab}))),
                      True)

    def close(self, run: dict[str, Any] | None = None) -> None:
        """Commit what is buffered, record the run's provenance, checkpoint, and release the lock.

        A writer that added nothing (no row, alias or failure) to a store whose journal is
        empty leaves it as it was, so an up-to-date store stays byte-identical however often
        it is re-run. After a refused write (:class:`StoreWriteError`) it only releases the lock.
        """
        try:
            if self._refused is not None:
                return
            self.commit(save_manifest=False)
            if self._changed and run is not None:
                self._unsaved.append(JournalRecord(run={"featurestore": __version__, **run}))
            if self._changed or self.manifest.seq > self.manifest.journal_seq:
                self._guarded(self._checkpoint)
        finally:
            self._release_lock()
