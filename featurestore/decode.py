"""Decode image files (or arrays) into the uint8 NHWC pixels an exported graph takes.

The host only decodes, converts the colour mode, resizes and crops, exactly as the
model's :class:`~featurestore.spec.Preprocessing` says; casting, scaling and mean/std
normalisation happen inside the ONNX graph.

Colour-mode rule (documented in docs/extract.md):

- EXIF orientation is applied first (``ImageOps.exif_transpose``).
- 16-bit and 32-bit integer modes (``I;16*``, ``I``) are scaled from 0..65535 to 0..255
  (divide by 257, round), never clipped at 255; ``I`` values outside 0..65535 are clipped
  to that range first. ``F`` (float) images in 0..1 are scaled by 255, others are clipped
  to 0..255.
- Images with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index) are
  alpha-composited over a white background (:data:`BACKGROUND`).
- Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) goes
  through Pillow's own conversion to RGB; a grayscale model then takes ITU-R 601-2 luma.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ._atomic import read_regular_file
from ._folder import IMAGE_FORMATS
from .errors import ImageDecodeError
from .sources.item import MAX_FILE_BYTES
from .spec import Preprocessing

__all__ = ["BACKGROUND", "IMAGE_FORMATS", "MAX_PIXELS", "decode_any", "decode_image", "preprocess_pil", "preprocess_array", "to_color_mode", "decode_or_error"]

BACKGROUND = (255, 255, 255)
#: Images with more pixels than this are refused before their pixels are decoded
#: (Pillow's own decompression-bomb threshold).
MAX_PIXELS = 89_478_485

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def decode_image(
    source: str | Path | bytes,
    preprocessing: Preprocessing,
    *,
    max_pixels: int = MAX_PIXELS,
    draft: bool = True,
) -> np.ndarray:
    """Decode one image into a uint8 ``(H, W, C)`` array ready for the graph.

    Parameters
    ----------
    source : str, Path or bytes
        Image file path, or the file's bytes. A path is read only if it is a regular file
        of at most :data:`~featurestore.sources.MAX_FILE_BYTES` (a device or FIFO is never opened).
    preprocessing : Preprocessing
        The model's preprocessing (from its spec).
    max_pixels : int, default=MAX_PIXELS
        Refuse images whose header declares more pixels than this, before decoding, and
        images whose resize step would produce more pixels than this (a 1 x 3,000,000
        sliver resized to a short side of 36). Pillow's own hard limit (twice
        :data:`MAX_PIXELS`) still applies above it.
    draft : bool, default=True
        Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain when the
        image stays at least as large as the resize target (a large speed-up on big
        photos; a no-op when the image is upscaled).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(crop_h, crop_w, channels)``.

    Raises
    ------
    ImageDecodeError
        Empty, truncated, non-image or over-sized input; ``cause`` names the exception
        (``DecompressionBombError`` for every size refusal).
    OSError
        A path that cannot be read: ``FileNotFoundError``,
        :class:`~featurestore.errors.NotAFileError` (device, FIFO, socket, folder),
        :class:`~featurestore.errors.FileTooLargeError`.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        source = read_regular_file(source, max_bytes=MAX_FILE_BYTES)
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_PIXELS on; the explicit check below decides instead,
            # so the refusal always has the same cause and honours ``max_pixels``.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source), formats=IMAGE_FORMATS) as img:
                _check_size(img.width, img.height, preprocessing, name, max_pixels)
                if draft and img.format == "JPEG":
                    _apply_draft(img, preprocessing)
                img.load()
                return _preprocess(img, preprocessing, name, max_pixels)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            EOFError, MemoryError) as exc:
        raise ImageDecodeError(name, type(exc).__name__, str(exc)) from None


def decode_any(data: bytes | np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Preprocess what a source item reads: file bytes through :func:`decode_image`, arrays through
    :func:`preprocess_array`."""
    if isinstance(data, np.ndarray):
        return preprocess_array(data, preprocessing)
    return decode_image(data, preprocessing)


def decode_or_error(data: bytes | np.ndarray, preprocessing: Preprocessing
                    ) -> tuple[np.ndarray, None] | tuple[None, ImageDecodeError]:
    """:func:`decode_any`, never raising for a bad input: ``(pixels, None)`` or ``(None, error)``.

    Whatever a damaged file makes the decoders raise becomes an :class:`ImageDecodeError`
    naming the underlying exception, so a long job records it and carries on.
    """
    try:
        return decode_any(data, preprocessing), None
    except ImageDecodeError as exc:
        return None, exc
    except Exception as exc:  # a bad file must never stop the job
        return None, ImageDecodeError("<bytes>", type(exc).__name__, str(exc))


def preprocess_array(array: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Preprocess an in-memory image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    ``uint8`` arrays are taken as 0..255, ``uint16`` as 0..65535 and float arrays follow the
    ``F`` rule of the module docstring.

    Raises
    ------
    ImageDecodeError
        The shape or dtype is not an image's, or resizing would exceed :data:`MAX_PIXELS`.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape[:2]:
        raise ImageDecodeError("<array>", "ValueError", f"array of shape {np.shape(array)} is not an image")
    if arr.dtype == np.uint16:
        arr = _scale_16bit(arr.astype(np.float64))
    elif arr.dtype.kind == "f":
        arr = _scale_float(arr.astype(np.float64))
    elif arr.dtype != np.uint8:
        raise ImageDecodeError("<array>", "TypeError", f"array dtype {arr.dtype} is not uint8, uint16 or float")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return _preprocess(Image.fromarray(np.ascontiguousarray(arr), mode=mode), preprocessing, "<array>", MAX_PIXELS)


def preprocess_pil(img: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """Orient, convert, resize and crop a decoded Pillow image (see the module docstring).

    Raises
    ------
    ImageDecodeError
        The image is empty, or resizing it would exceed :data:`MAX_PIXELS`.
    """
    return _preprocess(img, preprocessing, "<image>", MAX_PIXELS)


def _preprocess(img: Image.Image, preprocessing: Preprocessing, name: str, max_pixels: int) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    _check_resize(img.width, img.height, preprocessing, name, max_pixels)
    img = to_color_mode(img, preprocessing.color_mode)
    img = _resize(img, preprocessing)
    out = np.asarray(img, dtype=np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def to_color_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """Convert any Pillow mode to ``RGB`` or ``L`` by the documented rule."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(_scale_16bit(np.clip(arr, 0, 65535)), mode="L")
    elif mode == "F":
        img = Image.fromarray(_scale_float(np.asarray(img, dtype=np.float64)), mode="L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if color_mode == "L":
        return img if img.mode == "L" else img.convert("RGB").convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    return np.rint(arr / 257.0).astype(np.uint8)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    finite = arr[np.isfinite(arr)]
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        arr = arr * 255.0
    return np.rint(np.clip(arr, 0.0, 255.0)).astype(np.uint8)


def _target_size(width: int, height: int, preprocessing: Preprocessing) -> tuple[int, int]:
    """(width, height) after the resize step, following torchvision's rounding."""
    crop_h, crop_w = preprocessing.crop_size
    if preprocessing.resize_mode == "exact":
        return crop_w, crop_h
    size = int(preprocessing.resize_size)  # type: ignore[arg-type]
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _check_size(width: int, height: int, preprocessing: Preprocessing, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse, from the header's size alone, an image over ``max_pixels`` or whose resize would be.

    Raises
    ------
    ImageDecodeError
        With cause ``DecompressionBombError`` (``ValueError`` for an empty image).
    """
    if width * height > max_pixels:
        raise ImageDecodeError(name, "DecompressionBombError",
                               f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    _check_resize(width, height, preprocessing, name, max_pixels)


def _check_resize(width: int, height: int, preprocessing: Preprocessing, name: str, max_pixels: int) -> None:
    """Refuse empty images and resize targets over ``max_pixels`` (extreme aspect ratios)."""
    if width == 0 or height == 0:
        raise ImageDecodeError(name, "ValueError", f"image of size {width}x{height} is empty")
    target_w, target_h = _target_size(width, height, preprocessing)
    if target_w * target_h > max_pixels:
        raise ImageDecodeError(
            name,
            "DecompressionBombError",
            f"{width}x{height} would be resized to {target_w}x{target_h} = {target_w * target_h} pixels, "
            f"over the limit of {max_pixels}: its aspect ratio is too extreme",
        )


#: EXIF orientations (5..8) that swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _apply_draft(img: Image.Image, preprocessing: Preprocessing) -> None:
    # The target is defined on the image as displayed, after exif_transpose; the draft
    # works on the stored pixels, whose axes a 90-degree orientation swaps.
    transposed = img.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS
    shown_w, shown_h = (img.height, img.width) if transposed else (img.width, img.height)
    target_w, target_h = _target_size(shown_w, shown_h, preprocessing)
    if transposed:
        target_w, target_h = target_h, target_w
    if img.width >= 2 * target_w and img.height >= 2 * target_h:
        img.draft(img.mode, (math.ceil(target_w), math.ceil(target_h)))


def _resize(img: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    target = _target_size(img.width, img.height, preprocessing)
    if img.size != target:
        img = img.resize(target, _RESAMPLE[preprocessing.interpolation])
    if preprocessing.resize_mode == "exact":
        return img
    crop_h, crop_w = preprocessing.crop_size
    top, left = preprocessing.crop_origin(img.height, img.width)
    return img.crop((left, top, left + crop_w, top + crop_h))
