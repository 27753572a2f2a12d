"""Scanning an image folder and reading labels and splits from its layout (see ``FolderSource``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SourceError

__all__ = ["IMAGE_EXTENSIONS", "SPLIT_NAMES", "scan_images", "folder_tags"]

#: File extensions (lower case) a ``FolderSource`` takes as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: The Pillow formats an image is decoded from, whatever its name says: common raster formats
#: only. An image is untrusted input, and some formats Pillow knows hand the file to another
#: program (EPS to Ghostscript) or to rarely exercised decoders. (A camera's multi-picture JPEG
#: opens through JPEG.)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: Top-level folder names (any case) that a ``FolderSource`` reads as split tags.
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")


def scan_images(root: Path) -> list[tuple[str, ...]]:
    """Relative path parts of every image below ``root``, sorted."""

    def fail(exc: OSError) -> None:
        raise SourceError(f"cannot list {exc.filename!r} while scanning {str(root)!r}: {exc.strerror}")

    found: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).parts
        for filename in filenames:
            if filename.startswith(".") or os.path.splitext(filename)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(dirpath, filename)
            # A broken link (dangling or a loop) is listed: reading it fails and the failure is recorded.
            if os.path.isfile(path) or (os.path.islink(path) and not os.path.exists(path)):
                found.append(rel + (filename,))
    found.sort()
    return found


def folder_tags(found: list[tuple[str, ...]], where: str) -> list[tuple[str | None, str | None]]:
    """(label, split) of each image, following the rule in :class:`FolderSource`."""
    _check_not_mixed(found, where)
    if len(found[0]) == 1:
        return [(None, None)] * len(found)
    tops = sorted({parts[0] for parts in found})
    splits = [top for top in tops if top.lower() in SPLIT_NAMES]
    if not splits:
        return [(parts[0], None) for parts in found]
    if len(splits) != len(tops):
        others = [top for top in tops if top not in splits]
        raise SourceError(
            f"image folder {where!r} holds split folders ({', '.join(splits)}) next to other folders "
            f"({', '.join(others[:5])}); use either root/<split>/<class>/<image> or root/<class>/<image>"
        )
    for split in splits:
        _check_not_mixed([parts[1:] for parts in found if parts[0] == split], os.path.join(where, split))
    return [(parts[1] if len(parts) > 2 else None, parts[0]) for parts in found]


def _check_not_mixed(found: list[tuple[str, ...]], where: str) -> None:
    direct = [parts for parts in found if len(parts) == 1]
    nested = [parts for parts in found if len(parts) > 1]
    if direct and nested:
        raise SourceError(
            f"image folder {where!r} mixes images lying directly in it (e.g. {direct[0][0]!r}) with images "
            f"in subfolders (e.g. {'/'.join(nested[0])!r}); put every image in a class folder "
            "(<folder>/<class>/<image>), or every image directly in the folder (unlabelled)"
        )
