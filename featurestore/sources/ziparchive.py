"""The images in a zip archive of a folder tree, read in place (never unpacked to disk)."""

from __future__ import annotations

import os
import stat
import threading
import zipfile
import zlib
from collections import Counter
from pathlib import Path

from .._folder import IMAGE_EXTENSIONS, folder_tags
from ..errors import ArchiveMemberError, SourceError
from .item import ItemListSource, SourceItem
from .members import Refused, member_path, plain_parts, too_large, unsafe_name

__all__ = ["MAX_COMPRESSION_RATIO", "RATIO_FLOOR_BYTES", "ZipSource"]

#: A member that inflates more than this many times its compressed size is refused as a zip bomb
#: (once it is over :data:`RATIO_FLOOR_BYTES`). Encoded images (JPEG, PNG, WebP) barely compress;
#: even uncompressed BMP or TIFF photos compress a few times, while a zip bomb inflates ~1000x.
MAX_COMPRESSION_RATIO = 100
#: Members up to this size are never refused for their compression ratio: they are harmless
#: whatever it is (a flat 64x64 BMP compresses 200x).
RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 20


class ZipSource(ItemListSource):
    """The images in a ``.zip`` archive of a folder tree, read in place.

    Members are laid out, labelled and split by the rules of
    :class:`~featurestore.sources.FolderSource` (class folders, split folders, hidden names
    skipped, only :data:`~featurestore.sources.IMAGE_EXTENSIONS`), as if the archive were
    unpacked into a folder; when every member lies in one top folder named as the archive
    (``imgs.zip`` holding ``imgs/...``, as ``zip -r imgs.zip imgs`` writes it), that folder is
    the root. Items have the path ``ARCHIVE.zip#member`` and no label or split when refused.

    Nothing is ever written to disk: a member is inflated into memory when its item is read,
    at most ``max_bytes`` (``--max-file-bytes``) of it. These members are refused, i.e.
    recorded as failures by ``extract`` (:class:`~featurestore.errors.ArchiveMemberError`,
    or :class:`~featurestore.errors.FileTooLargeError` over the size bound):

    - a name that escapes the archive (absolute, ``..``, backslash, drive letter) or holds
      control characters, whatever its extension;
    - a symbolic link or any other non-regular entry, and a name present twice;
    - an encrypted member;
    - a declared size over ``max_bytes``, or a compression ratio over
      :data:`MAX_COMPRESSION_RATIO` (for members over :data:`RATIO_FLOOR_BYTES`), checked on
      the declared sizes before inflating and on the bytes actually inflated while reading;
    - a member that cannot be inflated (corrupt data, bad CRC, unknown compression method).

    Parameters
    ----------
    path : str or os.PathLike
        The archive; made absolute.

    Raises
    ------
    SourceError
        The archive is missing, is not a zip file, or holds no images (nor refused members),
        or its images mix layouts.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.name = f"zip:{self.path}"
        self._lock = threading.Lock()
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except FileNotFoundError:
            raise SourceError(f"zip archive {str(self.path)!r} does not exist") from None
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise SourceError(f"cannot open {str(self.path)!r} as a zip archive: {type(exc).__name__}: {exc}; "
                              "check that the file is a complete .zip") from None
        self._set_items(self._list(infos))

    def _list(self, infos: list[zipfile.ZipInfo]) -> list[SourceItem]:
        archive = str(self.path)
        files = [info for info in infos if not info.is_dir()]
        counts = Counter(info.filename for info in files)
        refused: dict[str, str] = {}
        images: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
        for info in files:
            name = info.filename
            reason = unsafe_name(name)
            if reason is None and counts[name] > 1:
                reason = f"{counts[name]} members have this name"
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if reason is None and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                reason = f"it is {kind}"
            if reason is not None:
                refused.setdefault(name, reason)
                continue
            parts = plain_parts(name)
            if any(part.startswith(".") for part in parts) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            images.append((parts, info))
        images.sort(key=lambda entry: entry[0])
        found = [parts for parts, _ in images]
        if found and all(len(parts) > 1 and parts[0] == self.path.stem for parts in found):
            found = [parts[1:] for parts in found]
        if not found and not refused:
            raise SourceError(f"no images in zip archive {archive!r} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                              "skipping hidden files and folders)")
        tags = folder_tags(found, archive) if found else []
        items = [SourceItem(member_path(archive, info.filename), label, split, reader=_Member(self, info))
                 for (_, info), (label, split) in zip(images, tags)]
        items += [SourceItem(member_path(archive, name), reader=Refused(member_path(archive, name), reason))
                  for name, reason in sorted(refused.items())]
        return items

    def read_member(self, info: zipfile.ZipInfo, max_bytes: int | None) -> bytes:
        """The inflated bytes of one member, refused as :class:`ZipSource` describes."""
        where = member_path(str(self.path), info.filename)
        if info.flag_bits & 0x1:
            raise ArchiveMemberError(f"{where!r} is refused: it is encrypted; nothing was extracted")
        if max_bytes is not None and info.file_size > max_bytes:
            raise too_large(where, info.file_size, max_bytes)
        _check_ratio(where, info.file_size, info.compress_size, "declares")
        limit = info.file_size if max_bytes is None else min(info.file_size, max_bytes)
        chunks, total = [], 0
        try:
            with self._lock, self._zip.open(info) as fh:
                while True:
                    chunk = fh.read(min(_CHUNK, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        if max_bytes is not None and total > max_bytes:
                            raise too_large(where, total, max_bytes)
                        raise ArchiveMemberError(f"{where!r} is refused: it inflates past its declared size of "
                                                 f"{info.file_size} bytes; nothing was extracted")
                    _check_ratio(where, total, info.compress_size, "inflates to")
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
            raise ArchiveMemberError(f"{where!r} cannot be inflated: {type(exc).__name__}: {exc}") from None
        return b"".join(chunks)

    def close(self) -> None:
        """Close the archive (reading an item afterwards fails)."""
        self._zip.close()


def _check_ratio(where: str, size: int, compressed: int, verb: str) -> None:
    if size > RATIO_FLOOR_BYTES and size > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise ArchiveMemberError(
            f"{where!r} is refused as a zip bomb: it {verb} {size} bytes from {compressed} compressed, a ratio "
            f"over {MAX_COMPRESSION_RATIO}; nothing was extracted")


class _Member:
    """The reader of one member of a :class:`ZipSource`."""

    def __init__(self, source: ZipSource, info: zipfile.ZipInfo) -> None:
        self.source, self.info = source, info

    def __call__(self, max_bytes: int | None = None) -> bytes:
        return self.source.read_member(self.info, max_bytes)
