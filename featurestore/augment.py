"""Augmented views: deterministic per (content key, view), so resumed runs reproduce them."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["AUGMENTATIONS", "augment_view", "check_augmentations"]

#: Available augmentations: horizontal flip (p = 0.5), random resized crop (60-100% of the
#: area, aspect 3/4..4/3), colour jitter (brightness and contrast in 0.8..1.2).
AUGMENTATIONS = ("hflip", "crop", "color")


def check_augmentations(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate augmentation names; return them as a tuple in canonical order."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        from .errors import OptionsError

        raise OptionsError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


def _rng(key: str, view: int) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{key}:{view}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def augment_view(image: np.ndarray, key: str, view: int, augmentations: tuple[str, ...]) -> np.ndarray:
    """Return view ``view`` (>= 1) of a preprocessed uint8 ``(H, W, C)`` image; same shape and dtype."""
    rng = _rng(key, view)
    height, width, channels = image.shape
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    if "crop" in augmentations:
        area = height * width * rng.uniform(0.6, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(round(min(width, np.sqrt(area * aspect))))
        h = int(round(min(height, np.sqrt(area / aspect))))
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        pil = pil.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if "hflip" in augmentations and rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if "color" in augmentations:
        pil = ImageEnhance.Brightness(pil).enhance(rng.uniform(0.8, 1.2))
        pil = ImageEnhance.Contrast(pil).enhance(rng.uniform(0.8, 1.2))
    out = np.asarray(pil, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out
