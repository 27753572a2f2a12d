"""The driver's side of distributed extraction: commit worker shards exactly once, count, report.

No Ray here: :class:`ShardCommitter` takes the metadata each inference worker returns
(see :class:`featurestore._ray_tasks.InferenceWorker`) and turns it into commits (journal records)
through the one :class:`~featurestore.writer.StoreWriter` the driver holds.

Duplicate rule: a shard holding a (key, view) the store already has is never committed
as it is. Its new rows, if any, are read back from the file and re-written by the driver
(buffered in the writer like the local engine's rows), and the worker's file is deleted.
Work is never re-done and a row is stored exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from .errors import FeatureStoreError, ImageDecodeError, MalformedRecordError, WorkerError
from .extract import ExtractReport
from .metadata import ShardEntry
from .hdf5_checks import open_shard
from .shard_read import read_index
from .store_paths import shard_file
from .writer import StoreWriter

__all__ = ["DistributedReport", "ShardCommitter"]


@dataclass
class DistributedReport(ExtractReport):
    """What a distributed extraction did: :class:`ExtractReport` plus per-worker numbers.

    ``decoded`` counts the images whose rows this run committed (a retried batch is
    counted once).

    Attributes
    ----------
    shards : int
        Worker shards committed as written.
    rewritten : int
        Worker shards that repeated stored rows: their new rows were re-written by the
        driver, the file deleted.
    dropped_rows : int
        Rows dropped from those shards because the store already had them.
    workers : dict
        ``host:pid`` of each inference actor -> ``images``, ``shards``, ``busy_s``
        (seconds spent inferring and writing).
    """

    shards: int = 0
    rewritten: int = 0
    dropped_rows: int = 0
    workers: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        """The local engine's summary, then one line per worker."""
        lines = [super().summary(),
                 f"{len(self.workers)} workers, {self.shards} shards committed, {self.rewritten} re-written "
                 f"({self.dropped_rows} duplicate rows dropped)"]
        for name, w in sorted(self.workers.items()):
            rate = w["images"] / w["busy_s"] if w["busy_s"] > 0 else 0.0
            lines.append(f"  worker {name}: {int(w['images'])} images in {int(w['shards'])} shards, "
                         f"busy {w['busy_s']:.1f} s, {rate:.1f} images/s")
        return "\n".join(lines)


class ShardCommitter:
    """Commit what workers return, one shard at a time, as it arrives.

    Parameters
    ----------
    writer : StoreWriter
        The store, locked by this process.
    report : DistributedReport
        Updated in place.
    strict : bool
        Raise :class:`ImageDecodeError` at the first bad input (after recording it).
    progress : callable, optional
        Called with the number of source images each metadata settles.
    """

    def __init__(self, writer: StoreWriter, report: DistributedReport, strict: bool = False,
                 progress: Any = None) -> None:
        self.writer, self.report, self.strict = writer, report, strict
        self.progress = progress or (lambda n: None)

    def failure(self, path: str, key: str, error: str, message: str) -> None:
        """Record a bad input exactly as the local engine does."""
        self.writer.add_failure(path, key, error, message)
        self.report.failures.append({"path": path, "key": key, "error": error, "message": message})
        if self.strict:
            raise ImageDecodeError(path, error, message)

    def take(self, meta: dict[str, Any]) -> None:
        """Commit one worker batch: its shard (if any rows decoded), its failures, its timing.

        Raises
        ------
        FeatureStoreError
            The worker reported one (re-raised with its class, e.g. :class:`StoreError`).
        """
        if meta["error"] is not None:
            cls = getattr(errors, meta["error"]["type"], WorkerError)
            if not (isinstance(cls, type) and issubclass(cls, FeatureStoreError)) or cls is ImageDecodeError:
                cls = WorkerError
            raise cls(meta["error"]["message"])
        shard = meta["shard"]
        if shard is not None:
            self._commit(shard)
        stats = self.report.workers.setdefault(meta["worker"], {"images": 0, "shards": 0, "busy_s": 0.0})
        stats["images"] += meta["images"]
        stats["shards"] += shard is not None
        stats["busy_s"] += meta["seconds"]
        self.progress(meta["images"] + len(meta["failures"]))
        for f in meta["failures"]:
            self.failure(f["path"], f["key"], f["error"], f["message"])

    def _commit(self, shard: dict[str, Any]) -> None:
        keys, views = shard["keys"], shard["views"]
        entry = shard["entry"]
        if not isinstance(entry, ShardEntry):  # as a worker sends it: JSON
            try:
                entry = ShardEntry.from_dict(entry)
            except MalformedRecordError as exc:
                raise WorkerError(f"a worker returned a malformed shard entry: {exc}") from None
        if any(row in self.writer.row_ids for row in zip(keys, views)):
            self._rewrite(entry)
            return
        self.writer.commit_external(entry, keys, views, shard["paths"], shard["labels"],
                                    splits=shard.get("splits"))
        self.report.shards += 1
        self.report.decoded += len(set(keys))

    def _rewrite(self, entry: ShardEntry) -> None:
        """Keep only the rows the store lacks, through the writer's own buffer; delete the file."""
        file = shard_file(self.writer.path, entry.file)
        index = read_index(file)
        keep = [i for i, row in enumerate(zip(index["keys"].tolist(), index["view"].tolist()))
                if row not in self.writer.row_ids]
        self.report.rewritten += 1
        self.report.dropped_rows += entry.rows - len(keep)
        if keep:
            with open_shard(file) as f:
                features = {name: f["features"][name][()][keep] for name in f["features"]}
            keys = index["keys"][keep].tolist()
            self.writer.add_rows(keys, index["view"][keep].tolist(), index["labels"][keep].tolist(),
                                 index["split"][keep].tolist(), index["paths"][keep].tolist(), features)
            self.report.decoded += len(set(keys))
        Path(file).unlink()
