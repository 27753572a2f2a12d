"""Writing one shard: a plain HDF5 file holding a block of rows, written once and never modified.

Layout (readable with h5py or h5dump, without featurestore)::

    /keys              |S64  (rows,)        sha256 of each image's content
    /labels            utf-8 (rows,)        class name, "" when unlabelled
    /split             utf-8 (rows,)        split tag, "" when none
    /view              uint16 (rows,)       0 = the clean image, k = k-th augmented view
    /paths             utf-8 (rows,)        where the content was first seen
    /features/<output> float32|float16 (rows, dim)   one dataset per exported layer
    /aliases/{keys,paths,labels,split}      other places the same content was seen
    attrs: featurestore_store_schema, fingerprint, model_sha256,
           featurestore_content_checksum (xxh3-128 of every dataset, see content_checksum),
           featurestore_written_ns (when it was written, ns since the epoch)

The utf-8 columns are fixed-length strings, as long as the longest entry
(:mod:`featurestore.strings`); shards written by earlier versions hold variable-length
strings, which read the same.

Datasets are contiguous and unfiltered, so a reader can take feature rows straight from the
file at the dataset's byte offset, which the shard's entry records (``layout``):
one ``readinto`` for a block of rows, a memory map for scattered rows, and no HDF5 parsing
on the read path. Integrity comes from the shard's checksum in its entry (xxh3-128;
sha256 in shards written before schema 2), which ``featurestore verify`` checks together
with the recorded offsets. A shard also describes itself: its own attributes carry a checksum
of its datasets' contents, so ``featurestore repair`` can tell a complete shard from a
damaged one and recommit it without the manifest (shards written before it was recorded have
none; repair recommits those when their columns read).
"""

from __future__ import annotations

import io
import secrets
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._atomic import CHECKSUM_PREFIX, checksum_of, write_bytes_atomic
from .errors import StoreError
from .metadata import ShardEntry
from .shard_buffer import ShardBuffer, layer_stats
from .shard_read import dataset_layout
from .store_paths import SHARD_DIR
from .strings import encode_strings

__all__ = ["write_shard", "content_checksum", "memory_file", "ALIGNED", "FLOAT16_MAX", "CONTENT_CHECKSUM_ATTR",
           "WRITTEN_ATTR"]

#: The shard attribute holding the checksum of its contents (:func:`content_checksum`).
CONTENT_CHECKSUM_ATTR = "featurestore_content_checksum"
#: The shard attribute recording when it was written (ns since the epoch): repair's commit order.
WRITTEN_ATTR = "featurestore_written_ns"
#: The datasets a content checksum covers, in order (then every /features/ dataset by name).
_CONTENT = ("keys", "labels", "split", "view", "paths", "aliases/keys", "aliases/paths", "aliases/labels",
            "aliases/split")
FLOAT16_MAX = 65504.0
#: Every dataset of 4 KiB or more starts on a 4 KiB boundary: rows read straight from the file
#: are then aligned for their dtype (a float32 layer HDF5 had placed at an odd offset made
#: gathering scattered rows 12x slower) and full-page reads stay page-aligned.
ALIGNED = {"alignment_threshold": 4096, "alignment_interval": 4096}


def _joined(parts: list[np.ndarray] | None, shape: tuple[int, ...]) -> np.ndarray:
    """The buffered blocks of one layer as one array (no copy when there is a single block)."""
    if not parts:
        return np.empty((0, *shape), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _finite_peak(values: np.ndarray) -> float:
    """The largest absolute finite value (0 for none)."""
    if not values.size:
        return 0.0
    low, high = float(values.min()), float(values.max())
    if np.isfinite(low) and np.isfinite(high):
        return max(abs(low), abs(high))
    return float(np.abs(values[np.isfinite(values)]).max(initial=0.0))


def write_shard(store: Path, name: str, buffer: ShardBuffer, *, dtype: str, layers: dict[str, tuple[int, ...]],
                attrs: dict[str, Any]) -> ShardEntry:
    """Write ``buffer`` as ``STORE/shards/NAME`` crash-safely; return its manifest entry.

    HDF5 lays the file out in memory (metadata and row columns; the feature datasets' space
    is reserved, not filled) and the file's bytes, the features taken straight from their
    arrays, are written with :func:`~featurestore._atomic.write_bytes_atomic`: under a
    temporary name, fsynced, renamed into place, the directory fsynced. HDF5 never writes to
    disk, so a full disk is a plain :class:`OSError` (HDF5 reported one through tracebacks
    printed from destructors, and at some sizes crashed). Only a commit (a journal record, then
    the checkpoint) makes the shard part of the store.

    ``layers`` maps every output to its row shape, so that a shard holding only aliases
    still has every (empty) feature dataset.

    Raises
    ------
    StoreError
        ``dtype='float16'`` and a value would overflow it (|x| > 65504).
    OSError
        The file system refused the write (nothing is left under the temporary name).
    """
    features = {out: _joined(buffer.features.get(out), shape) for out, shape in layers.items()}
    if dtype == "float16":
        for out, values in features.items():
            peak = _finite_peak(values)
            if peak > FLOAT16_MAX:
                raise StoreError(
                    f"layer {out!r} has values up to {peak:.4g}, beyond float16's range ({FLOAT16_MAX}); "
                    "extract with --dtype float32"
                )
    directory = store / SHARD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    features = {out: np.ascontiguousarray(values.astype(dtype, copy=False)) for out, values in features.items()}
    metadata = _WrittenPieces()
    with h5py.File(metadata, "w", libver="latest", **ALIGNED) as f:
        f.create_dataset("keys", data=np.array(buffer.keys, dtype="S64"))
        for column, values in (("labels", buffer.labels), ("split", buffer.splits)):
            data, string_dtype = encode_strings(values)
            f.create_dataset(column, data=data, dtype=string_dtype)
        f.create_dataset("view", data=np.array(buffer.views, dtype=np.uint16))
        data, string_dtype = encode_strings(buffer.paths)
        f.create_dataset("paths", data=data, dtype=string_dtype)
        group = f.create_group("features")
        for out, values in features.items():  # space reserved, bytes written below straight from the arrays
            group.create_dataset(out, shape=values.shape, dtype=values.dtype, dcpl=_reserved())
        aliases = f.create_group("aliases")
        columns = list(zip(*buffer.aliases)) if buffer.aliases else [(), (), (), ()]
        aliases.create_dataset("keys", data=np.array(columns[0], dtype="S64"))
        for col, values in zip(("paths", "labels", "split"), columns[1:]):
            data, string_dtype = encode_strings(values)
            aliases.create_dataset(col, data=data, dtype=string_dtype)
        f.attrs.update(attrs)
        f.attrs[WRITTEN_ATTR] = time.time_ns()
        f.attrs[CONTENT_CHECKSUM_ATTR] = content_checksum(f, features)
        f.flush()
        layout = {out: dataset_layout(group[out]) for out in features}
    parts = metadata.assemble({item.offset: memoryview(features[out]).cast("B")
                               for out, item in layout.items() if item.offset is not None and features[out].nbytes})
    write_bytes_atomic(final, parts)
    return ShardEntry(f"{SHARD_DIR}/{name}", len(buffer), checksum_of(parts), aliases=len(buffer.aliases),
                      layout={out: (item.offset, tuple(item.shape[1:])) for out, item in layout.items()},
                      stats={out: layer_stats(values) for out, values in features.items()})


def content_checksum(f: h5py.File, features: dict[str, np.ndarray] | None = None) -> str:
    """``xxh3_128:<hex>`` of a shard's contents: each row column, alias column and feature dataset
    (by name) with its name, dtype and shape, in a fixed order. Stored in the shard's own
    attributes (:data:`CONTENT_CHECKSUM_ATTR`), it tells whether a shard file is complete and
    unchanged without the manifest.

    ``features`` (output -> the C-contiguous array just written as ``/features/<output>``) saves
    reading them back while writing."""
    import xxhash

    digest = xxhash.xxh3_128()
    names = list(_CONTENT) + [f"features/{name}" for name in sorted(f["features"])]
    for name in names:
        given = features.get(name[len("features/"):]) if features and name.startswith("features/") else None
        values = given if given is not None else np.ascontiguousarray(f[name][()])
        digest.update(f"{name}|{values.dtype.str}|{values.shape}|".encode())
        digest.update(memoryview(values).cast("B") if values.size else b"")
    return CHECKSUM_PREFIX + digest.hexdigest()


def _reserved() -> Any:
    """Creation properties of a feature dataset whose space HDF5 reserves at creation and never fills:
    its bytes are written by :func:`write_shard` from the array itself."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


class _WrittenPieces(io.RawIOBase):
    """A file object for h5py (``h5py.File(fileobj)``) that keeps in memory what HDF5 writes, by offset.

    HDF5 writes only a shard's metadata and row columns through it (the feature datasets are
    reserved, never written, see :func:`_reserved`); :meth:`assemble` then lays the file out
    with the feature bytes taken from the arrays, so nothing large is copied and HDF5 itself
    never touches the disk.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[tuple[int, bytes]] = []
        self.position = 0
        self.end = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset + (0 if whence == 0 else self.position if whence == 1 else self.end)
        return self.position

    def tell(self) -> int:
        return self.position

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self.pieces.append((self.position, piece))
        self.position += len(piece)
        self.end = max(self.end, self.position)
        return len(piece)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.end - self.position))
        view[:count] = bytes(count)
        for offset, piece in self.pieces:  # in write order: a later write wins
            low, high = max(offset, self.position), min(offset + len(piece), self.position + count)
            if low < high:
                view[low - self.position:high - self.position] = piece[low - offset:high - offset]
        self.position += count
        return count

    def truncate(self, size: int | None = None) -> int:
        self.end = self.position if size is None else size
        return self.end

    def assemble(self, regions: dict[int, memoryview]) -> list[Any]:
        """The file's bytes, in order, as a list of buffers: the written pieces (a later write winning
        over an earlier one), ``regions`` (offset -> bytes) and zeros between them."""
        spans = [(offset, offset + len(piece), piece) for offset, piece in self.pieces]
        spans += [(offset, offset + len(region), region) for offset, region in regions.items()]
        end = max([self.end] + [stop for _, stop, _ in spans])
        cuts = sorted({0, end} | {edge for start, stop, _ in spans for edge in (start, stop)})
        parts: list[Any] = []
        for low, high in zip(cuts, cuts[1:]):
            source = next(((start, data) for start, stop, data in reversed(spans) if start <= low and high <= stop),
                          None)
            parts.append(bytes(high - low) if source is None
                         else memoryview(source[1])[low - source[0]:high - source[0]])
        return parts


def memory_file(final: Path) -> h5py.File:
    """A new, empty HDF5 file held in memory only (``core`` driver, no backing store), with the
    writer's settings; take its bytes with ``f.id.get_file_image()`` once written and flushed.
    The name (``final`` plus a random suffix) only keeps HDF5 from taking it for another open file."""
    return h5py.File(f"{final}.{secrets.token_hex(8)}", "w", libver="latest", driver="core", backing_store=False,
                     **ALIGNED)
