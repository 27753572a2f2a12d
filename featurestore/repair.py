"""Rebuild a store's checkpoint, journal and row index from its shard files (``featurestore repair``).

Every shard describes itself: its rows (keys, labels, splits, views, paths, aliases), its
features, the store fingerprint it was written for, when it was written, and a checksum of
its contents in its own attributes (:func:`~featurestore.shard_write.content_checksum`). Repair
reads every file in ``shards/`` and ``orphans/``, keeps those that pass their own check,
and commits them in their original order (the checkpoint's shards, then the others by the
time they were written), each only if its rows are not stored yet; then it
writes a new row index and checkpoint and an empty journal. A deleted or damaged journal or
row index therefore loses no row a shard file holds. Nothing is deleted but temporary files
of a killed writer: shard files that are damaged, written for another store, or repeat rows
already committed are moved to ``orphans/`` and listed.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._atomic import file_checksum, file_sha256
from ._orphans import ORPHAN_DIR, move_aside, orphan_files_in
from .columns import RowColumns
from .errors import FeatureStoreError, MalformedRecordError, StoreError, StoreLockedError
from .journal import salvage_records
from .manifest import MANIFEST_NAME, READABLE_SCHEMAS, Manifest, StoreConfig
from .metadata import Failure, JournalRecord, ShardEntry, TaskEntry
from .row_index import stale_index_files, write_row_index
from .hdf5_checks import open_shard
from .shard_buffer import layer_stats
from .shard_read import read_columns
from .shard_write import CONTENT_CHECKSUM_ATTR, WRITTEN_ATTR, content_checksum
from .store_paths import SHARD_DIR, check_shard_name, shard_dir, task_file
from .spec import ModelSpec
from .writer import LOCK_NAME

__all__ = ["RepairReport", "repair_store"]


@dataclass
class RepairReport:
    """What :func:`repair_store` did.

    Attributes
    ----------
    store : Path
    rows, shards : int
        What the store commits after the repair.
    before_rows, before_shards : int or None
        What its checkpoint and journal committed before, or None when they did not read.
    recommitted : list of str
        Shard files committed that the store did not commit before (from ``orphans/``, or
        named by nothing after a journal was lost).
    unchecked : list of str
        Committed shard files that carry no checksum of their own (written before shards
        recorded one): their columns read, so they were committed unchecked.
    set_aside : list of (str, str)
        Files left in or moved to ``orphans/``, and why.
    removed : list of str
        Temporary files of a killed writer, deleted.
    lost : list of str
        Shard files the checkpoint or the journal named that are gone (their rows cannot be
        recovered from this store).
    """

    store: Path
    rows: int = 0
    shards: int = 0
    before_rows: int | None = None
    before_shards: int | None = None
    recommitted: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Lines for the command line."""
        before = ("its checkpoint and journal did not read" if self.before_rows is None
                  else f"it committed {self.before_rows} rows in {self.before_shards} shards before")
        lines = [f"{self.store}: repaired: {self.rows} rows in {self.shards} shards ({before}); "
                 "row index, checkpoint and journal rewritten"]
        lines += [f"  recommitted {name}" for name in self.recommitted]
        lines += [f"  committed unchecked {name}: it carries no checksum of its own (written by an earlier "
                  "featurestore); its columns read" for name in self.unchecked]
        lines += [f"  set aside {name}: {why}" for name, why in self.set_aside]
        lines += [f"  removed temporary file {name}" for name in self.removed]
        lines += [f"  LOST {name}: committed before, the file is gone" for name in self.lost]
        if self.set_aside:
            lines.append(f"  files set aside stay in {self.store / ORPHAN_DIR} for inspection; delete them when "
                         "not needed")
        return "\n".join(lines)


@dataclass
class _Shard:
    """A shard file that passed its own checks, ready to commit."""

    path: Path
    entry: ShardEntry
    columns: RowColumns
    classes: set[str]
    digest: str
    checked: bool
    order: tuple  # where it goes: the checkpoint's shards first, then by the time written
    named: bool  # the checkpoint or a journal record that still reads commits this very file


@contextmanager
def _locked(store: Path) -> Iterator[None]:
    """Hold the store's writer lock (as :class:`~featurestore.writer.StoreWriter` does)."""
    fd = os.open(store / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(f"store {store} is being written by another process; wait for it to finish, "
                                   "then repair") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _checkpoint(store: Path) -> tuple[Manifest, Any]:
    """The checkpoint's config, spec, failures and runs (what repair needs from ``manifest.json``), read
    leniently, with its shard entries as they are (checked one by one by :func:`_named`)."""
    path = store / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        raise StoreError(f"{store} is not a feature store ({MANIFEST_NAME} is missing or not a file); repair "
                         "needs it for the store's model and configuration")
    def refused(why: object) -> StoreError:
        return StoreError(f"{path} does not read ({why}); repair needs it for the store's model and configuration")

    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise refused(exc) from None
    if not isinstance(data, dict):
        raise refused("not a JSON object")
    try:
        config, spec = StoreConfig(**data["config"]), ModelSpec.from_dict(data["model_spec"])
        seq = int(data.get("journal_seq", 0))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise refused(exc) from None
    if data.get("schema_version") not in READABLE_SCHEMAS:
        raise refused(f"store schema version {data.get('schema_version')!r}")
    if not isinstance(data.get("fingerprint"), str):
        raise refused("no fingerprint")
    failures = []
    for item in data.get("failures") if isinstance(data.get("failures"), list) else []:
        try:
            failures.append(Failure.from_dict(item))
        except MalformedRecordError:
            continue
    runs = [run for run in data.get("runs") if isinstance(run, dict)] if isinstance(data.get("runs"), list) else []
    created = data.get("created") if isinstance(data.get("created"), str) else None
    tasks = {}
    for item in data.get("tasks") if isinstance(data.get("tasks"), list) else []:
        try:  # a task whose files are all there is kept (verify checks their contents)
            task = TaskEntry.from_dict(item)
        except MalformedRecordError:
            continue
        if all(_task_file_present(store, part.file) for part in task.parts):
            tasks.setdefault(task.name, task)
    manifest = Manifest(data["fingerprint"], config, spec, failures=failures, runs=runs, journal_seq=seq,
                        created=created, tasks=tasks, seq=seq)
    return manifest, data.get("shards")


def _task_file_present(store: Path, file: str) -> bool:
    try:
        return task_file(store, file).is_file()
    except FeatureStoreError:  # outside STORE/tasks/, or a link
        return False


def _named(entries: Any) -> dict[str, tuple[int, ShardEntry]]:
    """Shard file name -> (position, entry) for the well-formed entries of a list."""
    out: dict[str, tuple[int, ShardEntry]] = {}
    for i, item in enumerate(entries if isinstance(entries, list) else []):
        try:
            entry = item if isinstance(item, ShardEntry) else ShardEntry.from_dict(item)
            name = check_shard_name(entry.file)
        except (FeatureStoreError, MalformedRecordError):
            continue
        out.setdefault(name, (i, entry))
    return out


def _inspect(file: Path, manifest: Manifest, known: dict[str, tuple[tuple, ShardEntry]],
             rank: int) -> _Shard | str:
    """The shard in ``file`` ready to commit, or why it cannot be."""
    spec = manifest.spec
    try:
        with open_shard(file) as f:
            fingerprint = f.attrs.get("fingerprint")
            if isinstance(fingerprint, bytes):
                fingerprint = fingerprint.decode("utf-8", "replace")
            if fingerprint != manifest.fingerprint:
                return "it was written for another store (its fingerprint differs)"
            digest = content_checksum(f)
            recorded = f.attrs.get(CONTENT_CHECKSUM_ATTR)
            if isinstance(recorded, bytes):
                recorded = recorded.decode("utf-8", "replace")
            if recorded is not None and recorded != digest:
                return "its contents do not match its own checksum (damaged)"
            rows = len(f["keys"])
            if any(len(f[name]) != rows for name in ("labels", "split", "view", "paths")):
                return "its row columns have different lengths (damaged)"
            outputs = {layer.output: layer for layer in spec.layers}
            if set(f["features"]) != set(outputs):
                return "its layers are not the store's"
            for name, layer in outputs.items():
                shape = f["features"][name].shape
                if shape[0] != rows or (layer.pooling != "none" and shape[1:] != (layer.dim,)):
                    return f"its layer {name} has shape {shape} for {rows} rows"
            stats = {name: layer_stats(f["features"][name][()]) for name in outputs}
            written = f.attrs.get(WRITTEN_ATTR)
        columns, layout = read_columns(file)
    except FeatureStoreError as exc:
        return f"it is refused ({exc})"
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"it does not read ({type(exc).__name__}: {exc})"
    checksum = file_checksum(file)
    name = file.name
    order, entry = known.get(name, ((), None))
    if entry is not None and entry.rows == rows and (
            entry.checksum == checksum if entry.checksum_field == "checksum" else entry.checksum == file_sha256(file)):
        named = True  # as committed (keeps the statistics of the values before casting)
    else:  # not the file that was committed under this name, or changed since: described afresh
        order, named = order if file.parent.name == SHARD_DIR else (), False
        entry = ShardEntry(f"{SHARD_DIR}/{name}", rows, checksum, aliases=len(columns.aliases["keys"]), stats=stats)
    entry = entry.moved_to(f"{SHARD_DIR}/{name}").with_layout(layout)
    if not order:  # after the checkpoint's shards: in the order they were written, as one writer commits them
        when = int(written) if written is not None else file.stat().st_mtime_ns
        order = (1, when, rank, name)
    return _Shard(file, entry, columns, {lab for lab in columns.labels.tolist() if lab}, digest, recorded is not None,
                  order, named)


def repair_store(path: str | Path) -> RepairReport:
    """Rebuild the checkpoint, row index and journal of the store at ``path`` from its shard files.

    Reads ``manifest.json`` for the store's model and configuration, and every file in
    ``shards/`` and ``orphans/``. A file is committed when it is a shard written for this
    store (same fingerprint), its contents match the checksum in its own attributes (files
    written before shards recorded one are committed when their columns read, and listed),
    and none of its (key, view) rows is committed already; in the checkpoint's order, then in
    the order the others were written. Failures and
    run provenance are kept from the checkpoint and the journal records that still read, and
    so are tasks whose files are all in ``tasks/`` (a later record's version of a task wins).
    Files that are not committed are moved to ``orphans/``; only temporary files are deleted.

    Parameters
    ----------
    path : str or Path
        The store.

    Returns
    -------
    RepairReport

    Raises
    ------
    StoreLockedError
        Another process is writing to the store.
    StoreError
        ``manifest.json`` is missing or does not read (repair needs the store's configuration).
    UnsafeStoreError
        ``shards``, ``orphans`` or ``index`` is a link or not a folder.
    """
    store = Path(path)
    manifest, entries = _checkpoint(store)
    report = RepairReport(store)
    with _locked(store):
        before_names: set[str] | None = None
        try:
            before = Manifest.load(store)
            report.before_rows, report.before_shards = before.rows, len(before.shards)
            before_names = {shard.file for shard in before.shards}
        except (FeatureStoreError, OSError, ValueError, KeyError, TypeError):
            pass
        base = manifest.seq
        records = [r for r in salvage_records(store) if r.seq > base]
        known = {name: ((0, i), entry) for name, (i, entry) in _named(entries).items()}
        for name, (i, entry) in _named([r.shard for r in records if r.shard is not None]).items():
            known.setdefault(name, ((), entry))
        directory = shard_dir(store)
        files = sorted(directory.iterdir()) if directory.is_dir() else []
        for item in files:
            if item.name.startswith("."):
                item.unlink()
                report.removed.append(f"{SHARD_DIR}/{item.name}")
        files = [f for f in files if not f.name.startswith(".")]
        candidates: list[_Shard] = []
        for rank, item in enumerate(files + orphan_files_in(store)):
            where = f"{item.parent.name}/{item.name}"
            found = _inspect(item, manifest, known, rank) \
                if item.is_file() and not item.is_symlink() else "it is not a regular file"
            if isinstance(found, str):
                report.set_aside.append((where, found))
                if item.parent.name == SHARD_DIR:
                    move_aside(store, item)
            else:
                candidates.append(found)
        # committed files win over copies of their rows (e.g. an orphan whose rows a later run extracted again)
        candidates.sort(key=lambda c: (c.order[0], not c.named, c.order))
        present = {c.path.name for c in candidates} | {Path(name).name for name, _ in report.set_aside}
        report.lost = [f"{SHARD_DIR}/{name}" for name in known if name not in present]
        committed: list[_Shard] = []
        rows: set[tuple[bytes, int]] = set()
        digests: set[str] = set()
        for shard in candidates:
            mine = list(zip(shard.columns.keys.tolist(), shard.columns.views.tolist()))
            where = f"{shard.path.parent.name}/{shard.path.name}"
            if shard.digest in digests or len(set(mine)) != len(mine) or rows.intersection(mine):
                report.set_aside.append((where, "its rows are already committed (by an earlier shard) or repeat"))
                if shard.path.parent.name == SHARD_DIR:
                    move_aside(store, shard.path)
                continue
            rows.update(mine)
            digests.add(shard.digest)
            orphan, name = shard.path.parent.name == ORPHAN_DIR, shard.path.name
            if orphan:
                shard.path = move_aside(store, shard.path, SHARD_DIR)
                shard.entry = shard.entry.moved_to(f"{SHARD_DIR}/{shard.path.name}")
            if orphan or (
                    name not in known if before_names is None else shard.entry.file not in before_names):
                report.recommitted.append(shard.entry.file)
            if not shard.checked:
                report.unchecked.append(shard.entry.file)
            committed.append(shard)
        committed.sort(key=lambda c: c.order)
        _write_checkpoint(store, manifest, committed, records)
    report.rows = sum(len(s.columns) for s in committed)
    report.shards = len(committed)
    return report


def _write_checkpoint(store: Path, manifest: Manifest, committed: list[_Shard], records: list[JournalRecord]) -> None:
    """Commit ``committed`` as the store's checkpoint: a new row index, ``manifest.json``, an empty journal."""
    repaired = replace(manifest, shards=[s.entry for s in committed],
                       classes=tuple(sorted(set().union(*(s.classes for s in committed)))), index=None,
                       failures=list(manifest.failures), runs=list(manifest.runs),
                       seq=max([manifest.seq] + [r.seq for r in records]) + 1)
    for record in records:
        if record.failures:
            repaired.add_failures(record.failures)
        if record.run is not None:
            repaired.runs.append(record.run)
        if record.task is not None and all(_task_file_present(store, part.file) for part in record.task.parts):
            repaired.tasks = {**repaired.tasks, record.task.name: record.task}  # a task committed since
    name = f"rows-{repaired.seq:010d}-repair-{secrets.token_hex(4)}.h5"
    entry = write_row_index(store, name, RowColumns.concatenate([s.columns for s in committed]))
    repaired.save(store, index=entry)
    for item in stale_index_files(store, entry.file):
        item.unlink(missing_ok=True)
