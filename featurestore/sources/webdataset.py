"""WebDataset tar shards, streamed member by member (never unpacked to disk)."""

from __future__ import annotations

import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._folder import IMAGE_EXTENSIONS, SPLIT_NAMES
from ..errors import ArchiveMemberError, SourceError
from .item import MAX_FILE_BYTES, SourceItem
from .members import InMemory, Refused, member_path, too_large, unsafe_name

__all__ = ["IMAGE_SUFFIXES", "LABEL_MAX_BYTES", "MAX_SHARDS", "WebDatasetSource", "expand_braces", "parse_label_from"]

#: Member suffixes (lower case) taken as a sample's image, in the order they are preferred.
IMAGE_SUFFIXES = tuple(ext[1:] for ext in IMAGE_EXTENSIONS) + ("ppm", "pgm", "pbm")
#: A label member (``cls``, ``txt``, ``json``) larger than this is refused.
LABEL_MAX_BYTES = 1 << 20
#: The most shards a brace pattern may expand to.
MAX_SHARDS = 1_000_000
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext: key prefix, suffix
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")
_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..099}`` ranges (zero-padded to the first bound's width) and ``{a,b}`` lists.

    Raises
    ------
    SourceError
        A brace holding neither, or more than :data:`MAX_SHARDS` names.

    Examples
    --------
    >>> expand_braces("s-{00..02}.tar")
    ['s-00.tar', 's-01.tar', 's-02.tar']
    >>> expand_braces("{train,test}/{0..1}.tar")
    ['train/0.tar', 'train/1.tar', 'test/0.tar', 'test/1.tar']
    """
    names = [pattern]
    while any(_BRACE.search(name) for name in names):
        expanded = []
        for name in names:
            match = _BRACE.search(name)
            if match is None:
                expanded.append(name)
                continue
            body, head, tail = match.group(1), name[:match.start()], name[match.end():]
            bounds = _RANGE.fullmatch(body)
            if bounds:
                first, last = int(bounds.group(1)), int(bounds.group(2))
                width = len(bounds.group(1).lstrip("-")) if bounds.group(1).lstrip("-").startswith("0") else 0
                step = 1 if last >= first else -1
                if abs(last - first) + 1 > MAX_SHARDS:
                    raise SourceError(f"shard pattern {pattern!r} expands to over {MAX_SHARDS} names")
                options = [f"{i:0{width}d}" for i in range(first, last + step, step)]
            elif "," in body:
                options = body.split(",")
            else:
                raise SourceError(f"shard pattern {pattern!r}: {{{body}}} is neither a range such as {{000..099}} "
                                  "nor a list such as {a,b}")
            expanded.extend(head + option + tail for option in options)
            if len(expanded) > MAX_SHARDS:
                raise SourceError(f"shard pattern {pattern!r} expands to over {MAX_SHARDS} names")
        names = expanded
    return names


def parse_label_from(label_from: str | None) -> tuple[str | None, str | None]:
    """(member suffix, json field) of a ``--label-from`` value for WebDataset shards.

    ``None`` or ``cls`` -> ``('cls', None)``; ``txt`` or any other suffix -> that suffix;
    ``json:FIELD`` -> ``('json', FIELD)``; ``none`` -> ``(None, None)`` (unlabelled).
    """
    if label_from is None:
        return "cls", None
    if label_from == "none":
        return None, None
    suffix, _, field = label_from.partition(":")
    if not suffix or "/" in suffix or (suffix == "json") != bool(field) or (field and suffix != "json"):
        raise SourceError(f"--label-from {label_from!r} for WebDataset shards must be a member suffix such as cls "
                          "or txt, json:FIELD (a field of the sample's .json member), or none")
    return suffix.lower(), field or None


class WebDatasetSource:
    """WebDataset tar shards: each sample's image member, labelled by its ``cls``/``txt``/``json`` member.

    Shards are read in the order given, member by member with :mod:`tarfile` in streaming mode
    (plain, gzip, bzip2 or xz tars); nothing is written to disk. Members are grouped into
    samples as ``webdataset`` groups them: consecutive members sharing a key prefix (the name up
    to the first dot of its last part; the rest is the suffix, matched in lower case). A
    sample's image is its first member with a suffix in :data:`IMAGE_SUFFIXES` (or the suffix
    ``image_from``); its item has the path ``SHARD.tar#member``, the sample's label and, when
    the shard lies in a folder named as a split (:data:`~featurestore.sources.SPLIT_NAMES`),
    that split. Only the image and label members are read; other members are skipped.

    These become failures that ``extract`` records (:class:`~featurestore.errors.ArchiveMemberError`
    or :class:`~featurestore.errors.FileTooLargeError`), never members written out:

    - a member whose name escapes the archive (absolute, ``..``, backslash, drive letter),
      a link, device or FIFO, a second member of the same name: path ``SHARD.tar#member``;
    - an image member over ``max_file_bytes`` (it is skipped, not read), a label member over
      :data:`LABEL_MAX_BYTES` or that is not UTF-8 text (JSON for ``json:FIELD``);
    - a sample with no image member: path ``SHARD.tar#key``;
    - a shard that cannot be opened, or is truncated or corrupt: one failure at the point where
      reading stopped (the samples before it are kept; the sample being read is dropped).

    Parameters
    ----------
    shards : str, os.PathLike or sequence of them
        Shard paths; a string may hold brace patterns (:func:`expand_braces`).
    label_from : str, optional
        Which member gives the label (:func:`parse_label_from`): ``cls`` (default), ``txt``,
        ``json:FIELD`` or ``none``. A sample without that member is unlabelled.
    image_from : str, optional
        The image member's suffix (e.g. ``png``); default: the first image member.
    max_file_bytes : int, default=MAX_FILE_BYTES
        Image members larger than this are recorded as failures without being read.

    Raises
    ------
    SourceError
        A shard that does not exist, a malformed pattern or ``label_from``.
    """

    def __init__(self, shards: str | os.PathLike[str] | list[str | os.PathLike[str]], label_from: str | None = None,
                 image_from: str | None = None, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        given = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
        paths = [name for item in given
                 for name in (expand_braces(item) if isinstance(item, str) else [os.fspath(item)])]
        if not paths:
            raise SourceError("a WebDataset source needs at least one shard")
        self.shards = [Path(p).absolute() for p in paths]
        for shard in self.shards:
            if not shard.is_file():
                raise SourceError(f"WebDataset shard {str(shard)!r} does not exist (or is not a file); check the "
                                  "path or brace pattern")
        self.label_suffix, self.label_field = parse_label_from(label_from)
        self.image_suffix = image_from.lower() if image_from else None
        self.max_file_bytes = max_file_bytes
        pattern = given[0] if len(given) == 1 and isinstance(given[0], str) else f"{len(self.shards)} shards"
        self.name = f"wds:{pattern}"
        self._length: int | None = None
        self._classes: tuple[str, ...] | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        """Sorted distinct labels (read from the label members on first use: one pass over the shards)."""
        if self._classes is None:
            self._count()
        return self._classes  # type: ignore[return-value]

    def __len__(self) -> int:
        if self._length is None:
            self._count()
        return self._length  # type: ignore[return-value]

    def _count(self) -> None:
        n, labels = 0, set()
        for item in self._items(read_images=False):
            n += 1
            if item.label is not None:
                labels.add(item.label)
        self._length, self._classes = n, tuple(sorted(labels))

    def __iter__(self) -> Iterator[SourceItem]:
        return self._items(read_images=True)

    def __repr__(self) -> str:
        return f"WebDatasetSource({self.name!r}, {len(self.shards)} shards)"

    def _items(self, read_images: bool) -> Iterator[SourceItem]:
        for index in range(len(self.shards)):
            yield from self.shard_items(index, read_images)

    def shard_items(self, index: int, read_images: bool = True) -> Iterator[SourceItem]:
        """The items of shard ``index`` alone, as iterating the source yields them (a unit of work on its own).

        Parameters
        ----------
        index : int
            Position of the shard in :attr:`shards`.
        read_images : bool, default=True
            Read the image members (False: their items read as empty bytes; for counting).
        """
        shard = self.shards[index]
        split = shard.parent.name if shard.parent.name.lower() in SPLIT_NAMES else None
        return _ShardReader(self, str(shard), split, read_images).items()


class _Sample:
    def __init__(self, key: str) -> None:
        self.key = key
        self.image: tuple[str, Any] | None = None  # (member name, bytes or an OSError)
        self.label: tuple[str, Any] | None = None
        self.refused = False


class _ShardReader:
    """One pass over one shard, yielding its items in member order."""

    def __init__(self, source: WebDatasetSource, shard: str, split: str | None, read_images: bool) -> None:
        self.source, self.shard, self.split, self.read_images = source, shard, split, read_images

    def items(self) -> Iterator[SourceItem]:
        sample: _Sample | None = None
        seen: set[str] = set()
        last = None
        try:
            # Reading streams the shard; counting seeks over the images (plain tars) instead of reading them.
            with tarfile.open(self.shard, "r|*" if self.read_images else "r:*") as tar:
                for info in tar:
                    last = info.name
                    refusal = self._refusal(info, seen)
                    seen.add(info.name)
                    if refusal is not None:
                        yield refusal
                        key = _KEY.match(info.name)
                        if sample is not None and key and key.group(1) == sample.key:
                            sample.refused = True
                        continue
                    if not info.isreg():  # folders
                        continue
                    match = _KEY.match(info.name)
                    if match is None or (match.group(1).startswith("__") and match.group(1).endswith("__")):
                        continue
                    key, suffix = match.group(1), match.group(2).lower()
                    if sample is None or key != sample.key:
                        if sample is not None:
                            yield self._item(sample)
                        sample = _Sample(key)
                    self._take(tar, info, suffix, sample)
        except _ERRORS as exc:
            where = member_path(self.shard, last) if last else self.shard
            what = f"after member {last!r}" if last else "at its start"
            yield SourceItem(where, reader=Refused(where, "", ArchiveMemberError(
                f"shard {self.shard!r} cannot be read {what} ({type(exc).__name__}: {exc}); the samples before it "
                "were read: replace the shard with a complete copy")))
            return
        if sample is not None:
            yield self._item(sample)

    def _refusal(self, info: tarfile.TarInfo, seen: set[str]) -> SourceItem | None:
        reason = unsafe_name(info.name)
        if reason is None and info.name in seen:
            reason = "a member of this name came before it"
        if reason is None and not (info.isreg() or info.isdir()):
            kind = ("a symbolic link" if info.issym() else "a hard link" if info.islnk()
                    else "a device" if info.isdev() else "not a regular file")
            reason = f"it is {kind}"
        if reason is None:
            return None
        where = member_path(self.shard, info.name)
        return SourceItem(where, reader=Refused(where, reason))

    def _take(self, tar: tarfile.TarFile, info: tarfile.TarInfo, suffix: str, sample: _Sample) -> None:
        source = self.source
        is_image = suffix == source.image_suffix if source.image_suffix else suffix in IMAGE_SUFFIXES
        if is_image and sample.image is None:
            where = member_path(self.shard, info.name)
            if info.size > source.max_file_bytes:
                sample.image = (info.name, too_large(where, info.size, source.max_file_bytes))
            else:
                sample.image = (info.name, _read(tar, info) if self.read_images else b"")
        elif suffix == source.label_suffix and sample.label is None:
            if info.size > LABEL_MAX_BYTES:
                sample.label = (info.name, ArchiveMemberError(
                    f"{member_path(self.shard, info.name)!r} is refused: a label member of {info.size} bytes, "
                    f"over {LABEL_MAX_BYTES}"))
            else:
                sample.label = (info.name, _read(tar, info))

    def _item(self, sample: _Sample) -> SourceItem:
        if sample.image is None:
            where = member_path(self.shard, sample.key)
            if sample.refused:  # its refused member is the failure recorded
                return SourceItem(where, reader=Refused(where, "its image member is refused"))
            wanted = self.source.image_suffix or "/".join(IMAGE_SUFFIXES[:4]) + "/..."
            return SourceItem(where, reader=Refused(where, f"the sample has no image member ({wanted})"))
        name, data = sample.image
        where = member_path(self.shard, name)
        try:
            label = self._label(sample)
        except ArchiveMemberError as exc:
            return SourceItem(where, reader=Refused(where, "", exc))
        if isinstance(data, OSError):
            return SourceItem(where, label, self.split, reader=Refused(where, "", data))
        return SourceItem(where, label, self.split, reader=InMemory(where, data))

    def _label(self, sample: _Sample) -> str | None:
        if sample.label is None:
            return None
        name, data = sample.label
        if isinstance(data, OSError):
            raise data
        where = member_path(self.shard, name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveMemberError(f"label member {where!r} is not UTF-8 text") from None
        if self.source.label_field is None:
            return text.strip() or None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ArchiveMemberError(f"label member {where!r} is not JSON: {exc}") from None
        value = value.get(self.source.label_field) if isinstance(value, dict) else None
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            raise ArchiveMemberError(f"label member {where!r}: field {self.source.label_field!r} holds a "
                                     f"{type(value).__name__}, not a class name or number")
        return str(value)


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A member's bytes, read from the stream before the next header."""
    fh = tar.extractfile(info)
    data = fh.read() if fh is not None else b""
    if len(data) != info.size:
        raise ArchiveMemberError(f"member {info.name!r} ends after {len(data)} of its {info.size} bytes")
    return data
