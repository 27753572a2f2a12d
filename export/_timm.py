"""timm's image models (``timm:NAME``, ``timm:NAME.TAG``, ``timm:hf-hub:ORG/REPO``): architecture,
preprocessing, pretrained weights and stages from timm itself.

``timm:NAME`` takes timm's default tag, ``timm:NAME.TAG`` any tag ``timm.list_pretrained()``
lists, ``timm:hf-hub:ORG/REPO`` a model published on the Hugging Face Hub. Pretrained weights
are the tag's file in the Hugging Face Hub cache (``model.safetensors`` preferred, else
``pytorch_model.bin``, as timm looks for them; ``HF_HOME`` / ``HF_HUB_CACHE``), downloaded by
``huggingface_hub`` unless offline, and loaded by timm's own pretrained loader
(``timm.create_model(name, pretrained=True)``; a ``.bin`` file is read here with
``weights_only=True`` and handed to it as a state_dict) so that its checkpoint filters apply (position embeddings resampled to
``img_size``, for one). Tags published only by URL use torch.hub's checkpoint cache. The
preprocessing is the tag's ``pretrained_cfg`` (input size, ``crop_pct``, interpolation, mean,
std), the resize size being ``floor(input / crop_pct)`` as in timm's eval transform. Stages
are the modules of the model's own ``feature_info`` (see :mod:`export._stages`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from collections.abc import Iterator
from functools import lru_cache

from torch import nn

from featurestore.utils import file_sha256
from featurestore.spec import INTERPOLATIONS, Preprocessing, WeightsInfo

from ._cache import (HF_WEIGHTS_FILES, hf_cached_repos, hf_hub_cache, hf_hub_mode, hf_hub_weights, hf_snapshot_revision,
                     torch_hub_cached_files, torch_hub_checkpoint)
from .errors import WeightsDownloadError, WeightsNotCachedError
from .weights import read_state_dict

__all__ = ["TIMM_PREFIX", "HF_HUB_PREFIX", "timm_names", "timm_tags", "timm_preprocessing", "timm_build",
           "timm_classes", "timm_pretrained", "timm_weights_file", "hub_offline", "timm_cached_names"]

TIMM_PREFIX = "timm:"
HF_HUB_PREFIX = "hf-hub:"
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


@lru_cache(maxsize=1)
def timm_tags() -> frozenset[str]:
    """Every ``NAME.TAG`` timm has pretrained weights for (``timm.list_pretrained()``)."""
    with hub_offline():
        import timm

        return frozenset(timm.list_pretrained())


def _hf_config(name: str, offline: bool) -> tuple[dict, str, dict]:
    """(pretrained_cfg, architecture, model_args) of ``hf-hub:ORG/REPO`` from its cached (or,
    online, downloaded) ``config.json``."""
    from timm.models._hub import load_model_config_from_hf

    repo = name[len(HF_HUB_PREFIX):]
    try:
        with hf_hub_mode(offline):
            return load_model_config_from_hf(repo, cache_dir=hf_hub_cache())
    except Exception as exc:  # hub errors come in many types
        label = TIMM_PREFIX + name
        cache = hf_hub_cache()
        kind = WeightsNotCachedError if offline else WeightsDownloadError
        raise kind(f"{label}: config.json of Hugging Face repo {repo.partition('@')[0]} is not in the Hugging Face "
                   f"cache {cache}{' (offline)' if offline else ''} ({type(exc).__name__}); run `featurestore fetch "
                   f"{label}` on a connected machine and copy the cache's models--"
                   f"{repo.partition('@')[0].replace('/', '--')} into {cache}") from None


def _cfg(name: str, offline: bool = True) -> dict:
    if name.startswith(HF_HUB_PREFIX):
        return dict(_hf_config(name, offline)[0])
    with hub_offline():
        import timm

        return timm.models.get_pretrained_cfg(name).to_dict()


def timm_preprocessing(name: str, offline: bool = True) -> Preprocessing:
    """The eval preprocessing of the model's (or tag's) ``pretrained_cfg``."""
    cfg = _cfg(name, offline)
    _, height, width = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation") or "bilinear"
    return Preprocessing(
        crop_size=(height, width), resize_size=max(height, width, math.floor(min(height, width) / crop_pct)),
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic",
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def timm_build(name: str, image_size: int | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False)`` with the hub switched off (for ``hf-hub:``
    names, reading its cached ``config.json``); ``image_size`` is passed as ``img_size`` to the
    models that take it."""
    with hub_offline(), hf_hub_mode(True):
        return _create(name, image_size, pretrained=False, cache_dir=hf_hub_cache())


def _create(name: str, image_size: int | None, **kwargs) -> nn.Module:
    import timm

    if image_size is not None:
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError:  # a model without a fixed input size (convolutions) takes any
            pass
    return timm.create_model(name, **kwargs)


def timm_weights_file(name: str, offline: bool) -> tuple[str, str, str | None, dict] | None:
    """(path, label, tag, pretrained_cfg) of the tag's weights file in the cache (downloaded into
    it unless ``offline``), or None when timm has no pretrained weights for ``name``.

    Raises
    ------
    WeightsNotCachedError
        Offline and the file is not cached.
    WeightsDownloadError
        The download failed.
    """
    cfg = _cfg(name, offline)
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if name.startswith(HF_HUB_PREFIX):
        label, tag = TIMM_PREFIX + name, name
    else:
        arch = name.partition(".")[0]
        tag = cfg.get("tag")
        label = TIMM_PREFIX + (f"{arch}.{tag}" if tag else arch)
    if hub_id:
        filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_WEIGHTS_FILES
        return hf_hub_weights(label, hub_id, offline, filenames), label, tag, cfg
    if url:
        return torch_hub_checkpoint(label, url, offline), label, tag, cfg
    return None


def timm_pretrained(name: str, offline: bool, image_size: int | None) -> tuple[nn.Module, WeightsInfo] | None:
    """The model with its tag's pretrained weights, or None when timm has none for it.

    The weights file is found (or, unless ``offline``, downloaded) in the Hugging Face Hub
    cache, or torch.hub's for tags published by URL only, and handed to
    ``timm.create_model(name, pretrained=True)``; ``image_size`` is passed as ``img_size`` to
    the models that take it (timm resamples their position embeddings on load).

    Raises
    ------
    WeightsNotCachedError
        Offline and the file is not cached.
    WeightsDownloadError
        The download failed.
    """
    found = timm_weights_file(name, offline)
    if found is None:
        return None
    path, label, tag, cfg = found
    from .weights import seeded

    if path.endswith(".safetensors"):
        overlay = {"file": path, "source": "file"}
    else:  # read here with weights_only=True whatever timm's version does; timm still filters and loads it
        overlay = {"state_dict": read_state_dict(path), "source": "state_dict"}
    with hub_offline(), hf_hub_mode(True), seeded():
        module = _create(name, image_size, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=hf_hub_cache())
    return module, WeightsInfo(label, file_sha256(path), False, family="timm", tag=tag,
                               license=cfg.get("license"), revision=hf_snapshot_revision(path))


def timm_classes(name: str) -> tuple[str, ...] | None:
    """ImageNet-1k class names when the model's classifier has 1,000 classes (shipped with timm)."""
    if _cfg(name).get("num_classes") != 1000:
        return None
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_descriptions())


def timm_cached_names() -> list[str]:
    """``timm:NAME.TAG`` for every tag whose weights file the caches hold (the Hugging Face Hub's,
    or torch.hub's for tags published by URL), found as :func:`timm_weights_file` finds it offline."""
    from urllib.parse import urlparse

    repos, files = hf_cached_repos(), torch_hub_cached_files()
    if not repos and not files:
        return []
    names = []
    with hub_offline():
        import timm

        for tag in sorted(timm_tags()):
            cfg = timm.models.get_pretrained_cfg(tag)
            if cfg.hf_hub_id:
                if cfg.hf_hub_id.partition("@")[0] not in repos:
                    continue
            elif not cfg.url or os.path.basename(urlparse(cfg.url).path) not in files:
                continue
            try:
                timm_weights_file(tag, offline=True)
            except WeightsNotCachedError:
                continue
            names.append(TIMM_PREFIX + tag)
    return names
