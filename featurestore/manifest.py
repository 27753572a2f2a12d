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

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._atomic import write_bytes_atomic
from .journal import JOURNAL_NAME, append_record, read_journal, reset_journal
from ._time import utc_timestamp
from .errors import StoreDamagedError, StoreError
from .spec import ModelSpec

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
        prep = json.dumps(asdict(spec.preprocessing), sort_keys=True, separators=(",", ":"))
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


class _Malformed(Exception):
    """What is wrong in a manifest or journal record (turned into a StoreDamagedError naming the file)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _need(ok: bool, where: str, value: Any, expected: str) -> None:
    if not ok:
        raise _Malformed(f"{where} is {_short(value)}, expected {expected}")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _strings(value: Any) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


_STAT_FIELDS = ("count", "sum", "sumsq", "min", "max")


_NUMBER = (int, float)


def _entry_ok(entry: Any) -> bool:
    """Whether a shard entry is well-formed: the fast path of :func:`check_shard_entry` (run for
    every shard at every open), which only says where an entry is wrong."""
    if type(entry) is not dict or type(entry.get("file")) is not str or not _count(entry.get("rows")) \
            or not _count(entry.get("aliases", 0)) or type(entry.get("checksum", entry.get("sha256"))) is not str:
        return False
    layout, stats = entry.get("layout"), entry.get("stats")
    if layout is not None:
        if type(layout) is not dict:
            return False
        for item in layout.values():
            if type(item) is not list or len(item) != 2 or not (item[0] is None or _count(item[0])) \
                    or type(item[1]) is not list or not all(_count(d) for d in item[1]):
                return False
    if stats is not None:
        if type(stats) is not dict:
            return False
        for item in stats.values():
            if type(item) is not dict or type(item.get("count")) not in _NUMBER \
                    or type(item.get("sum")) not in _NUMBER or type(item.get("sumsq")) not in _NUMBER \
                    or type(item.get("min")) not in _NUMBER or type(item.get("max")) not in _NUMBER \
                    or type(item.get("norm_sum", 0.0)) not in _NUMBER:
                return False
    return True


def check_shard_entry(entry: Any, where: str) -> None:
    """Raise _Malformed unless ``entry`` has a shard entry's structure (file, rows, checksum, layout, stats)."""
    _need(type(entry) is dict, where, entry, "an object")
    _need(type(entry.get("file")) is str, f"{where}.file", entry.get("file"), "a string")
    _need(_count(entry.get("rows")), f"{where}.rows", entry.get("rows"), "an integer >= 0")
    _need(_count(entry.get("aliases", 0)), f"{where}.aliases", entry.get("aliases"), "an integer >= 0")
    checksum = entry.get("checksum", entry.get("sha256"))
    _need(type(checksum) is str, f"{where}.checksum", checksum, "a string")
    layout = entry.get("layout")
    if layout is not None:
        _need(type(layout) is dict, f"{where}.layout", layout, "an object")
        for out, item in layout.items():
            _need(type(item) is list and len(item) == 2 and (item[0] is None or _count(item[0]))
                  and type(item[1]) is list and all(_count(d) for d in item[1]),
                  f"{where}.layout[{out!r}]", item, "[offset, row shape]")
    stats = entry.get("stats")
    if stats is not None:
        _need(type(stats) is dict, f"{where}.stats", stats, "an object")
        for out, item in stats.items():
            _need(type(item) is dict and all(type(item.get(k)) in (int, float) for k in _STAT_FIELDS)
                  and type(item.get("norm_sum", 0.0)) in (int, float),
                  f"{where}.stats[{out!r}]", item, f"numbers {', '.join(_STAT_FIELDS)}, norm_sum")


def check_failures(failures: Any, where: str) -> None:
    """Raise _Malformed unless ``failures`` is a list of {path, key, error, message} records."""
    _need(type(failures) is list, where, failures, "a list")
    for i, failure in enumerate(failures):
        _need(type(failure) is dict and type(failure.get("path")) is str
              and (failure.get("key") is None or type(failure.get("key")) is str)
              and type(failure.get("error")) is str and type(failure.get("message")) is str,
              f"{where}[{i}]", failure, "{path, key, error, message}")


def check_structure(data: dict[str, Any]) -> None:
    """Raise _Malformed unless a checkpoint has the structure the reader relies on.

    Checked once, when the manifest is read, so that nothing later meets a wrong type: the
    config and model spec must build, and every shard entry, failure, class, run and the
    index entry must have their fields' types.
    """
    _need(type(data.get("fingerprint")) is str, "fingerprint", data.get("fingerprint"), "a string")
    config = data.get("config")
    _need(type(config) is dict, "config", config, "an object")
    try:
        StoreConfig(**config)
        ModelSpec.from_dict(data.get("model_spec") if type(data.get("model_spec")) is dict else {})
    except (TypeError, ValueError) as exc:  # StoreError and SpecError are ValueErrors
        raise _Malformed(f"config or model_spec does not build ({exc})") from None
    _need(_strings(config["layers"]) and _strings(config["augment"]) and _count(config.get("views", 0)),
          "config", config, "layers and augment as lists of strings, views an integer")
    _need(_strings(data.get("classes")), "classes", data.get("classes"), "a list of strings")
    shards = data.get("shards")
    _need(type(shards) is list, "shards", shards, "a list")
    for i, entry in enumerate(shards):
        if not _entry_ok(entry):
            check_shard_entry(entry, f"shards[{i}]")
            raise _Malformed(f"shards[{i}] is {_short(entry)}, expected a shard entry")
    check_failures(data.get("failures"), "failures")
    runs = data.get("runs", [])
    _need(type(runs) is list and all(type(r) is dict for r in runs), "runs", runs, "a list of objects")
    _need(_count(data.get("journal_seq", 0)), "journal_seq", data.get("journal_seq"), "an integer >= 0")
    index = data.get("index")
    if index is not None:
        _need(type(index) is dict and type(index.get("file")) is str and _count(index.get("rows"))
              and _count(index.get("shards")) and type(index.get("checksum")) is str
              and type(index.get("layout", {})) is dict, "index", index, "{file, rows, checksum, shards, layout}")


class Manifest:
    """A store's committed state: the checkpoint in ``manifest.json`` with the journal's records applied.

    Attributes
    ----------
    data : dict
        The JSON document: ``schema_version``, ``fingerprint``, ``config``, ``model_spec``,
        ``classes``, ``shards`` (``file``, ``rows``, ``checksum``, ``layout``, ``stats``),
        ``failures`` (``path``, ``key``, ``error``, ``message``), ``runs`` (provenance of each
        extract), ``journal_seq`` (the last journal record the checkpoint holds) and ``index``
        (the row index file covering the checkpoint's first ``index.shards`` shards, or None).
    seq : int
        The last journal record applied.
    checkpoint_shards : int
        How many of :attr:`shards` the checkpoint file itself names (the rest came from the journal).
    """

    def __init__(self, data: dict[str, Any], seq: int = 0) -> None:
        self.data = data
        self.seq = seq
        self.checkpoint_shards = len(data.get("shards", []))

    @classmethod
    def new(cls, config: StoreConfig, spec: ModelSpec) -> "Manifest":
        """The state of an empty store (write it with :meth:`save`)."""
        return cls({
            "schema_version": STORE_SCHEMA_VERSION,
            "fingerprint": config.fingerprint,
            "config": asdict(config),
            "model_spec": spec.to_dict(),
            "created": utc_timestamp(),
            "classes": [],
            "shards": [],
            "failures": [],
            "runs": [],
            "journal_seq": 0,
            "index": None,
        })

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
            if manifest.data["schema_version"] == 1:
                return manifest
            journal = read_journal(store)
            base = manifest.data.get("journal_seq", 0)
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
            committed = {shard["file"] for shard in manifest.shards}
            for record in journal.records:
                if record["seq"] > base:
                    if "shard" in record:
                        if record["shard"]["file"] in committed:
                            raise StoreDamagedError(
                                f"{Path(store) / JOURNAL_NAME}: record {record['seq']} commits shard "
                                f"{record['shard']['file']} a second time; the store is damaged, nothing was "
                                f"changed: run `featurestore repair {store}`")
                        committed.add(record["shard"]["file"])
                    manifest.apply(record)
            return manifest
        raise StoreError(f"{store}: {JOURNAL_NAME} and {MANIFEST_NAME} kept changing while being read; "
                         "is a writer checkpointing in a loop? Try again")

    @classmethod
    def _read_checkpoint(cls, store: Path) -> "Manifest":
        from .shard import check_shard_name, read_store_file  # the shard layer sits below the manifest

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
            check_structure(data)
        except _Malformed as exc:
            raise StoreDamagedError(f"{path}: {exc}; {_DAMAGED}") from None
        for shard in data["shards"]:
            check_shard_name(shard["file"])
        manifest = cls(data, data.get("journal_seq", 0))
        index = data.get("index")
        if index is not None and (not isinstance(index, dict) or index.get("shards") != len(data["shards"])):
            raise StoreDamagedError(f"{path}: its row index entry does not cover its {len(data['shards'])} shards; "
                                    "the store is damaged")
        return manifest

    def apply(self, record: dict[str, Any]) -> None:
        """Apply one journal record (a shard and its labels, failures, a run) to this state."""
        if "shard" in record:
            from .shard import check_shard_name

            check_shard_name(record["shard"].get("file") if isinstance(record["shard"], dict) else None)
            self.add_shard(record["shard"], set(record.get("classes", [])))
        if record.get("failures"):
            self.add_failures(record["failures"])
        if "run" in record:
            self.data["runs"].append(record["run"])
        self.seq = record["seq"]

    def append(self, store: str | Path, record: dict[str, Any]) -> None:
        """Commit ``record`` (keys ``shard``, ``classes``, ``failures``, ``run``): one fsynced journal append."""
        record = {**record, "seq": self.seq + 1}
        append_record(store, record)
        self.apply(record)

    def save(self, store: str | Path, index: dict[str, Any] | None = None) -> None:
        """Write this state as the checkpoint: replace ``manifest.json`` atomically, then reset the journal.

        Parameters
        ----------
        index : dict, optional
            The entry of a row index covering every shard (see
            :func:`~featurestore.row_index.write_row_index`); default: the current one,
            which must then still cover every shard.

        The JSON is compact (one line; ``featurestore info --json`` or ``python -m json.tool``
        pretty-print it): indentation would switch Python to its pure-Python encoder, several
        times slower on a manifest of thousands of shards.
        """
        if index is not None:
            self.data["index"] = {**index, "shards": len(self.shards)}
        elif self.data.get("index") and self.data["index"]["shards"] != len(self.shards):
            raise StoreError("a checkpoint needs a row index covering every shard")
        self.data["schema_version"] = STORE_SCHEMA_VERSION
        self.data["journal_seq"] = self.seq
        self.data["updated"] = utc_timestamp()
        text = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        write_bytes_atomic(Path(store) / MANIFEST_NAME, text.encode())
        reset_journal(store, self.seq)
        self.checkpoint_shards = len(self.shards)

    @property
    def schema_version(self) -> int:
        return self.data["schema_version"]

    @property
    def index(self) -> dict[str, Any] | None:
        """The row index entry (``file``, ``rows``, ``checksum``, ``shards``), or None."""
        return self.data.get("index")

    @property
    def config(self) -> StoreConfig:
        return StoreConfig(**self.data["config"])

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.data["model_spec"])

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.data["shards"]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self.data["failures"]

    @property
    def rows(self) -> int:
        return sum(shard["rows"] for shard in self.shards)

    def add_shard(self, entry: dict[str, Any], classes: set[str]) -> None:
        """Record a committed shard and the labels it holds (in memory)."""
        self.shards.append(entry)
        self.data["classes"] = sorted(set(self.data["classes"]) | classes)

    def add_failures(self, failures: list[dict[str, Any]]) -> int:
        """Record failures not seen before (same path and key); returns how many were new."""
        seen = {(f["path"], f["key"]) for f in self.failures}
        added = 0
        for failure in failures:
            if (failure["path"], failure["key"]) not in seen:
                self.failures.append(failure)
                seen.add((failure["path"], failure["key"]))
                added += 1
        return added


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
    from .shard import uncommitted_shards

    extra = [p for p in uncommitted_shards(store, manifest.shards) if not p.name.startswith(".")]
    if manifest.data.get("journal_seq", 0) or extra:
        why = (f"{MANIFEST_NAME} is checkpoint {manifest.data.get('journal_seq', 0)}" if not extra
               else f"shards/ holds {len(extra)} shard file(s) that {MANIFEST_NAME} does not name")
        raise StoreDamagedError(f"{store / JOURNAL_NAME} is missing and {why}: commits may be lost; nothing was "
                                f"changed: run `featurestore repair {store}` to rebuild the store from its shard files")


def committed_digest(store: str | Path) -> str | None:
    """sha256 of what a store has committed (its checkpoint and the journal's valid records), or
    None when there is no store: it changes exactly when a commit changes the store."""
    from .shard import read_store_file

    store = Path(store)
    try:
        digest = hashlib.sha256(read_store_file(store / MANIFEST_NAME, "manifest"))
    except FileNotFoundError:
        return None
    journal = read_journal(store)
    if journal.valid_bytes:
        digest.update(read_store_file(store / JOURNAL_NAME, "journal")[:journal.valid_bytes])
    return digest.hexdigest()
