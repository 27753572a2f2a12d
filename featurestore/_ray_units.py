"""Units of work read by Ray workers themselves: WebDataset shards, Parquet row groups, file lists.

For these sources the driver of :mod:`featurestore.distributed` reads no image. It plans
units (:func:`plan_units`: shard indices, row groups from the Parquet footers, chunks of
its file listing) and runs two Ray Data passes over them:

1. **keys** (:func:`key_unit`): a task opens its unit, reads each item's bytes and returns
   its path, label, split and content key (sha256 of the bytes), or the error that
   stopped the read. No bytes travel back. The driver takes these in source order and
   skips, aliases and records failures exactly as the local engine does.
2. **decode** (:func:`decode_unit`): a task re-opens a unit that holds new keys, reads the
   wanted items again, checks each one's bytes against its key and decodes them into the
   rows :func:`featurestore._ray_tasks.decode_block` makes, for the inference actors.

So content the store already holds costs a worker a read and a hash, never inference, and
the driver only merges keys, deduplicates and commits. Nothing here imports Ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from .augment import augment_view
from .decode import decode_or_error
from .errors import SourceChangedError
from .sources import CsvSource, FolderSource, ImageSource, SourceItem, TableSource, WebDatasetSource, content_key
from .spec import Preprocessing

__all__ = ["UNIT_FILES", "plan_units", "unit_items", "key_unit", "decode_unit"]

#: Files per unit of a folder or CSV source (as many as a decoding block: files need no streaming).
UNIT_FILES = 32


def plan_units(src: ImageSource) -> tuple[list[Any], ImageSource | None] | None:
    """(units, the source the workers need, or None) for a source workers can read themselves, else None.

    Units are JSON values: ``["wds", shard index]``, ``["table", file index, row group, first
    row]``, ``["files", [[path, label, split], ...]]``. Planning reads no image: shard names,
    Parquet footers, the folder's listing.
    """
    if isinstance(src, WebDatasetSource):
        return [["wds", i] for i in range(len(src.shards))], src
    if isinstance(src, TableSource):
        return [["table", *unit] for unit in src.units()], src
    if isinstance(src, (FolderSource, CsvSource)):
        listed = [[item.path, item.label, item.split] for item in src]
        return [["files", listed[i:i + UNIT_FILES]] for i in range(0, len(listed), UNIT_FILES)], None
    return None


def unit_items(source: ImageSource | None, unit: list[Any]) -> Iterator[SourceItem]:
    """The items of one unit, in source order."""
    kind = unit[0]
    if kind == "wds":
        return source.shard_items(int(unit[1]))  # type: ignore[union-attr]
    if kind == "table":
        group = None if unit[2] is None else int(unit[2])
        return source.unit_items((int(unit[1]), group, int(unit[3])))  # type: ignore[union-attr]
    return iter([SourceItem(path, label, split) for path, label, split in unit[1]])


def key_unit(batch: dict[str, np.ndarray], *, source: ImageSource | None, max_file_bytes: int) -> dict[str, np.ndarray]:
    """Key every item of each unit in ``batch["unit"]`` (a Ray Data task); one JSON list of rows per unit.

    A row is ``{"path", "label", "split", "key", "error", "message"}``; ``key`` is empty and
    ``error`` names the exception when the item could not be read.
    """
    out = []
    for unit in batch["unit"]:
        rows = []
        for item in unit_items(source, json.loads(str(unit))):
            row = {"path": item.path, "label": item.label, "split": item.split, "key": "", "error": "", "message": ""}
            try:
                row["key"] = content_key(item.read(max_file_bytes))
            except OSError as exc:
                row.update(error=type(exc).__name__, message=str(exc))
            rows.append(row)
        out.append(json.dumps(rows))
    return {"rows": np.array(out, dtype=object)}


def decode_unit(batch: dict[str, np.ndarray], *, source: ImageSource | None, max_file_bytes: int,
                preprocessing: Preprocessing, views: int, augment: tuple[str, ...], shape: tuple[int, int, int],
                rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Read, check and decode the wanted items of each unit (a Ray Data task), ``rows`` items per block.

    ``batch["want"]`` holds, per unit, a JSON list of ``[position in the unit, key, path]``.
    An item whose bytes no longer hash to its key, or that is gone, becomes a failure row
    (:class:`~featurestore.errors.SourceChangedError`, empty key), as a file changed since
    listing does with the driver's listing. Rows have the columns of
    :func:`featurestore._ray_tasks.decode_block`.
    """
    block = _Block(views, shape)
    for unit, want in zip(batch["unit"], batch["want"]):
        wanted = {int(i): (key, path) for i, key, path in json.loads(str(want))}
        for i, item in enumerate(unit_items(source, json.loads(str(unit)))):
            if i not in wanted:
                continue
            key, path = wanted.pop(i)
            block.add(item, key, path, max_file_bytes, preprocessing, augment)
            if len(block) >= rows:
                yield block.take()
            if not wanted:
                break
        for key, path in wanted.values():
            block.failed(path, "", SourceChangedError(f"{path!r} is gone from its source since it was keyed; rerun "
                                                      "to extract what the source holds now"))
            if len(block) >= rows:
                yield block.take()
    if len(block):
        yield block.take()


class _Block:
    """Rows being gathered by :func:`decode_unit`."""

    def __init__(self, views: int, shape: tuple[int, int, int]) -> None:
        self.views, self.shape = views, shape
        self._clear()

    def _clear(self) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in ("key", "path", "label", "split", "error", "message")}
        self.pixels: list[np.ndarray | None] = []

    def __len__(self) -> int:
        return len(self.pixels)

    def _row(self, key: str, path: str, label: str | None, split: str | None, error: str, message: str,
             pixels: np.ndarray | None) -> None:
        for name, value in zip(self.cols, (key, path, label or "", split or "", error, message)):
            self.cols[name].append(value)
        self.pixels.append(pixels)

    def failed(self, path: str, key: str, exc: Exception, label: str | None = None, split: str | None = None) -> None:
        self._row(key, path, label, split, type(exc).__name__, str(exc), None)

    def add(self, item: SourceItem, key: str, path: str, max_file_bytes: int, preprocessing: Preprocessing,
            augment: tuple[str, ...]) -> None:
        try:
            data = item.read(max_file_bytes)
        except OSError as exc:
            self.failed(path, "", exc, item.label, item.split)
            return
        if item.path != path or not isinstance(data, bytes) or content_key(data) != key:
            self.failed(path, "", SourceChangedError(f"{path!r} changed after it was keyed; rerun to extract its "
                                                     "new content"), item.label, item.split)
            return
        image, error = decode_or_error(data, preprocessing)
        if error is not None:
            self._row(key, path, item.label, item.split, error.cause, error.message, None)
            return
        views = [image] + [augment_view(image, key, v, augment) for v in range(1, self.views + 1)]
        self._row(key, path, item.label, item.split, "", "", np.stack(views))

    def take(self) -> dict[str, np.ndarray]:
        pixels = np.zeros((len(self), self.views + 1, *self.shape), np.uint8)
        for i, p in enumerate(self.pixels):
            if p is not None:
                pixels[i] = p
        out = {name: np.array(values, dtype=object) for name, values in self.cols.items()}
        out["pixels"] = pixels
        self._clear()
        return out
