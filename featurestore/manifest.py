"""The store's committed state: ``manifest.json`` (a checkpoint) plus ``journal.log`` (commits since).

A shard exists for readers only once the checkpoint or a valid journal record names it.
Each commit appends one fsynced record to the journal (:mod:`featurestore.journal`), so a
commit costs the same in a store of ten shards or a hundred thousand. Now and then the
writer folds the journal into a new checkpoint: it writes a new row index, replaces
``manifest.json`` atomically (temporary file, fsync, ``os.replace``, fsync of the
directory) and then resets the journal; a kill at any moment leaves a state that opens.

Schema 1 stores (manifest only, no journal, no row index) keep opening; the next writer,
or ``featurestore migrate``, upgrades them to schema 2.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ._atomic import write_bytes_atomic
from .journal import JOURNAL_NAME, append_record, read_journal, reset_journal
from ._time import utc_timestamp
from .errors import MalformedRecordError, StoreDamagedError, StoreError
from .metadata import Failure, IndexEntry, JournalRecord, ShardEntry, TaskEntry, is_count, is_strings, need
from .spec import ModelSpec
from .store_paths import TASK_DIR, check_shard_name, check_store_name, read_store_file, uncommitted_shards

__all__ = ["MANIFEST_NAME", "STORE_SCHEMA_VERSION", "READABLE_SCHEMAS", "StoreConfig", "Manifest", "committed_digest"]

MANIFEST_NAME = "manifest.json"
STORE_SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class StoreConfig:
    """Everything a store's rows depend on; its hash is the store's fingerprint.

    Parameters
    ----------
    model_sha256 : str
        sha256 of the ONNX file's bytes.
    backbone : str
        Backbone name from the model spec (for messages).
    layers : tuple of str
        Output names stored, each ``name:dim:pooling``.
    preprocessing : str
        Canonical JSON of the model's preprocessing.
    views : int
        Augmented views stored per image beside the clean one (view 0).
    augment : tuple of str
        Augmentations applied to views 1..views.
    dtype : {'float32', 'float16'}
        Storage dtype of the features.
    """

    model_sha256: str
    backbone: str
    layers: tuple[str, ...]
    preprocessing: str
    views: int = 0
    augment: tuple[str, ...] = ()
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "augment", tuple(self.augment))
        if self.dtype not in DTYPES:
            raise StoreError(f"dtype {self.dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
        if self.views < 0:
            raise StoreError(f"views must be >= 0, got {self.views}")
        if self.views and not self.augment:
            raise StoreError("views > 0 needs at least one augmentation (--augment)")

    @classmethod
    def from_spec(cls, spec: ModelSpec, model_sha256: str, *, views: int = 0,
                  augment: tuple[str, ...] = (), dtype: str = "float32") -> "StoreConfig":
        """The config of extracting with ``spec`` (a model file hashing to ``model_sha256``)."""
        layers = tuple(f"{layer.output}:{layer.dim}:{layer.pooling}" for layer in spec.layers)
        prep = json.dumps(spec.preprocessing.to_dict(), sort_keys=True, separators=(",", ":"))
        return cls(model_sha256, spec.backbone, layers, prep, views, tuple(augment), dtype)

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of this config (the backbone name is for messages only)."""
        data = asdict(self)
        data.pop("backbone")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def differences(self, other: "StoreConfig") -> list[str]:
        """Human-readable differences between the store's config (self) and ``other``."""
        out = []
        if self.model_sha256 != other.model_sha256:
            out.append(f"model: store has {self.backbone} (sha256 {self.model_sha256[:12]}...), "
                       f"this run uses {other.backbone} (sha256 {other.model_sha256[:12]}...)")
        for field_name in ("layers", "preprocessing", "views", "augment", "dtype"):
            mine, theirs = getattr(self, field_name), getattr(other, field_name)
            if mine != theirs:
                out.append(f"{field_name}: store has {_show(mine)}, this run uses {_show(theirs)}")
        return out


def _show(value: Any) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)


_DAMAGED = "the store is damaged (restore the file, or extract again into a new store)"
#: The checkpoint's fields; any other is kept as it is (:attr:`Manifest.extra`).
_FIELDS = ("schema_version", "fingerprint", "config", "model_spec", "created", "updated", "classes", "shards",
           "failures", "runs", "journal_seq", "index", "tasks")


@dataclass(eq=False)
class Manifest:
    """A store's committed state: the checkpoint in ``manifest.json`` with the journal's records applied.

    Its fields are the checkpoint's, typed (:meth:`from_dict` checks them, :meth:`to_dict`
    gives back the JSON document key for key). Unlike the records it holds it is not frozen:
    each commit applies one journal record in place, so that a commit costs the same in a
    store of ten shards or a hundred thousand.

    Attributes
    ----------
    fingerprint : str
    config : StoreConfig
    spec : ModelSpec
        The model's spec (``model_spec`` in the file).
    schema_version : int
    classes : tuple of str
        Every label the committed shards hold, sorted.
    shards : list of ShardEntry
    failures : list of Failure
        Inputs that gave no row (``path``, ``key``, ``error``, ``message``).
    runs : list of dict
        Provenance of each run that changed the store.
    journal_seq : int
        The last journal record the checkpoint file holds.
    index : IndexEntry or None
        The row index covering the checkpoint's first ``index.shards`` shards.
    created, updated : str or None
        When the store was created and last checkpointed (UTC).
    tasks : dict of str to TaskEntry
        The tasks attached to the store, by name (``tasks`` in the file, a list; absent while
        there is none, so that stores without tasks keep their bytes).
    extra : dict
        Fields this featurestore does not know, kept as they are.
    seq : int
        The last journal record applied (not part of the file).
    checkpoint_shards : int
        How many of :attr:`shards` the checkpoint file itself names (the rest came from the journal).
    """

    fingerprint: str
    config: StoreConfig
    spec: ModelSpec
    schema_version: int = STORE_SCHEMA_VERSION
    classes: tuple[str, ...] = ()
    shards: list[ShardEntry] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    journal_seq: int = 0
    index: IndexEntry | None = None
    created: str | None = None
    updated: str | None = None
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    checkpoint_shards: int = 0

    def __post_init__(self) -> None:
        self.checkpoint_shards = len(self.shards)

    @classmethod
    def new(cls, config: StoreConfig, spec: ModelSpec) -> "Manifest":
        """The state of an empty store (write it with :meth:`save`)."""
        return cls(config.fingerprint, config, spec, created=utc_timestamp())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        """Check a checkpoint's structure and build its state (``seq`` is its ``journal_seq``).

        Checked once, when the manifest is read, so that nothing later meets a wrong type: the
        config and model spec must build, and every shard entry, failure, class, run and the
        index entry must have their fields' types.

        Raises
        ------
        MalformedRecordError
            Says where the document is wrong.
        """
        need(type(data.get("fingerprint")) is str, "fingerprint", data.get("fingerprint"), "a string")
        config = data.get("config")
        need(type(config) is dict, "config", config, "an object")
        try:
            store_config = StoreConfig(**config)
            spec = ModelSpec.from_dict(data.get("model_spec") if type(data.get("model_spec")) is dict else {})
        except (TypeError, ValueError) as exc:  # StoreError and SpecError are ValueErrors
            raise MalformedRecordError(f"config or model_spec does not build ({exc})") from None
        need(is_strings(config["layers"]) and is_strings(config["augment"]) and is_count(config.get("views", 0)),
             "config", config, "layers and augment as lists of strings, views an integer")
        need(is_strings(data.get("classes")), "classes", data.get("classes"), "a list of strings")
        shards = data.get("shards")
        need(type(shards) is list, "shards", shards, "a list")
        with _gc_paused():
            entries = [ShardEntry.from_dict(entry, f"shards[{i}]") for i, entry in enumerate(shards)]
        failures = data.get("failures")
        need(type(failures) is list, "failures", failures, "a list")
        failures = [Failure.from_dict(item, f"failures[{i}]") for i, item in enumerate(failures)]
        runs = data.get("runs", [])
        need(type(runs) is list and all(type(r) is dict for r in runs), "runs", runs, "a list of objects")
        seq = data.get("journal_seq", 0)
        need(is_count(seq), "journal_seq", seq, "an integer >= 0")
        index = data.get("index")
        need(type(data.get("schema_version")) is int, "schema_version", data.get("schema_version"), "an integer")
        tasks = data.get("tasks", [])
        need(type(tasks) is list, "tasks", tasks, "a list")
        tasks = [TaskEntry.from_dict(item, f"tasks[{i}]") for i, item in enumerate(tasks)]
        need(len({task.name for task in tasks}) == len(tasks), "tasks", [t.name for t in tasks], "distinct names")
        stamps = {name: data[name] for name in ("created", "updated") if type(data.get(name)) is str}
        extra = {k: v for k, v in data.items() if k not in _FIELDS or k in ("created", "updated") and k not in stamps}
        return cls(data["fingerprint"], store_config, spec, schema_version=data["schema_version"],
                   classes=tuple(data["classes"]), shards=entries, failures=failures, runs=list(runs), journal_seq=seq,
                   index=None if index is None else IndexEntry.from_dict(index), created=stamps.get("created"),
                   updated=stamps.get("updated"), tasks={task.name: task for task in tasks}, extra=extra, seq=seq)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's JSON document, as ``manifest.json`` holds it."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "fingerprint": self.fingerprint,
            "config": asdict(self.config),
            "model_spec": self.spec.to_dict(),
            "classes": list(self.classes),
            "shards": [shard.to_dict() for shard in self.shards],
            "failures": [failure.to_dict() for failure in self.failures],
            "runs": self.runs,
        }
        if self.schema_version >= 2:  # schema 1 had no journal and no row index
            out["journal_seq"] = self.journal_seq
            out["index"] = None if self.index is None else self.index.to_dict()
        for name in ("created", "updated"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.tasks:
            out["tasks"] = [task.to_dict() for task in self.tasks.values()]
        return {**self.extra, **out}

    @property
    def data(self) -> dict[str, Any]:
        """The JSON document (:meth:`to_dict`)."""
        return self.to_dict()

    @classmethod
    def load(cls, store: str | Path) -> "Manifest":
        """Read ``STORE/manifest.json`` and apply the valid records of ``STORE/journal.log``.

        A torn last journal record (a writer killed while appending) is ignored. If a writer
        checkpoints while this reads, the read starts again.

        Raises
        ------
        StoreDamagedError
            The journal is damaged (see :func:`~featurestore.journal.read_journal`), commits a
            shard the checkpoint already holds, continues another checkpoint, or is missing
            where commits may have been lost (run ``featurestore repair``).
        StoreError
            Not a store, damaged JSON, or a schema this featurestore cannot read.
        UnsafeStoreError
            The manifest names a shard outside ``STORE/shards/``.
        """
        previous = None
        for _ in range(20):
            manifest = cls._read_checkpoint(Path(store))
            if manifest.schema_version == 1:
                return manifest
            journal = read_journal(store)
            base = manifest.journal_seq
            if journal.base is not None and journal.base > base:
                stamp = _file_stamp(Path(store) / MANIFEST_NAME)
                if stamp == previous:  # the same checkpoint twice: no writer is replacing it
                    raise StoreDamagedError(
                        f"{Path(store) / JOURNAL_NAME} continues checkpoint {journal.base}, but {MANIFEST_NAME} is "
                        f"checkpoint {base}: the journal does not belong to this checkpoint; the store is damaged, "
                        f"nothing was changed: run `featurestore repair {store}`")
                previous = stamp
                continue  # a checkpoint happened between the two reads
            if journal.base is None:
                check_missing_journal(Path(store), manifest)
            committed = {shard.file for shard in manifest.shards}
            for record in journal.records:
                if record.seq > base:
                    if record.shard is not None:
                        if record.shard.file in committed:
                            raise StoreDamagedError(
                                f"{Path(store) / JOURNAL_NAME}: record {record.seq} commits shard "
                                f"{record.shard.file} a second time; the store is damaged, nothing was "
                                f"changed: run `featurestore repair {store}`")
                        committed.add(record.shard.file)
                    manifest.apply(record)
            return manifest
        raise StoreError(f"{store}: {JOURNAL_NAME} and {MANIFEST_NAME} kept changing while being read; "
                         "is a writer checkpointing in a loop? Try again")

    @classmethod
    def _read_checkpoint(cls, store: Path) -> "Manifest":
        path = store / MANIFEST_NAME
        try:
            raw = read_store_file(path, "manifest")  # never through a link
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"{store} is not a feature store: {MANIFEST_NAME} is missing") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); the store is damaged") from None
        if not isinstance(data, dict) or data.get("schema_version") not in READABLE_SCHEMAS:
            version = data.get("schema_version") if isinstance(data, dict) else None
            raise StoreError(f"{path} has store schema version {version!r}; this featurestore reads versions "
                             f"{', '.join(map(str, READABLE_SCHEMAS))}")
        try:
            manifest = cls.from_dict(data)
        except MalformedRecordError as exc:
            raise StoreDamagedError(f"{path}: {exc}; {_DAMAGED}") from None
        for shard in manifest.shards:
            check_shard_name(shard.file)
        for task in manifest.tasks.values():
            for part in task.parts:
                check_store_name(part.file, TASK_DIR, "task file")
        if manifest.index is not None and manifest.index.shards != len(manifest.shards):
            raise StoreDamagedError(f"{path}: its row index entry does not cover its {len(manifest.shards)} shards; "
                                    "the store is damaged")
        return manifest

    def apply(self, record: JournalRecord) -> None:
        """Apply one journal record (a shard and its labels, failures, a task, a run) to this state."""
        if record.task is not None:
            for part in record.task.parts:
                check_store_name(part.file, TASK_DIR, "task file")
            self.tasks[record.task.name] = record.task
        if record.shard is not None:
            check_shard_name(record.shard.file)
            self.add_shard(record.shard, set(record.classes or ()))
        if record.failures:
            self.add_failures(record.failures)
        if record.run is not None:
            self.runs.append(record.run)
        self.seq = record.seq

    def append(self, store: str | Path, record: JournalRecord) -> None:
        """Commit ``record`` (a shard and its classes, failures, a run): one fsynced journal append."""
        record = record.numbered(self.seq + 1)
        append_record(store, record)
        self.apply(record)

    def save(self, store: str | Path, index: IndexEntry | None = None) -> None:
        """Write this state as the checkpoint: replace ``manifest.json`` atomically, then reset the journal.

        Parameters
        ----------
        index : IndexEntry, optional
            The entry of a row index covering every shard (see
            :func:`~featurestore.row_index.write_row_index`); default: the current one,
            which must then still cover every shard.

        The JSON is compact (one line; ``featurestore info --json`` or ``python -m json.tool``
        pretty-print it): indentation would switch Python to its pure-Python encoder, several
        times slower on a manifest of thousands of shards.
        """
        if index is not None:
            self.index = replace(index, shards=len(self.shards))
        elif self.index is not None and self.index.shards != len(self.shards):
            raise StoreError("a checkpoint needs a row index covering every shard")
        self.schema_version = STORE_SCHEMA_VERSION
        self.journal_seq = self.seq
        self.updated = utc_timestamp()
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        write_bytes_atomic(Path(store) / MANIFEST_NAME, text.encode())
        reset_journal(store, self.seq)
        self.checkpoint_shards = len(self.shards)

    @property
    def rows(self) -> int:
        """Rows committed."""
        return sum(shard.rows for shard in self.shards)

    def add_shard(self, entry: ShardEntry, classes: set[str]) -> None:
        """Record a committed shard and the labels it holds (in memory)."""
        self.shards.append(entry)
        self.classes = tuple(sorted(set(self.classes) | classes))

    def add_failures(self, failures: Iterable[Failure]) -> int:
        """Record failures not seen before (same path and key); returns how many were new."""
        seen = {f.seen for f in self.failures}
        added = 0
        for failure in failures:
            if failure.seen not in seen:
                self.failures.append(failure)
                seen.add(failure.seen)
                added += 1
        return added


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building one entry per shard allocates enough objects
    to trigger full collections, each walking the whole parsed document (at 10^5 shards the
    typed manifest took about twice as long to build as the raw dict took to check, and as long
    with collections paused). Nothing built here holds a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_missing_journal(store: Path, manifest: "Manifest") -> None:
    """Accept a store without ``journal.log`` only where no commit can be missing: a writer killed
    between writing a new store's first checkpoint and its journal leaves checkpoint 0, and no
    shard file the checkpoint does not name.

    Raises
    ------
    StoreDamagedError
        The journal is missing from a store that had one (run ``featurestore repair``).
    """
    extra = [p for p in uncommitted_shards(store, manifest.shards) if not p.name.startswith(".")]
    if manifest.journal_seq or extra:
        why = (f"{MANIFEST_NAME} is checkpoint {manifest.journal_seq}" if not extra
               else f"shards/ holds {len(extra)} shard file(s) that {MANIFEST_NAME} does not name")
        raise StoreDamagedError(f"{store / JOURNAL_NAME} is missing and {why}: commits may be lost; nothing was "
                                f"changed: run `featurestore repair {store}` to rebuild the store from its shard files")


def committed_digest(store: str | Path) -> str | None:
    """sha256 of what a store has committed (its checkpoint and the journal's valid records), or
    None when there is no store: it changes exactly when a commit changes the store."""
    store = Path(store)
    try:
        digest = hashlib.sha256(read_store_file(store / MANIFEST_NAME, "manifest"))
    except FileNotFoundError:
        return None
    journal = read_journal(store)
    if journal.valid_bytes:
        digest.update(read_store_file(store / JOURNAL_NAME, "journal")[:journal.valid_bytes])
    return digest.hexdigest()
