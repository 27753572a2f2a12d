"""Hostile-HDF5 checks: refuse anything in a shard or row index that the writer never produces.

A store from elsewhere is untrusted. The writer makes only groups and contiguous, unfiltered
datasets joined by hard links; external or soft links, external storage, virtual datasets,
chunked or filtered layouts (whose plugins HDF5 would load) could make a reader open files
outside the store, so they are refused (:class:`~featurestore.errors.UnsafeStoreError`)
before anything they point to is followed. One checker, through HDF5's low-level API, serves
both :func:`open_shard` (every object of a file, before h5py reads it) and
:func:`check_feature_layouts` (the feature datasets the raw read path takes bytes from).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

from ._atomic import path_kind
from .errors import StoreDamagedError, UnsafeStoreError
from .metadata import FeatureLayout

__all__ = ["open_shard", "check_feature_layouts"]

#: The groups a shard holds (one level below the root; datasets only inside them).
_GROUPS = ("features", "aliases")
_LINKS = {h5py.h5l.TYPE_SOFT: "SoftLink", h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}


def _damaged(path: Path, why: str) -> StoreDamagedError:
    return StoreDamagedError(f"shard {path}: {why}; the store is damaged (run `featurestore verify`)")


def _open_member(parent: Any, name: bytes, path: Path, where: str) -> Any:
    """Open ``parent/name`` (a group, dataset or type id) once it is known to be a hard link; a soft
    or external link is refused without being followed."""
    if not parent.links.exists(name):
        raise _damaged(path, f"{where} is missing")
    kind = parent.links.get_info(name).type
    if kind != h5py.h5l.TYPE_HARD:
        raise UnsafeStoreError(f"shard {path}: {where} is a {_LINKS.get(kind, 'user-defined link')} (it could point "
                               "outside the store); this writer never makes links, refusing the shard")
    return h5py.h5o.open(parent, name)


def _not_a_dataset(path: Path, where: str) -> UnsafeStoreError:
    return UnsafeStoreError(f"shard {path}: {where} is not a dataset where this writer puts one; refusing the shard")


def _check_storage(dataset: Any, path: Path, where: str, contiguous: bool = False) -> None:
    """Refuse a dataset stored in any way the writer does not store one (with ``contiguous``, also a
    compact one: the raw read path takes its bytes at an offset in the file)."""
    plist = dataset.get_create_plist()
    layout = plist.get_layout()
    refused = ("a virtual dataset (it reads other files)" if layout == h5py.h5d.VIRTUAL
               else "external storage (it reads other files)" if plist.get_external_count()
               else "a chunked or filtered layout" if layout == h5py.h5d.CHUNKED or plist.get_nfilters()
               or (contiguous and layout != h5py.h5d.CONTIGUOUS) else None)
    if refused:
        raise UnsafeStoreError(f"shard {path}: dataset {where} uses {refused}, which this writer never produces; "
                               "refusing the shard")


def _members(group: Any) -> list[bytes]:
    return [group.get_objname_by_idx(i) for i in range(group.get_num_objs())]


def check_objects(fid: Any, path: Path, groups: tuple[str, ...] = _GROUPS) -> None:
    """Refuse anything but the writer's layout in the open file ``fid``: datasets at the root and in
    ``groups``, joined by hard links, stored contiguously without filters.

    Raises
    ------
    UnsafeStoreError
    """
    root = h5py.h5g.open(fid, b"/")
    for name in _members(root):
        where = f"/{name.decode('utf-8', 'replace')}"
        item = _open_member(root, name, path, where)
        if isinstance(item, h5py.h5g.GroupID) and where[1:] in groups:
            for member in _members(item):
                inner = f"{where}/{member.decode('utf-8', 'replace')}"
                dataset = _open_member(item, member, path, inner)
                if not isinstance(dataset, h5py.h5d.DatasetID):
                    raise _not_a_dataset(path, inner)
                _check_storage(dataset, path, inner)
        elif isinstance(item, h5py.h5d.DatasetID):
            _check_storage(item, path, where)
        else:
            raise _not_a_dataset(path, where)


def check_feature_layouts(path: Path, expected: dict[str, FeatureLayout], members: set[str]) -> None:
    """Check, through HDF5's low-level API, that the feature datasets ``expected`` names lie where
    the manifest records them, stored as the writer stores them.

    The raw read path takes feature bytes at the recorded offsets without parsing the file;
    this check (about 0.1 ms per shard) makes it refuse what :func:`open_shard` refuses: links
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
        group = _open_member(h5py.h5g.open(fid, b"/"), b"features", path, "/features")
        if not isinstance(group, h5py.h5g.GroupID):
            raise _not_a_dataset(path, "/features")
        found = {name.decode("utf-8", "replace") for name in _members(group)}
        for extra in sorted(found - members):
            raise _not_a_dataset(path, f"/features/{extra}")
        for name, layout in expected.items():
            where = f"/features/{name}"
            dataset = _open_member(group, name.encode(), path, where)
            if not isinstance(dataset, h5py.h5d.DatasetID):
                raise _not_a_dataset(path, where)
            _check_storage(dataset, path, where, contiguous=True)
            offset = dataset.get_offset()
            if dataset.shape != layout.shape or (layout.offset is not None and offset != layout.offset):
                raise _damaged(path, f"{where} lies at offset {offset} with shape {dataset.shape}, the manifest says "
                                     f"{layout.offset} and {layout.shape}")
    except KeyError as exc:
        raise _damaged(path, str(exc)) from None
    finally:
        fid.close()


@contextmanager
def open_shard(path: Path, groups: tuple[str, ...] = _GROUPS) -> Iterator[h5py.File]:
    """Open a store's HDF5 file (a shard, the row index, a task file) for reading after refusing
    what the writer never produces.

    Only plain contiguous, unfiltered datasets, and the groups ``groups`` (a shard's
    ``features`` and ``aliases`` by default), joined by hard links are accepted: external
    links, soft links, external storage, virtual datasets, chunks and filters (whose plugins
    HDF5 would load) raise :class:`UnsafeStoreError` before anything is followed.

    Examples
    --------
    >>> with open_shard(path) as f:  # doctest: +SKIP
    ...     keys = f["keys"][()]
    """
    path = Path(path)
    seen = os.lstat(path)
    if not stat.S_ISREG(seen.st_mode):
        raise UnsafeStoreError(f"shard {path} is {path_kind(path)}, not a regular file; refusing to read it")
    file = h5py.File(path, "r")
    try:
        opened = os.fstat(file.id.get_vfd_handle())
        if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):  # swapped for a link meanwhile
            raise UnsafeStoreError(f"shard {path} changed while being opened; refusing to read it")
        check_objects(file.id, path, groups)
        yield file
    finally:
        file.close()
