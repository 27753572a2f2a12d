"""The store's commit journal, ``journal.log``: one fsynced line per commit, appended.

A commit (a shard, failures, a run's provenance) costs one short append and one fsync,
whatever the store's size; ``manifest.json`` is a checkpoint that folds the journal in now
and then (see :class:`~featurestore.manifest.Manifest`).

Format: the first line is a header ``{"base": N}`` (the last sequence number the checkpoint
holds); every other line is ``<crc32 hex> <JSON record>`` with the record's ``seq``
numbering on from ``N + 1``. A line is valid when it ends with a newline and its CRC
matches; reading stops at the first invalid line. A kill at any byte of an append leaves
at most one torn line at the end, which readers ignore and the next writer cuts off.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import write_bytes_atomic
from .errors import StoreError

__all__ = ["JOURNAL_NAME", "JournalState", "read_journal", "append_record", "reset_journal", "cut_torn_tail",
           "encode_record"]

JOURNAL_NAME = "journal.log"


@dataclass
class JournalState:
    """What ``journal.log`` holds.

    Attributes
    ----------
    base : int or None
        Sequence number of the checkpoint the journal continues (None: no journal file).
    records : list of dict
        The valid records, in order.
    valid_bytes : int
        Length of the valid prefix (header and records); anything after it is a torn tail.
    size : int
        Length of the file.
    """

    base: int | None
    records: list[dict[str, Any]] = field(default_factory=list)
    valid_bytes: int = 0
    size: int = 0

    @property
    def torn(self) -> bool:
        return self.size > self.valid_bytes


def _header(base: int) -> bytes:
    return json.dumps({"base": base}, separators=(",", ":")).encode() + b"\n"


def encode_record(record: dict[str, Any]) -> bytes:
    """One journal line: the CRC32 of the compact JSON, a space, the JSON, a newline."""
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode(line: bytes) -> dict[str, Any] | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("seq"), int) else None


def read_journal(store: str | Path) -> JournalState:
    """The valid records of ``STORE/journal.log`` (a torn tail is left out).

    Raises
    ------
    StoreError
        The file is not a journal (its first line is not a header) or is a link.
    """
    path = Path(store) / JOURNAL_NAME
    if path.is_symlink():
        raise StoreError(f"{path} is a link; refusing the store (it must never make us read outside it)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalState(None)
    first, sep, _ = data.partition(b"\n")
    try:
        header = json.loads(first) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("base"), int):
        raise StoreError(f"{path} does not start with a journal header; the store is damaged")
    state = JournalState(header["base"], valid_bytes=len(first) + 1, size=len(data))
    expected = state.base + 1
    position = state.valid_bytes
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            break
        record = _decode(data[position:end])
        if record is None or record["seq"] != expected:
            break
        state.records.append(record)
        expected += 1
        position = end + 1
        state.valid_bytes = position
    return state


def append_record(store: str | Path, record: dict[str, Any]) -> int:
    """Append one record and fsync it; returns the bytes written.

    One ``write`` on an ``O_APPEND`` descriptor, then ``fdatasync``: once this returns, the
    record survives a kill or a power cut.
    """
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
