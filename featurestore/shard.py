"""One shard: a plain HDF5 file holding a block of rows, written once and never modified.

Layout (readable with h5py or h5dump, without featurestore)::

    /keys              |S64  (rows,)        sha256 of each image's content
    /labels            utf-8 (rows,)        class name, "" when unlabelled
    /split             utf-8 (rows,)        split tag, "" when none
    /view              uint16 (rows,)       0 = the clean image, k = k-th augmented view
    /paths             utf-8 (rows,)        where the content was first seen

(the utf-8 columns are fixed-length strings, as long as the longest entry; shards written
by earlier versions hold variable-length strings, which read the same)
    /features/<output> float32|float16 (rows, dim)   one dataset per exported layer
    /aliases/{keys,paths,labels,split}      other places the same content was seen
    attrs: featurestore_store_schema, fingerprint, model_sha256,
           featurestore_content_checksum (xxh3-128 of every dataset, see content_checksum),
           featurestore_written_ns (when it was written, ns since the epoch)

Datasets are contiguous and unfiltered, so a reader can take feature rows straight from the
file at the dataset's byte offset, which the manifest records for each shard (``layout``):
one ``readinto`` for a block of rows, a memory map for scattered rows, and no HDF5 parsing
on the read path. Integrity comes from the shard's checksum in the manifest (xxh3-128;
sha256 in shards written before schema 2), which ``featurestore verify`` checks together
with the recorded offsets. A shard also describes itself: its own attributes carry a checksum
of its datasets' contents, so ``featurestore repair`` can tell a complete shard from a
damaged one and recommit it without the manifest (shards written before it was recorded have
none; repair recommits those when their columns read).
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._atomic import CHECKSUM_PREFIX, checksum_of, path_kind, read_regular_file, write_bytes_atomic
from .columns import RowColumns, decode_strings
from .errors import NotAFileError, StoreDamagedError, StoreError, UnsafeStoreError
from .metadata import FeatureLayout, ShardEntry

__all__ = ["SHARD_DIR", "store_folder", "check_store_name", "store_file", "shard_dir", "uncommitted_shards",
           "check_shard_name", "shard_file", "open_shard",
           "check_feature_layouts", "ALIGNED", "memory_file", "read_store_file", "open_store_file",
           "FLOAT16_MAX", "FeatureLayout", "ShardBuffer", "write_shard", "read_index", "read_aliases", "read_columns",
           "read_layouts", "layer_stats", "fixed_strings", "read_strings", "content_checksum",
           "CONTENT_CHECKSUM_ATTR", "WRITTEN_ATTR"]

SHARD_DIR = "shards"
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


def fixed_strings(values: list[str] | tuple[str, ...]) -> tuple[np.ndarray, Any]:
    """``values`` as a fixed-length utf-8 column (data and HDF5 dtype), as long as the longest entry.

    Strings are encoded with ``surrogateescape``: a file name that is not valid UTF-8 (which
    Python holds with surrogate escapes, as ``os.listdir`` returns it) is stored as its own
    bytes, and :func:`~featurestore.columns.decode_strings` gives back the same str.
    """
    try:  # ASCII, the common case: numpy encodes it without a Python loop
        data = np.array(values, dtype=str).astype("S") if len(values) else np.array([], dtype="S1")
    except UnicodeEncodeError:
        data = np.array([v.encode("utf-8", "surrogateescape") for v in values], dtype="S")
    width = max(data.dtype.itemsize, 1)
    string_dtype = h5py.string_dtype("utf-8", length=width)
    return data.astype(string_dtype), string_dtype


@dataclass
class ShardBuffer:
    """Rows waiting to be written as one shard."""

    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    aliases: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def add_rows(self, keys: list[str], labels: list[str], splits: list[str], views: list[int],
                 paths: list[str], features: dict[str, np.ndarray]) -> None:
        """Append rows; ``features`` maps each output to an array of ``len(keys)`` rows."""
        self.keys += keys
        self.labels += labels
        self.splits += splits
        self.views += views
        self.paths += paths
        for name, values in features.items():
            self.features.setdefault(name, []).append(values)

    def columns(self) -> RowColumns:
        """The buffered rows' metadata and aliases, as the shard stores them."""
        aliases = list(zip(*self.aliases)) if self.aliases else [(), (), (), ()]
        return RowColumns.from_strings(self.keys, self.labels, self.splits, self.views, self.paths,
                                       dict(zip(("keys", "paths", "labels", "split"), aliases)))


def layer_stats(values: np.ndarray) -> dict[str, float]:
    """Aggregatable statistics of one layer's rows: count, sum, sum of squares, min, max, norms.

    Totals accumulate in float64 without a float64 copy of the rows; non-finite values are
    counted and left out of every statistic.
    """
    v = values if values.dtype == np.float32 else values.astype(np.float32)
    nonfinite = 0
    if v.size and not (np.isfinite(v.min()) and np.isfinite(v.max())):
        finite = np.isfinite(v)
        nonfinite = int(v.size - finite.sum())
        kept = v[finite]
        v = np.where(finite, v, np.float32(0.0))
    else:
        kept = v
    low, high = (float(kept.min()), float(kept.max())) if kept.size else (float("nan"), float("nan"))
    flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:]))) if v.ndim else v.reshape(1, 1)
    squares = np.einsum("ij,ij->i", flat, flat).astype(np.float64)  # per-row sums stay short in float32
    return {
        "count": int(v.size),
        "sum": float(flat.sum(axis=1).sum(dtype=np.float64)),  # row sums in float32 (pairwise), total in float64
        "sumsq": float(squares.sum()),
        "min": low,
        "max": high,
        "nonfinite": nonfinite,
        "norm_sum": float(np.sqrt(squares).sum()) if v.ndim == 2 else 0.0,
    }


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
    printed from destructors, and at some sizes crashed). Only the manifest makes the shard
    part of the store.

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
            data, string_dtype = fixed_strings(values)
            f.create_dataset(column, data=data, dtype=string_dtype)
        f.create_dataset("view", data=np.array(buffer.views, dtype=np.uint16))
        data, string_dtype = fixed_strings(buffer.paths)
        f.create_dataset("paths", data=data, dtype=string_dtype)
        group = f.create_group("features")
        for out, values in features.items():  # space reserved, bytes written below straight from the arrays
            group.create_dataset(out, shape=values.shape, dtype=values.dtype, dcpl=_reserved())
        aliases = f.create_group("aliases")
        columns = list(zip(*buffer.aliases)) if buffer.aliases else [(), (), (), ()]
        aliases.create_dataset("keys", data=np.array(columns[0], dtype="S64"))
        for col, values in zip(("paths", "labels", "split"), columns[1:]):
            data, string_dtype = fixed_strings(values)
            aliases.create_dataset(col, data=data, dtype=string_dtype)
        f.attrs.update(attrs)
        f.attrs[WRITTEN_ATTR] = time.time_ns()
        f.attrs[CONTENT_CHECKSUM_ATTR] = content_checksum(f, features)
        f.flush()
        layout = {out: _layout(group[out]) for out in features}
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


def store_folder(store: Path, folder: str) -> Path:
    """``STORE/<folder>``, refused if it is a link or not a folder (it would lead reads and deletions
    outside the store)."""
    directory = Path(store) / folder
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UnsafeStoreError(f"{directory} is a link or not a folder; refusing the store (it must never make "
                               "us read or delete outside it)")
    return directory


def check_store_name(file: Any, folder: str, what: str) -> str:
    """Refuse a manifest entry that names anything but a file directly in ``<folder>/``.

    Returns the file name. Raises :class:`UnsafeStoreError` for absolute paths, ``..``, other
    folders or hidden names: a store must never make us read files outside it. (String
    operations, not pathlib: this runs for every shard each time a store is opened.)
    """
    prefix = f"{folder}/"
    if isinstance(file, str) and file.startswith(prefix):
        name = file[len(prefix):]
        if name and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name:
            return name
    raise UnsafeStoreError(f"the manifest names {what} {file!r}, which is not a file in {folder}/; "
                           "refusing the store (it must never make us read outside it)")


def store_file(store: Path, folder: str, file: Any, what: str) -> Path:
    """The path of a file a manifest names in ``STORE/<folder>/``, checked to be a regular file there (no link)."""
    path = store_folder(store, folder) / check_store_name(file, folder, what)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UnsafeStoreError(f"{what} {path} is a link or not a regular file; refusing to read it")
    return path


def read_store_file(path: Path, what: str) -> bytes:
    """The bytes of a store's own file, opened without following a link (``O_NOFOLLOW``).

    Raises
    ------
    UnsafeStoreError
        The path is a link, a FIFO, a device or anything but a regular file.
    FileNotFoundError
        It does not exist.
    """
    try:
        return read_regular_file(path, follow_links=False)
    except NotAFileError as exc:
        raise UnsafeStoreError(f"{what} {path} is {path_kind(path)}, not a regular file; refusing the store (it must "
                               f"never make us read or lock anything outside it)") from exc


def open_store_file(path: Path, what: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open a store's own file without following a link (``O_NOFOLLOW``, ``O_NONBLOCK``); return the descriptor.

    Raises
    ------
    UnsafeStoreError
        The path is a link or, once open, not a regular file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafeStoreError(f"{what} {path} is a symbolic link; refusing the store (it must never make us read "
                               "or lock anything outside it)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeStoreError(f"{what} {path} is not a regular file; refusing the store")
    return fd


def shard_dir(store: Path) -> Path:
    """``STORE/shards`` (see :func:`store_folder`)."""
    return store_folder(store, SHARD_DIR)


def uncommitted_shards(store: Path, shards: list[ShardEntry]) -> list[Path]:
    """Files in ``STORE/shards/`` that no committed entry names (left by a killed writer or actor), sorted."""
    directory = shard_dir(store)
    if not directory.is_dir():
        return []
    committed = {shard.name for shard in shards}
    return sorted(item for item in directory.iterdir() if item.name not in committed)


def check_shard_name(file: Any) -> str:
    """The file name of a shard entry, refused unless directly in ``shards/`` (see :func:`check_store_name`)."""
    return check_store_name(file, SHARD_DIR, "shard")


def shard_file(store: Path, file: str) -> Path:
    """The path of a committed shard, checked to be a regular file inside ``STORE/shards/`` (no link)."""
    return store_file(store, SHARD_DIR, file, "shard")


#: The groups a shard holds (one level below the root; datasets only inside them).
_GROUPS = ("features", "aliases")


def _check_objects(root: h5py.File, file: Path, groups: tuple[str, ...]) -> None:
    """Refuse anything but the writer's layout: datasets at the root and in ``groups``,
    joined by hard links, stored contiguously without filters."""
    for prefix, group in [("", root)] + [(f"/{name}", root[name]) for name in groups if name in root
                                         and isinstance(root.get(name, getlink=True), h5py.HardLink)]:
        for name in group:
            where = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise UnsafeStoreError(f"shard {file}: {where} is a {type(link).__name__} (it could point outside "
                                       "the store); this writer never makes links, refusing the shard")
            kind = group.get(name, getclass=True)
            if kind is h5py.Group and not prefix and name in groups:
                continue
            if kind is not h5py.Dataset:
                raise UnsafeStoreError(f"shard {file}: {where} is not a dataset where this writer puts one; "
                                       "refusing the shard")
            item = group[name]
            refused = ("a virtual dataset (it reads other files)" if item.is_virtual
                       else "external storage (it reads other files)" if item.external
                       else "a chunked or filtered layout" if item.chunks is not None
                       or item.id.get_create_plist().get_nfilters() else None)
            if refused:
                raise UnsafeStoreError(f"shard {file}: dataset {where} uses {refused}, which this writer never "
                                       "produces; refusing the shard")


def check_feature_layouts(path: Path, expected: dict[str, FeatureLayout], members: set[str]) -> None:
    """Check, through HDF5's low-level API, that the feature datasets ``expected`` names lie where
    the manifest records them, stored as the writer stores them.

    The raw read path takes feature bytes at the recorded offsets without parsing the file;
    this check (about 0.1 ms per shard) makes it refuse what :class:`open_shard` refuses: links
    (checked before anything is followed), external storage, virtual datasets, chunks and
    filters, objects in ``features/`` other than ``members`` (the stored layers), and an offset
    or shape that differs from the record.

    Raises
    ------
    UnsafeStoreError
        A link, external storage, a virtual dataset, a chunked or filtered layout.
    StoreDamagedError
        A dataset is missing, or lies elsewhere than recorded.
    """
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    try:
        group = _hard_link(fid, b"features", path)
        found = {group.get_objname_by_idx(i).decode("utf-8", "replace") for i in range(group.get_num_objs())}
        for extra in sorted(found - members):
            raise UnsafeStoreError(f"shard {path}: /features/{extra} is not a dataset where this writer puts one; "
                                   "refusing the shard")
        for name, layout in expected.items():
            _hard_link(group, name.encode(), path, group=False)
            dataset = h5py.h5d.open(group, name.encode())
            plist = dataset.get_create_plist()
            kind = plist.get_layout()
            refused = ("a virtual dataset (it reads other files)" if kind == h5py.h5d.VIRTUAL
                       else "external storage (it reads other files)" if plist.get_external_count()
                       else "a chunked or filtered layout" if kind != h5py.h5d.CONTIGUOUS or plist.get_nfilters()
                       else None)
            if refused:
                raise UnsafeStoreError(f"shard {path}: dataset /features/{name} uses {refused}, which this writer "
                                       "never produces; refusing the shard")
            offset = dataset.get_offset()
            if dataset.shape != layout.shape or (layout.offset is not None and offset != layout.offset):
                raise StoreDamagedError(f"shard {path}: /features/{name} lies at offset {offset} with shape "
                                        f"{dataset.shape}, the manifest says {layout.offset} and {layout.shape}; "
                                        "the store is damaged (run `featurestore verify`)")
    except KeyError as exc:
        raise StoreDamagedError(f"shard {path}: {exc}; the store is damaged (run `featurestore verify`)") from None
    finally:
        fid.close()


def _hard_link(parent: Any, name: bytes, path: Path, group: bool = True) -> Any:
    """Refuse ``parent/name`` unless it is a hard link (a soft or external link is never followed);
    with ``group``, open and return it as a group."""
    if not parent.links.exists(name):
        raise StoreDamagedError(f"shard {path}: {name.decode()} is missing; the store is damaged "
                                "(run `featurestore verify`)")
    kind = parent.links.get_info(name).type
    if kind != h5py.h5l.TYPE_HARD:
        what = {h5py.h5l.TYPE_SOFT: "SoftLink", h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}.get(kind, "user-defined link")
        raise UnsafeStoreError(f"shard {path}: {name.decode()} is a {what} (it could point outside the store); "
                               "this writer never makes links, refusing the shard")
    return h5py.h5g.open(parent, name) if group else None
class open_shard:
    """Open a shard for reading after refusing what the writer never produces.

    Only plain contiguous, unfiltered datasets, and the groups ``groups`` (a shard's
``features`` and ``aliases`` by default), joined by hard links are accepted:
    external links, soft links, external storage, virtual datasets, chunks and filters (whose
    plugins HDF5 would load) raise :class:`UnsafeStoreError` before anything is followed.

    Examples
    --------
    >>> with open_shard(path) as f:  # doctest: +SKIP
    ...     keys = f["keys"][()]
    """

    def __init__(self, path: Path, groups: tuple[str, ...] = _GROUPS) -> None:
        self.path = Path(path)
        self.groups = groups

    def __enter__(self) -> h5py.File:
        seen = os.lstat(self.path)
        if not stat.S_ISREG(seen.st_mode):
            raise UnsafeStoreError(f"shard {self.path} is {path_kind(self.path)}, not a regular file; refusing to read it")
        self.file = h5py.File(self.path, "r")
        try:
            opened = os.fstat(self.file.id.get_vfd_handle())
            if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):  # swapped for a link meanwhile
                raise UnsafeStoreError(f"shard {self.path} changed while being opened; refusing to read it")
            _check_objects(self.file, self.path, self.groups)
        except BaseException:
            self.file.close()
            raise
        return self.file

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def read_strings(dataset: h5py.Dataset) -> np.ndarray:
    """A string column as an object array of str (fixed-length or, in older shards, variable-length)."""
    if not len(dataset):
        return np.array([], dtype=object)
    if dataset.dtype.kind != "S":
        return dataset.asstr()[()]
    return decode_strings(dataset[()])


def _layout(dataset: h5py.Dataset) -> FeatureLayout:
    offset = dataset.id.get_offset() if dataset.chunks is None and dataset.compression is None else None
    return FeatureLayout(None if offset is None else int(offset), tuple(dataset.shape), np.dtype(dataset.dtype))


def read_columns(path: Path) -> tuple[RowColumns, dict[str, FeatureLayout]]:
    """The per-row columns and aliases of a shard (keys as S64) and where each feature dataset lies."""
    with open_shard(path) as f:
        group = f["aliases"]
        columns = RowColumns.from_strings(
            f["keys"][()], read_strings(f["labels"]), read_strings(f["split"]), f["view"][()],
            read_strings(f["paths"]),
            {"keys": group["keys"][()], "paths": read_strings(group["paths"]),
             "labels": read_strings(group["labels"]), "split": read_strings(group["split"])})
        return columns, {name: _layout(dataset) for name, dataset in f["features"].items()}


def read_layouts(path: Path) -> dict[str, FeatureLayout]:
    """Where each feature dataset of a shard lies in its file."""
    with open_shard(path) as f:
        return {name: _layout(dataset) for name, dataset in f["features"].items()}


def read_index(path: Path) -> dict[str, np.ndarray]:
    """The per-row columns of a shard: keys (str), labels, split, view, paths."""
    columns = read_columns(path)[0]
    return {"keys": columns.keys.astype(str), "labels": columns.labels, "split": columns.splits,
            "view": columns.views, "paths": columns.paths}


def read_aliases(path: Path) -> dict[str, np.ndarray]:
    """The aliases of a shard: other (key, path, label, split) observations of stored content."""
    aliases = read_columns(path)[0].aliases
    return {**aliases, "keys": aliases["keys"].astype(str)}
