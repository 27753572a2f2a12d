"""Small thumbnails of a store's images, for pages people look at (a bench report, an embedding map).

A store records where each row's image was first seen: a file path, or a pseudo path such as
``fashion-mnist:test/00012``. :func:`make_thumbnails` reads only the images it is asked for,
bounded in bytes and pixels, and returns each as a ``data:`` URI; an image that is no longer
there (or no longer an image) is skipped and counted, never an error. Paths come from a store,
so they are untrusted: a path is read only if it is a regular file of at most
:data:`MAX_THUMBNAIL_FILE_BYTES`, and nothing but the decoded pixels reaches the page.
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_THUMBNAIL_FILE_BYTES", "MAX_THUMBNAIL_PIXELS", "Thumbnails", "make_thumbnails"]

#: A file larger than this is not read for a thumbnail (skipped and counted).
MAX_THUMBNAIL_FILE_BYTES = 64 << 20
#: An image whose header declares more pixels than this is not decoded (skipped and counted).
MAX_THUMBNAIL_PIXELS = 100_000_000

_FASHION_MNIST = re.compile(r"fashion-mnist:(train|test)/(\d{1,6})")


@dataclass
class Thumbnails:
    """Thumbnails of some of the paths asked for.

    Attributes
    ----------
    images : dict of int to str
        Position in the paths asked for -> ``data:image/...;base64,...`` URI.
    missing : int
        Paths whose image is no longer there (no such file, or a pseudo path whose data set
        is not installed).
    unreadable : int
        Paths that are there but could not be read or decoded (not a regular file, too large,
        not an image).
    """

    images: dict[int, str] = field(default_factory=dict)
    missing: int = 0
    unreadable: int = 0

    @property
    def skipped(self) -> int:
        """Paths that have no thumbnail."""
        return self.missing + self.unreadable


def make_thumbnails(paths: Sequence[str], size: int = 96, progress: bool = False) -> Thumbnails:
    """Decode the images at ``paths`` (and only those) into thumbnails of at most ``size`` x ``size``.

    Parameters
    ----------
    paths : sequence of str
        File paths, or ``fashion-mnist:<split>/<index>`` pseudo paths (read from the IDX files
        of :class:`~featurestore.sources.FashionMnistSource`); any other pseudo path (``array:...``)
        has no image to show and is counted as missing.
    size : int, default=96
        Longest side of a thumbnail, in pixels.
    progress : bool, default=False
        Show a progress bar on stderr.

    Returns
    -------
    Thumbnails
    """
    from tqdm.auto import tqdm

    out = Thumbnails()
    fmnist = _fashion_mnist_images(paths)
    for i, path in enumerate(tqdm(paths, desc="thumbnails", unit="img", disable=not progress)):
        match = _FASHION_MNIST.fullmatch(path)
        if match:
            images = fmnist.get(match.group(1))
            index = int(match.group(2))
            if images is None or index >= len(images):
                out.missing += 1
            else:
                out.images[i] = _encode(_image_from_array(images[index]), size)
            continue
        try:
            img = _open_file(path)
            if img is None:  # larger than MAX_THUMBNAIL_PIXELS
                out.unreadable += 1
            else:
                out.images[i] = _encode(img, size)
        except FileNotFoundError:
            out.missing += 1
        except Exception:  # noqa: BLE001 - a file that is not a readable image is skipped, whatever Pillow raises
            out.unreadable += 1
    return out


def _fashion_mnist_images(paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Per split, the Fashion-MNIST images up to the largest index asked for (none when it is not installed)."""
    wanted: dict[str, int] = {}
    for path in paths:
        match = _FASHION_MNIST.fullmatch(path)
        if match:
            wanted[match.group(1)] = max(wanted.get(match.group(1), 0), int(match.group(2)) + 1)
    if not wanted:
        return {}
    import os
    from pathlib import Path

    from ._idx import read_idx
    from .errors import SourceError
    from .sources.fashion_mnist import _FASHION_MNIST_FILES, FASHION_MNIST_DIR, FASHION_MNIST_ENV

    root = Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
    out = {}
    for split, limit in wanted.items():
        try:
            out[split] = read_idx(root / _FASHION_MNIST_FILES[split][0], ndim=3, limit=limit)
        except (SourceError, OSError):
            continue
    return out


def _image_from_array(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


def _open_file(path: str):
    """The decoded image at ``path`` (shrunk in the DCT domain for a JPEG), or None when its header
    declares more than :data:`MAX_THUMBNAIL_PIXELS` pixels."""
    from PIL import Image

    from ._atomic import read_regular_file
    from ._folder import IMAGE_FORMATS

    data = read_regular_file(path, max_bytes=MAX_THUMBNAIL_FILE_BYTES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if img.width * img.height > MAX_THUMBNAIL_PIXELS:
            return None
        if img.format == "JPEG":
            img.draft(img.mode, (256, 256))
        img.load()
    return img


def _encode(img, size: int) -> str:
    """A ``data:`` URI of ``img`` shrunk to at most ``size`` pixels a side: PNG for grey or small images, else JPEG."""
    from PIL import Image

    if img.mode not in ("L", "RGB"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        if img.mode == "RGBA":  # flattened on white: a thumbnail needs no transparency
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img, mask=img.getchannel("A"))
            img = background
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS if max(img.size) > size else Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    if img.mode == "L" or max(img.size) <= 48:
        img.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        img.save(buffer, format="JPEG", quality=82)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
