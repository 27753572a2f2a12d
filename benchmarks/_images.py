"""A folder of real photographs as JPEG files of realistic sizes, written once and cached.

The photos are scikit-image's bundled ones (a cat, coffee, an astronaut, a rocket, a galaxy
field, a stained tissue, a retina, a motorcycle). Each file is a different crop of one of them,
resized to one of the requested sizes (``500x375`` is a typical ImageNet/web photo,
``1600x1200`` a small camera photo), with a little sensor-like grain so that its entropy, and
so its decoding cost, is that of a photo rather than of a smooth upscale, saved at quality 90.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PHOTOS", "jpeg_folder", "parse_sizes"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle")
_GENERATOR_VERSION = 1
_QUALITY = 90
_GRAIN = 2.0


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"500x375,1600x1200"`` -> ``[(500, 375), (1600, 1200)]`` (width x height)."""
    sizes = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        if not (w.isdigit() and h.isdigit()) or int(w) < 1 or int(h) < 1:
            raise ValueError(f"image size {part!r} is not WIDTHxHEIGHT")
        sizes.append((int(w), int(h)))
    return sizes


def _photos() -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the extract benchmark needs scikit-image's bundled photos: "
                          "pip install scikit-image") from None
    out = []
    for name in PHOTOS:
        image = getattr(data, name)()
        out.append(image[0] if isinstance(image, tuple) else image)
    return out


def _one_image(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator):
    from PIL import Image

    width, height = size
    ph, pw = photo.shape[:2]
    # the largest box of the target aspect ratio inside the photo, scaled by 60-100%
    box_w = min(pw, ph * width / height) * rng.uniform(0.6, 1.0)
    box_h = box_w * height / width
    left, top = rng.uniform(0, pw - box_w), rng.uniform(0, ph - box_h)
    img = Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC, box=(left, top, left + box_w, top + box_h))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, _GRAIN, (height, width, 3)).astype(np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def jpeg_folder(cache_dir: Path, count: int, sizes: Sequence[tuple[int, int]],
                seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """A folder of ``count`` JPEG files, sizes taken in turn; cached under ``cache_dir``.

    Returns
    -------
    (Path, dict)
        The folder and a description (count, sizes, mean file size per size, quality).
    """
    params = {"count": count, "sizes": [list(s) for s in sizes], "seed": seed, "quality": _QUALITY,
              "grain": _GRAIN, "photos": list(PHOTOS), "version": _GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir / f"jpegs-{count}-{key}"
    info_file = folder.with_suffix(".json")
    if folder.is_dir() and info_file.is_file():
        return folder, json.loads(info_file.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    photos, rng = _photos(), np.random.default_rng(seed)
    nbytes: dict[str, list[int]] = {f"{w}x{h}": [] for w, h in sizes}
    for i in range(count):
        size = tuple(sizes[i % len(sizes)])
        path = tmp / f"img_{i:05d}.jpg"
        _one_image(photos[rng.integers(len(photos))], size, rng).save(path, quality=_QUALITY)
        nbytes[f"{size[0]}x{size[1]}"].append(path.stat().st_size)
    info = dict(params, mean_kib={k: round(float(np.mean(v)) / 1024, 1) for k, v in nbytes.items() if v})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    return folder, info
