"""Every torchvision classification model by name (``NAME`` or ``NAME:ENUM``), pretrained.

``NAME`` takes the model's ``DEFAULT`` weights, ``NAME:ENUM`` (``resnet50:IMAGENET1K_V2``)
another member of its weights enum. The preprocessing (resize, crop, interpolation, mean,
std) is read from that enum's transforms, the architecture is built with the arguments
those weights need (number of classes, ``transform_input``, image size) and the weights
file is torch.hub's checkpoint cache entry (``$TORCH_HOME/hub/checkpoints/FILE``),
downloaded by torch.hub's own client when missing and online, and read with
``weights_only=True``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from urllib.parse import urlparse

from torch import nn

from featurestore.spec import Preprocessing

from ._cache import torch_hub_cached_files, torch_hub_checkpoint
from .errors import UnknownBackboneError, close_matches_hint

__all__ = ["torchvision_names", "torchvision_preprocessing", "torchvision_build", "torchvision_classes",
           "torchvision_training_only", "torchvision_weights", "torchvision_checkpoint", "torchvision_rename",
           "split_tag", "torchvision_cached_names"]

#: DenseNet's published weights name ``norm.1`` what the modules call ``norm1`` (torchvision's
#: builder renames the keys the same way).
_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")

#: Models whose pretrained weights are used without their training-only auxiliary classifiers and
#: with ``transform_input`` on (torchvision's builders do the same when given weights), with the
#: key prefixes of those auxiliary heads.
_AUXILIARY = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def split_tag(name: str) -> tuple[str, str | None]:
    """``"resnet50:IMAGENET1K_V2"`` -> ``("resnet50", "IMAGENET1K_V2")``; no tag -> ``(name, None)``."""
    model, sep, tag = name.partition(":")
    return (model, tag) if sep else (name, None)


def torchvision_weights(name: str, tag: str | None = None):
    """The weights enum member ``tag`` of model ``name`` (its ``DEFAULT`` when None).

    Raises
    ------
    UnknownBackboneError
        ``tag`` is not a member of the model's weights enum (the members are listed).
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    if tag is None:
        return enum.DEFAULT
    members = [m.name for m in enum]
    if tag not in members:
        raise UnknownBackboneError(f"torchvision model {name!r} has no weights {tag!r}; "
                                   f"{close_matches_hint(tag, members)}")
    return enum[tag]


def torchvision_preprocessing(name: str, tag: str | None = None) -> Preprocessing:
    """What the weights expect (their ``transforms()``; the ``DEFAULT`` weights when ``tag`` is None)."""
    transform = torchvision_weights(name, tag).transforms()
    crop = int(transform.crop_size[0])
    return Preprocessing(crop_size=(crop, crop), resize_size=max(crop, int(transform.resize_size[0])),
                         interpolation=transform.interpolation.value, mean=tuple(transform.mean),
                         std=tuple(transform.std))


def torchvision_build(name: str, tag: str | None = None) -> nn.Module:
    """The architecture the weights ``tag`` (default: ``DEFAULT``) run in, with fresh weights.

    Nothing is downloaded. The number of classes is that of the weights' categories, ViTs take
    the weights' image size, and GoogLeNet and Inception-v3 are built as their pretrained weights
    run: without the auxiliary classifiers (used in training only) and with ``transform_input`` on.
    """
    from torchvision import models

    meta = torchvision_weights(name, tag).meta
    kwargs: dict = {}
    if meta.get("categories") is not None:
        kwargs["num_classes"] = len(meta["categories"])
    if name.startswith("vit_") and meta.get("min_size"):
        kwargs["image_size"] = int(meta["min_size"][0])
    if name in _AUXILIARY:
        kwargs.update(aux_logits=False, transform_input=True, init_weights=True)
    return models.get_model(name, weights=None, **kwargs)


def torchvision_training_only(name: str) -> tuple[str, ...]:
    """Key prefixes of the training-only auxiliary heads a weights file of ``name`` may hold (dropped)."""
    return _AUXILIARY.get(name, ())


def torchvision_rename(name: str):
    """The key renaming published weights of ``name`` need (DenseNet), or None."""
    if not name.startswith("densenet"):
        return None
    return lambda key: "".join(m.groups()) if (m := _DENSENET_KEY.match(key)) else key


def torchvision_classes(name: str, tag: str | None = None) -> tuple[str, ...] | None:
    """Class names of the weights (``meta["categories"]``), None when they have none."""
    categories = torchvision_weights(name, tag).meta.get("categories")
    return tuple(categories) if categories is not None else None


def torchvision_checkpoint(name: str, tag: str | None, offline: bool) -> tuple[str, str]:
    """The weights file of ``name:tag`` in torch.hub's checkpoint cache, and its source label.

    The file is ``torch.hub.get_dir()/checkpoints/`` + the basename of the weights' URL, as
    torchvision's own builders cache it. When it is missing and ``offline`` is false it is
    downloaded there by torch.hub's client (``torch.hub.download_url_to_file``, with its
    progress bar and the hash check of the file name's hash prefix).

    Raises
    ------
    WeightsNotCachedError
        Offline and the file is not cached.
    WeightsDownloadError
        Online and the download failed.
    """
    weights = torchvision_weights(name, tag)
    label = f"{name}:{weights.name}"
    return torch_hub_checkpoint(label, weights.url, offline), f"torchvision:{label}"


def torchvision_cached_names() -> list[str]:
    """``NAME:ENUM`` for every weights enum member whose file torch.hub's checkpoint cache holds."""
    from torchvision.models import get_model_weights

    files = torch_hub_cached_files()
    if not files:
        return []
    return [f"{name}:{weights.name}" for name in torchvision_names() for weights in get_model_weights(name)
            if os.path.basename(urlparse(weights.url).path) in files]
