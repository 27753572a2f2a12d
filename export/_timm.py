"""timm's image models (``timm:NAME``): architecture, preprocessing and stages from timm itself.

Models are created with ``pretrained=False`` while Hugging Face Hub access is switched off
(``HF_HUB_OFFLINE``), so nothing is downloaded; weights come from ``--weights FILE``
(``.pth`` or ``.safetensors``) or ``--random-init``. The preprocessing is the model's
``pretrained_cfg`` (input size, ``crop_pct``, interpolation, mean, std), the resize size
being ``floor(input / crop_pct)`` as in timm's eval transform. Stages are the modules of
the model's own ``feature_info`` (see :mod:`export._stages`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from collections.abc import Iterator
from functools import lru_cache

from torch import nn

from featurestore.spec import INTERPOLATIONS, Preprocessing

__all__ = ["TIMM_PREFIX", "timm_names", "timm_preprocessing", "timm_build", "timm_classes", "hub_offline"]

TIMM_PREFIX = "timm:"
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@contextmanager
def hub_offline() -> Iterator[None]:
    """Switch Hugging Face Hub access off for the duration (restored afterwards)."""
    before = {key: os.environ.get(key) for key in _OFFLINE}
    os.environ.update(_OFFLINE)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """timm's model names (``timm.list_models()``), without the ``timm:`` prefix."""
    with hub_offline():
        import timm

        return tuple(timm.list_models())


def _cfg(name: str) -> dict:
    with hub_offline():
        import timm

        return timm.models.get_pretrained_cfg(name).to_dict()


def timm_preprocessing(name: str) -> Preprocessing:
    """The eval preprocessing of the model's ``pretrained_cfg``."""
    cfg = _cfg(name)
    _, height, width = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation") or "bilinear"
    return Preprocessing(
        crop_size=(height, width), resize_size=max(height, width, math.floor(min(height, width) / crop_pct)),
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic",
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def timm_build(name: str) -> nn.Module:
    """``timm.create_model(name, pretrained=False)`` with the hub switched off."""
    with hub_offline():
        import timm

        return timm.create_model(name, pretrained=False)


def timm_classes(name: str) -> tuple[str, ...] | None:
    """ImageNet-1k class names when the model's classifier has 1,000 classes (shipped with timm)."""
    if _cfg(name).get("num_classes") != 1000:
        return None
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_descriptions())
