"""Write small real image files (JPEG, PNG, broken ones) for the test suites.

Every writer takes a folder (normally ``tmp_path``), creates it if needed, and returns the
paths it wrote. Content is deterministic for a given seed: smooth gradients with a few
flat rectangles, so resampling and JPEG behave as on photos rather than on noise.

Sizes follow Pillow's convention: ``(width, height)``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "EXIF_ORIENTATION",
    "smooth_rgb",
    "write_bad_images",
    "write_good_images",
    "write_jpeg",
    "write_png_bomb",
    "write_tricky_images",
]

#: EXIF tag number of "Orientation".
EXIF_ORIENTATION = 0x0112


def smooth_rgb(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Return a deterministic ``(height, width, 3)`` uint8 image: gradients plus rectangles.

    Parameters
    ----------
    size : (int, int)
        (width, height) of the image.
    seed : int, default=0
        Seed of the colours and rectangle positions.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    img = np.empty((height, width, 3), dtype=np.float64)
    for c in range(3):
        a, b, phase = rng.uniform(0.2, 1.0), rng.uniform(0.2, 1.0), rng.uniform(0, 2 * np.pi)
        img[:, :, c] = 0.5 + 0.25 * a * np.cos(2 * np.pi * x * (c + 1) + phase) + 0.25 * b * (2 * y - 1)
    for _ in range(4):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        img[y0 : y1 + 1, x0 : x1 + 1] = rng.uniform(0.05, 0.95, size=3)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def write_jpeg(path: Path, size: tuple[int, int], seed: int = 0, quality: int = 90) -> Path:
    """Write one smooth RGB JPEG of ``size`` (width, height) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(size, seed), mode="RGB").save(path, "JPEG", quality=quality)
    return path


def write_good_images(folder: Path, n: int = 6, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Path]:
    """Write ``n`` RGB images, alternating JPEG and PNG, each with different content.

    Parameters
    ----------
    folder : Path
        Destination folder (created if missing).
    n : int, default=6
        Number of images.
    size : (int, int), default=(64, 48)
        (width, height) of every image.
    seed : int, default=0
        Image ``i`` uses seed ``seed + i``.

    Returns
    -------
    list of Path
        The files, in the order written (``good_000.jpg``, ``good_001.png`` ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = smooth_rgb(size, seed + i)
        if i % 2 == 0:
            path = folder / f"good_{i:03d}.jpg"
            Image.fromarray(pixels, mode="RGB").save(path, "JPEG", quality=90)
        else:
            path = folder / f"good_{i:03d}.png"
            Image.fromarray(pixels, mode="RGB").save(path, "PNG")
        paths.append(path)
    return paths


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """Write a valid all-black 1-bit PNG of ``width`` x ``height`` that is tiny on disk.

    The IDAT stream is compressed row block by row block, so neither the image nor its
    raw scanlines are ever held in memory: 20000 x 20000 takes a fraction of a second and
    writes about 50 kB, while decoding it would need 400 MB (Pillow keeps mode ``1`` at
    one byte per pixel) and 1.2 GB once converted to RGB.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = b"\x00" + bytes((width + 7) // 8)  # filter type 0, all-zero bits
    rows_per_block = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts = []
    done = 0
    while done < height:
        count = min(rows_per_block, height - done)
        parts.append(compressor.compress(row * count))
        done += count
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Write files that must be refused, keyed by kind.

    Kinds: ``zero_byte`` (empty ``.jpg``), ``truncated_jpeg`` (a valid JPEG cut to half its
    bytes), ``html_as_jpg`` (an HTML page named ``.jpg``) and ``bomb`` (a 20000 x 20000 PNG
    of about 50 kB whose size alone makes Pillow raise ``DecompressionBombError``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}

    paths["zero_byte"] = folder / "zero_byte.jpg"
    paths["zero_byte"].write_bytes(b"")

    whole = write_jpeg(folder / "whole_for_truncation.jpg", (96, 72), seed=11)
    data = whole.read_bytes()
    whole.unlink()
    paths["truncated_jpeg"] = folder / "truncated.jpg"
    paths["truncated_jpeg"].write_bytes(data[: len(data) // 2])

    paths["html_as_jpg"] = folder / "html_as.jpg"
    paths["html_as_jpg"].write_text(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        "<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n",
        encoding="utf-8",
    )

    paths["bomb"] = write_png_bomb(folder / "bomb.png")
    return paths


def write_tricky_images(folder: Path, size: tuple[int, int] = (64, 48)) -> dict[str, Path]:
    """Write valid images whose mode or metadata needs care, keyed by kind.

    Kinds: ``cmyk_jpeg``; ``png16`` (mode ``I;16`` using the full 0..65535 range);
    ``palette_png`` (mode ``P``); ``palette_transparent_png`` (``P`` whose index 0 is
    transparent and fills a rectangle); ``rgba_png`` (alpha ramping 0..255 left to right);
    ``la_png`` (same alpha ramp); ``exif_rotated_jpeg`` (stored ``size``, EXIF Orientation
    6, so it displays rotated to height x width); ``exif_rotated_reference`` (lossless PNG
    of exactly the pixels the JPEG displays after ``ImageOps.exif_transpose``);
    ``grayscale_jpeg`` (mode ``L``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = {}

    rgb = Image.fromarray(smooth_rgb(size, 21), mode="RGB")
    paths["cmyk_jpeg"] = folder / "cmyk.jpg"
    rgb.convert("CMYK").save(paths["cmyk_jpeg"], "JPEG", quality=95)

    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    ramp = x * (0.25 + 0.75 * y)  # 0 at the left edge, 1 at the bottom-right corner
    png16 = np.rint(ramp / ramp.max() * 65535.0).astype(np.uint16)
    paths["png16"] = folder / "gray16.png"
    Image.fromarray(png16).save(paths["png16"], "PNG")

    paths["palette_png"] = folder / "palette.png"
    rgb.quantize(colors=16, method=Image.Quantize.MEDIANCUT).save(paths["palette_png"], "PNG")

    rng = np.random.default_rng(22)
    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8)
    index = (np.floor(ramp * 14.999) + 1).astype(np.uint8)  # indices 1..15
    index[height // 4 : height // 2, width // 4 : width // 2] = 0  # the transparent index
    pal = Image.fromarray(index, mode="L").convert("P")
    pal.putpalette(palette.ravel().tolist())
    paths["palette_transparent_png"] = folder / "palette_transparent.png"
    pal.save(paths["palette_transparent_png"], "PNG", transparency=0)

    alpha = np.broadcast_to(np.rint(x * 255.0).astype(np.uint8), (height, width))
    paths["rgba_png"] = folder / "rgba.png"
    Image.fromarray(np.dstack([np.asarray(rgb), alpha]), mode="RGBA").save(paths["rgba_png"], "PNG")

    gray = np.asarray(rgb.convert("L"))
    paths["la_png"] = folder / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(paths["la_png"], "PNG")

    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    paths["exif_rotated_jpeg"] = folder / "exif_rotated.jpg"
    Image.fromarray(smooth_rgb(size, 23), mode="RGB").save(
        paths["exif_rotated_jpeg"], "JPEG", quality=95, exif=exif.tobytes()
    )
    with Image.open(paths["exif_rotated_jpeg"]) as raw:
        raw.load()
        shown = ImageOps.exif_transpose(raw)
    paths["exif_rotated_reference"] = folder / "exif_rotated_reference.png"
    Image.fromarray(np.asarray(shown), mode="RGB").save(paths["exif_rotated_reference"], "PNG")

    paths["grayscale_jpeg"] = folder / "grayscale.jpg"
    Image.fromarray(gray, mode="L").save(paths["grayscale_jpeg"], "JPEG", quality=95)
    return paths
