"""The store's commit journal, ``journal.log``: one fsynced line per commit, appended.

A commit (a shard, failures, a run's provenance) costs one short append and one fsync,
whatever the store's size; ``manifest.json`` is a checkpoint that folds the journal in now
and then (see :class:`~featurestore.manifest.Manifest`).

Format: the first line is a header ``{"base": N, "version": 1}`` (``base``: the last
sequence number the checkpoint holds; ``version``: the journal format, absent in journals
written before it was recorded, which read as version 1); every other line is
``<crc32 hex> <JSON record>`` with the record's ``seq`` numbering on from ``N + 1``.

A kill at any byte of an append leaves at most one torn line, the last one, which readers
ignore and the next writer cuts off. Anything else that does not read is damage, refused
with :class:`~featurestore.errors.StoreDamagedError` (``featurestore repair`` rebuilds the
store from its shard files): a bad line with more bytes after it, a record whose checksum
matches but whose sequence number repeats or skips, or whose fields are not what a writer
writes (:func:`record_problem`), and a header that is not one.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import path_kind, read_regular_file, write_bytes_atomic
from .errors import MalformedRecordError, NotAFileError, StoreDamagedError, StoreError, UnsafeStoreError
from .metadata import JournalRecord

__all__ = ["JOURNAL_NAME", "JOURNAL_VERSION", "JournalState", "read_journal", "salvage_records", "record_problem",
           "append_record", "reset_journal", "cut_torn_tail", "encode_record"]

JOURNAL_NAME = "journal.log"
#: The journal format this featurestore writes and reads (a header without ``version`` is version 1).
JOURNAL_VERSION = 1


@dataclass
class JournalState:
    """What ``journal.log`` holds.

    Attributes
    ----------
    base : int or None
        Sequence number of the checkpoint the journal continues (None: no journal file).
    records : list of JournalRecord
        The valid records, in order.
    valid_bytes : int
        Length of the valid prefix (header and records); anything after it is a torn tail.
    size : int
        Length of the file.
    version : int
        The journal format its header records (1 for a header without one).
    """

    base: int | None
    records: list[JournalRecord] = field(default_factory=list)
    valid_bytes: int = 0
    size: int = 0
    version: int = JOURNAL_VERSION

    @property
    def torn(self) -> bool:
        return self.size > self.valid_bytes


def _header(base: int) -> bytes:
    return json.dumps({"base": base, "version": JOURNAL_VERSION}, separators=(",", ":")).encode() + b"\n"


def encode_record(record: JournalRecord | dict[str, Any]) -> bytes:
    """One journal line: the CRC32 of the compact JSON, a space, the JSON, a newline."""
    data = record.to_dict() if isinstance(record, JournalRecord) else record
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def record_problem(record: Any) -> str | None:
    """What is wrong with a journal record's structure, or None when it is what a writer writes
    (see :meth:`JournalRecord.from_dict <featurestore.metadata.JournalRecord.from_dict>`)."""
    try:
        JournalRecord.from_dict(record)
    except MalformedRecordError as exc:
        return str(exc)
    return None


def _decode(line: bytes) -> tuple[bool, Any]:
    """(whether the line's CRC matches, the parsed JSON or None)."""
    if len(line) < 10 or line[8:9] != b" ":
        return False, None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return False, None
        return True, json.loads(body)
    except ValueError:
        return False, None


def _damaged(path: Path, why: str) -> StoreDamagedError:
    return StoreDamagedError(f"{path}: {why}; the store is damaged, nothing was changed: run "
                             f"`featurestore repair {path.parent}` to rebuild it from its shard files")


def _read_header(path: Path, data: bytes) -> tuple[int, int, int]:
    """(base, version, header length) of a journal's bytes."""
    first, sep, _ = data.partition(b"\n")
    try:
        header = json.loads(first) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not _is_int(header.get("base")):
        raise _damaged(path, 'it does not start with a journal header {"base": N, "version": 1}')
    version = header.get("version", 1)
    if not _is_int(version) or version != JOURNAL_VERSION:
        raise StoreError(f"{path} has journal format version {version!r}; this featurestore reads version "
                         f"{JOURNAL_VERSION}: use the featurestore that wrote the store, or a newer one")
    if header["base"] < 0:
        raise _damaged(path, f"its header says it continues checkpoint {header['base']}, and a checkpoint "
                             "number is never negative")
    return header["base"], version, len(first) + 1


def _journal_bytes(path: Path) -> bytes | None:
    """The journal's bytes (None when there is none), opened without following a link."""
    try:
        return read_regular_file(path, follow_links=False)
    except FileNotFoundError:
        return None
    except NotAFileError:
        raise UnsafeStoreError(f"journal {path} is {path_kind(path)}, not a regular file; refusing the "
                               "store (it must never make us read anything outside it)") from None


def read_journal(store: str | Path) -> JournalState:
    """The records of ``STORE/journal.log``; a torn last line is left out.

    Only the last line may be torn (a writer killed while appending it): a line that does not
    read, with more bytes after it, is damage, and so is a record whose checksum matches but
    whose sequence number does not follow the previous one (a repeated record) or whose
    fields are malformed (:func:`record_problem`), or two records committing the same shard
    file.

    Raises
    ------
    StoreDamagedError
        The journal is damaged as described; the message names the line.
    StoreError
        The file is a link, or has a journal format version this featurestore does not read.
    """
    path = Path(store) / JOURNAL_NAME
    data = _journal_bytes(path)
    if data is None:
        return JournalState(None)
    base, version, position = _read_header(path, data)
    state = JournalState(base, valid_bytes=position, size=len(data), version=version)
    expected = base + 1
    files: set[str] = set()
    line = 1
    while position < len(data):
        line += 1
        end = data.find(b"\n", position)
        if end < 0:
            break  # torn: the last line, cut short
        good, record = _decode(data[position:end])
        if not good:
            if end + 1 == len(data):
                break  # torn: the last line, garbled (a power cut before its fsync)
            raise _damaged(path, f"line {line} (byte {position}) does not match its checksum and "
                                 f"{len(data) - end - 1} bytes of later records follow it")
        try:
            record = JournalRecord.from_dict(record)
            problem = None
        except MalformedRecordError as exc:
            problem = str(exc)
        if problem is None and record.seq != expected:
            problem = (f"its sequence number is {record.seq}, the one after the previous record is {expected} "
                       "(a repeated or missing record)")
        if problem is None and record.shard is not None:
            if record.shard.file in files:
                problem = f"it commits shard {record.shard.file} a second time"
            files.add(record.shard.file)
        if problem:
            raise _damaged(path, f"line {line} (record {expected}) is not a valid commit: {problem}")
        state.records.append(record)
        expected += 1
        position = end + 1
        state.valid_bytes = position
    return state


def salvage_records(store: str | Path) -> list[JournalRecord]:
    """Every record of ``STORE/journal.log`` that still reads (checksum and fields), whatever surrounds
    it, in file order, the first of each sequence number kept; for ``featurestore repair``.

    Raises
    ------
    StoreError
        The journal is a link.
    """
    data = _journal_bytes(Path(store) / JOURNAL_NAME)
    if data is None:
        return []
    out: list[JournalRecord] = []
    seen: set[int] = set()
    for line in data.split(b"\n")[1:]:
        good, parsed = _decode(line)
        if not good:
            continue
        try:
            record = JournalRecord.from_dict(parsed)
        except MalformedRecordError:
            continue
        if record.seq not in seen:
            seen.add(record.seq)
            out.append(record)
    return out


def append_record(store: str | Path, record: JournalRecord | dict[str, Any]) -> int:
    """Append one record and fsync it; returns the bytes written.

    One ``write`` on an ``O_APPEND`` descriptor, then ``fdatasync``: once this returns, the
    record survives a kill or a power cut.

    Raises
    ------
    StoreError
        The record is not well-formed (:func:`record_problem`); nothing is written.
    """
    problem = record_problem(record.to_dict() if isinstance(record, JournalRecord) else record)
    if problem:
        raise StoreError(f"refusing to commit a malformed record to {Path(store) / JOURNAL_NAME}: {problem}")
    line = encode_record(record)
    fd = os.open(Path(store) / JOURNAL_NAME, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return len(line)


def reset_journal(store: str | Path, base: int) -> None:
    """Replace the journal atomically by an empty one continuing checkpoint ``base``."""
    write_bytes_atomic(Path(store) / JOURNAL_NAME, _header(base))


def cut_torn_tail(store: str | Path, state: JournalState) -> None:
    """Cut a torn last line off the journal, so that appends follow the last valid record."""
    if not state.torn:
        return
    fd = os.open(Path(store) / JOURNAL_NAME, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, state.valid_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
