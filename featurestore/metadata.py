"""The store's metadata records, typed: a shard's entry, the row index's entry, a failure, a journal record.

Each is a frozen dataclass with one ``from_dict`` (the structural checks a record read from
``manifest.json`` or ``journal.log`` must pass: a store from elsewhere is untrusted) and one
``to_dict`` (the JSON object as it is written, key for key, so that stores written before
these classes existed keep their bytes when they are rewritten). Nothing outside this module
reads these records by string key. :class:`~featurestore.manifest.Manifest`, the checkpoint
that holds them, is built from the same checks.

``from_dict`` raises :class:`MalformedRecordError` saying where a record is wrong (``shards[3].rows
is 'four', expected an integer >= 0``); the manifest and the journal turn it into one
:class:`~featurestore.errors.StoreDamagedError` naming their file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .errors import MalformedRecordError

__all__ = ["MAX_SHARD_ROWS", "FeatureLayout", "ShardEntry", "IndexEntry", "Failure", "JournalRecord"]
__all__ += ["TASK_TYPES", "TaskPart", "TaskEntry", "check_task_name"]

#: The most rows an entry may say one shard holds (far beyond any shard a writer makes; the
#: shard file's own row count is checked wherever the shard is read).
MAX_SHARD_ROWS = 1 << 40
#: The statistics every layer of a shard entry records (``norm_sum`` and ``nonfinite`` are later additions).
_STAT_FIELDS = ("count", "sum", "sumsq", "min", "max")
_NUMBER = (int, float)
#: The types a task may have: one class per row, a float per row, a set of labels per row.
TASK_TYPES = ("classification", "regression", "multilabel")
#: What a task name may be: it is shown in reports and used as a column and flag value.
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The keys a shard entry may hold, by the key its checksum is under; any other is kept in ``extra``.
_KNOWN_SHARD_FIELDS = {"checksum": frozenset(("file", "rows", "checksum", "aliases", "layout", "stats")),
                       "sha256": frozenset(("file", "rows", "sha256", "aliases", "layout", "stats"))}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def need(ok: bool, where: str, value: Any, expected: str) -> None:
    """Raise :class:`MalformedRecordError` ``"<where> is <value>, expected <expected>"`` unless ``ok``."""
    if not ok:
        raise MalformedRecordError(f"{where} is {_short(value)}, expected {expected}")


def is_count(value: Any) -> bool:
    """Whether ``value`` is an integer >= 0 (not a bool)."""
    return type(value) is int and value >= 0


def _counts(values: list[Any]) -> bool:
    """Whether every item of ``values`` is an integer >= 0 (a row shape: one or two items, no generator)."""
    for value in values:
        if type(value) is not int or value < 0:
            return False
    return True


def is_strings(value: Any) -> bool:
    """Whether ``value`` is a list of str."""
    return type(value) is list and all(type(v) is str for v in value)


def _fail(where: str, name: str, value: Any, expected: str) -> None:
    raise MalformedRecordError(f"{where}{name} is {_short(value)}, expected {expected}")


def _unknown(data: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in known}


@dataclass(frozen=True)
class FeatureLayout:
    """Where one feature dataset's values lie in its shard file.

    Attributes
    ----------
    offset : int or None
        Byte offset of the first row; None when the dataset has no storage allocated (no
        rows) or is not stored contiguously (then read it through h5py).
    shape : tuple of int
    dtype : numpy.dtype
    """

    offset: int | None
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        """Bytes of one row."""
        return int(self.dtype.itemsize * np.prod(self.shape[1:], dtype=np.int64))


@dataclass(frozen=True)
class ShardEntry:
    """One committed shard, as the manifest and the journal record it.

    Attributes
    ----------
    file : str
        ``shards/<name>``, relative to the store.
    rows : int
    checksum : str
        ``xxh3_128:<hex>`` of the file (a bare sha256 hex digest in entries written before schema 2).
    aliases : int or None
        Alias rows the shard holds (None: not recorded).
    layout : dict or None
        Output -> ``(offset, row shape)`` of each feature dataset in the file (None: written
        before schema 2; read it from the file).
    stats : dict or None
        Output -> aggregatable statistics of its rows (see :func:`~featurestore.shard_buffer.layer_stats`).
    checksum_field : {'checksum', 'sha256'}
        The key the checksum is stored under (``sha256`` before schema 2).
    extra : dict
        Fields this featurestore does not know, kept as they are.
    """

    file: str
    rows: int
    checksum: str
    aliases: int | None = None
    layout: dict[str, tuple[int | None, tuple[int, ...]]] | None = None
    stats: dict[str, dict[str, float]] | None = None
    checksum_field: str = "checksum"
    extra: dict[str, Any] = field(default_factory=dict)
    #: The JSON object (built once; a changed copy made with ``dataclasses.replace`` builds its own).
    _json: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The file's name in ``shards/``."""
        return PurePosixPath(self.file).name

    @classmethod
    def from_dict(cls, data: Any, where: str = "shard") -> "ShardEntry":
        """Check and build an entry from its JSON object.

        Run for every shard at every open: the checks build no message unless one fails.

        Raises
        ------
        MalformedRecordError
            A field is missing or of the wrong type (the message says which, under ``where``).
        """
        if type(data) is not dict:
            _fail(where, "", data, "an object")
        file, rows, aliases = data.get("file"), data.get("rows"), data.get("aliases")
        if type(file) is not str:
            _fail(where, ".file", file, "a string")
        if type(rows) is not int or rows < 0:
            _fail(where, ".rows", rows, "an integer >= 0")
        if rows > MAX_SHARD_ROWS:
            _fail(where, ".rows", rows, f"at most {MAX_SHARD_ROWS}")
        if aliases is not None and (type(aliases) is not int or aliases < 0):
            _fail(where, ".aliases", aliases, "an integer >= 0")
        checksum_field = "checksum" if "checksum" in data or "sha256" not in data else "sha256"
        checksum = data.get(checksum_field)
        if type(checksum) is not str:
            _fail(where, ".checksum", checksum, "a string")
        layout = data.get("layout")
        if layout is not None:
            if type(layout) is not dict:
                _fail(where, ".layout", layout, "an object")
            typed = {}
            for out, item in layout.items():
                if not (type(item) is list and len(item) == 2 and (item[0] is None or is_count(item[0]))
                        and type(item[1]) is list and _counts(item[1])):
                    _fail(where, f".layout[{out!r}]", item, "[offset, row shape]")
                typed[out] = (item[0], tuple(item[1]))
            layout = typed
        stats = data.get("stats")
        if stats is not None:
            if type(stats) is not dict:
                _fail(where, ".stats", stats, "an object")
            for out, item in stats.items():
                if not (type(item) is dict and type(item.get("count")) in _NUMBER and type(item.get("sum")) in _NUMBER
                        and type(item.get("sumsq")) in _NUMBER and type(item.get("min")) in _NUMBER
                        and type(item.get("max")) in _NUMBER and type(item.get("norm_sum", 0.0)) in _NUMBER):
                    _fail(where, f".stats[{out!r}]", item, f"numbers {', '.join(_STAT_FIELDS)}, norm_sum")
        known = _KNOWN_SHARD_FIELDS[checksum_field]
        extra = {} if data.keys() <= known else {key: value for key, value in data.items() if key not in known}
        entry = cls(file, rows, checksum, aliases, layout, stats, checksum_field, extra)
        object.__setattr__(entry, "_json", data)  # what was read is what to_dict gives back
        return entry

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the manifest and the journal hold it (do not modify it)."""
        if self._json is not None:
            return self._json
        out: dict[str, Any] = {"file": self.file, "rows": self.rows, self.checksum_field: self.checksum}
        if self.aliases is not None:
            out["aliases"] = self.aliases
        if self.layout is not None:
            out["layout"] = {name: [offset, list(shape)] for name, (offset, shape) in self.layout.items()}
        if self.stats is not None:
            out["stats"] = self.stats
        out = {**self.extra, **out}
        object.__setattr__(self, "_json", out)
        return out

    def feature_layouts(self, dtype: np.dtype) -> dict[str, FeatureLayout] | None:
        """Where each feature dataset lies, as recorded (None for an entry written before schema 2:
        read it from the file)."""
        if self.layout is None:
            return None
        return {out: FeatureLayout(offset, (self.rows, *shape), np.dtype(dtype))
                for out, (offset, shape) in self.layout.items()}

    def with_layout(self, layouts: dict[str, FeatureLayout]) -> "ShardEntry":
        """This entry with ``layouts`` (as read from the file) recorded, unless it records one already."""
        if self.layout is not None:
            return self
        return replace(self, layout={out: (item.offset, tuple(item.shape[1:])) for out, item in layouts.items()})

    def moved_to(self, file: str) -> "ShardEntry":
        """This entry for the same shard under another name."""
        return replace(self, file=file)


@dataclass(frozen=True)
class IndexEntry:
    """The row index a checkpoint names (see :mod:`featurestore.row_index`).

    Attributes
    ----------
    file : str
        ``index/<name>``, relative to the store.
    rows : int
    checksum : str
        ``xxh3_128:<hex>`` of the file.
    shards : int
        How many of the checkpoint's first shards it covers.
    layout : dict or None
        Column -> ``[offset, shape, dtype]`` in the file (None: read it through h5py).
    extra : dict
        Fields this featurestore does not know, kept as they are.
    """

    file: str
    rows: int
    checksum: str
    shards: int = 0
    layout: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("file", "rows", "checksum", "shards", "layout")

    @classmethod
    def from_dict(cls, data: Any, where: str = "index") -> "IndexEntry":
        """Check and build an entry from its JSON object (raises :class:`MalformedRecordError`)."""
        need(type(data) is dict and type(data.get("file")) is str and is_count(data.get("rows"))
             and is_count(data.get("shards")) and type(data.get("checksum")) is str
             and type(data.get("layout", {})) is dict, where, data, "{file, rows, checksum, shards, layout}")
        return cls(data["file"], data["rows"], data["checksum"], data["shards"], data.get("layout"),
                   _unknown(data, cls._FIELDS))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the manifest holds it."""
        out: dict[str, Any] = {"file": self.file, "rows": self.rows, "checksum": self.checksum, "shards": self.shards}
        if self.layout is not None:
            out["layout"] = self.layout
        return {**self.extra, **out}


@dataclass(frozen=True)
class Failure:
    """An input that gave no row: where it was, its content key if it read, the error class and message."""

    path: str
    key: str | None
    error: str
    message: str

    @classmethod
    def from_dict(cls, data: Any, where: str = "failure") -> "Failure":
        """Check and build a failure from its JSON object (raises :class:`MalformedRecordError`)."""
        need(type(data) is dict and type(data.get("path")) is str
             and (data.get("key") is None or type(data.get("key")) is str)
             and type(data.get("error")) is str and type(data.get("message")) is str,
             where, data, "{path, key, error, message}")
        return cls(data["path"], data.get("key"), data["error"], data["message"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (also what :attr:`FeatureStore.failures <featurestore.FeatureStore.failures>` lists)."""
        return {"path": self.path, "key": self.key, "error": self.error, "message": self.message}

    @property
    def seen(self) -> tuple[str, str | None]:
        """``(path, key)``: two failures with the same are recorded once."""
        return self.path, self.key


def check_task_name(name: Any) -> bool:
    """Whether ``name`` is a valid task name: 1 to 64 of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit."""
    return type(name) is str and _TASK_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class TaskPart:
    """One file of a task's values (``tasks/<name>.h5``, see :mod:`featurestore.tasks`).

    Attributes
    ----------
    file : str
        ``tasks/<name>``, relative to the store.
    rows : int
        Content keys it gives a value.
    checksum : str
        ``xxh3_128:<hex>`` of the file.
    """

    file: str
    rows: int
    checksum: str

    @classmethod
    def from_dict(cls, data: Any, where: str = "part") -> "TaskPart":
        """Check and build a part from its JSON object (raises :class:`MalformedRecordError`)."""
        need(type(data) is dict and set(data) == {"file", "rows", "checksum"} and type(data["file"]) is str
             and is_count(data["rows"]) and data["rows"] <= MAX_SHARD_ROWS and type(data["checksum"]) is str,
             where, data, "{file, rows, checksum}")
        return cls(data["file"], data["rows"], data["checksum"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the manifest and the journal hold it."""
        return {"file": self.file, "rows": self.rows, "checksum": self.checksum}


@dataclass(frozen=True)
class TaskEntry:
    """A task attached to a store: its name, its type and the files holding its values.

    A task gives values to content keys, so a value applies to every row (every view) of
    that content and survives re-extraction. Its parts are read in order, a later part's
    value for a key replacing an earlier one's.

    Attributes
    ----------
    name : str
        See :func:`check_task_name`.
    type : {'classification', 'regression', 'multilabel'}
    parts : tuple of TaskPart
    """

    name: str
    type: str
    parts: tuple[TaskPart, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: str = "task") -> "TaskEntry":
        """Check and build a task from its JSON object (raises :class:`MalformedRecordError`)."""
        need(type(data) is dict and set(data) == {"name", "type", "parts"}, where, data, "{name, type, parts}")
        need(check_task_name(data["name"]), f"{where}.name", data["name"],
             "1 to 64 letters, digits, '_', '.' or '-'")
        need(data["type"] in TASK_TYPES, f"{where}.type", data["type"], f"one of {', '.join(TASK_TYPES)}")
        need(type(data["parts"]) is list, f"{where}.parts", data["parts"], "a list")
        parts = tuple(TaskPart.from_dict(item, f"{where}.parts[{i}]") for i, item in enumerate(data["parts"]))
        need(len({part.file for part in parts}) == len(parts), f"{where}.parts", data["parts"], "distinct files")
        return cls(data["name"], data["type"], parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the manifest and the journal hold it."""
        return {"name": self.name, "type": self.type, "parts": [part.to_dict() for part in self.parts]}

    @property
    def rows(self) -> int:
        """Values its parts hold, counting a key given again by a later part twice."""
        return sum(part.rows for part in self.parts)


@dataclass(frozen=True)
class JournalRecord:
    """One commit in ``journal.log``: a shard and the labels it holds, new failures, a task, a run's provenance.

    Attributes
    ----------
    seq : int
        Its sequence number (>= 1 once appended; 0 for a commit not yet numbered).
    shard : ShardEntry or None
    classes : tuple of str or None
        The labels the shard holds (None: not recorded).
    failures : tuple of Failure or None
    run : dict or None
        Provenance of the run that ended with this commit (free-form).
    task : TaskEntry or None
        A task as it stands after this commit (it replaces the task of that name).
    """

    seq: int = 0
    shard: ShardEntry | None = None
    classes: tuple[str, ...] | None = None
    failures: tuple[Failure, ...] | None = None
    run: dict[str, Any] | None = None
    task: TaskEntry | None = None

    _FIELDS = ("seq", "shard", "classes", "failures", "run", "task")

    @classmethod
    def from_dict(cls, data: Any) -> "JournalRecord":
        """Check and build a record from its JSON object.

        A record is an object with an integer ``seq`` >= 1 and any of ``shard`` (a shard
        entry), ``classes`` (strings), ``failures`` (objects with string ``path``, ``error``
        and ``message`` and a string or null ``key``), ``task`` (a :class:`TaskEntry`) and ``run``
        (an object).

        Raises
        ------
        MalformedRecordError
            Says what is wrong, as "its ..." (the journal's messages name the line).
        """
        if type(data) is not dict:
            raise MalformedRecordError("it is not an object")
        unknown = sorted(set(data) - set(cls._FIELDS))
        if unknown:
            raise MalformedRecordError(f"it has unknown field(s) {', '.join(map(repr, unknown))}")
        seq = data.get("seq")
        if not is_count(seq) or seq < 1:
            raise MalformedRecordError(f"its sequence number is {seq!r}")
        shard = None
        if "shard" in data:
            try:
                shard = ShardEntry.from_dict(data["shard"], "shard")
            except MalformedRecordError as exc:
                raise MalformedRecordError(f"its {exc}") from None
        classes = data.get("classes")
        if classes is not None and not is_strings(classes):
            raise MalformedRecordError("its classes are not a list of strings")
        failures = data.get("failures")
        if failures is not None:
            try:
                need(type(failures) is list, "failures", failures, "a list")
                failures = tuple(Failure.from_dict(item) for item in failures)
            except MalformedRecordError:
                raise MalformedRecordError("its failures are malformed") from None
        run = data.get("run")
        if "run" in data and type(run) is not dict:
            raise MalformedRecordError("its run is not an object")
        task = None
        if "task" in data:
            try:
                task = TaskEntry.from_dict(data["task"], "task")
            except MalformedRecordError as exc:
                raise MalformedRecordError(f"its {exc}") from None
        return cls(seq, shard, None if classes is None else tuple(classes), failures, run, task)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as the journal holds it (absent fields left out)."""
        out: dict[str, Any] = {"seq": self.seq}
        if self.shard is not None:
            out["shard"] = self.shard.to_dict()
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.failures is not None:
            out["failures"] = [failure.to_dict() for failure in self.failures]
        if self.run is not None:
            out["run"] = self.run
        if self.task is not None:
            out["task"] = self.task.to_dict()
        return out

    def numbered(self, seq: int) -> "JournalRecord":
        """This record with sequence number ``seq``."""
        return replace(self, seq=seq)
