"""OpenCLIP's image towers (``open_clip:ARCH/TAG``, ``open_clip:ARCH``): architecture,
preprocessing and pretrained weights from open_clip itself.

``open_clip:ARCH/TAG`` names any pair ``open_clip.list_pretrained()`` lists
(``open_clip:ViT-B-32/laion2b_s34b_b79k``); ``open_clip:ARCH`` takes the first tag open_clip lists
for the architecture (its original release, ``openai`` for the OpenAI architectures), or none
(``--random-init`` / ``--weights``) for an architecture without tags. Only the image tower is
built (``open_clip.model._build_vision_tower``, as ``CLIP`` builds it, with QuickGELU when the
tag was trained with it), so text towers never need building or downloading.

Layers: ``last`` (``pre_logits``) is what ``model.encode_image`` returns, the projected image
embedding that zero-shot logits read; ``pre_projection`` is the pooled features before the
projection (the same tensor for towers without one, as SigLIP's); the tower's blocks are token
layers (ViTs, pooled ``cls`` or ``mean``) or maps (ResNets, ConvNeXts). ModifiedResNet towers
(``RN50``...) project inside their attention pool and have no ``pre_projection``.

Preprocessing is the tag's pretrained cfg as ``open_clip.image_transform`` applies it at
evaluation: ``shortest`` resizes the shorter side to the input size and centre-crops it,
``squash`` resizes straight to the input size; mean, std and interpolation as the cfg says.
``longest`` (resize the longer side and pad) and non-square ``shortest`` sizes are refused.

Weights are the tag's file in the Hugging Face Hub cache (the ``.safetensors`` alternative
first, as open_clip's ``download_pretrained_from_hf`` looks for it), downloaded there by
``huggingface_hub`` unless offline; a tag published by URL only is open_clip's own cache entry
(``~/.cache/clip``, downloaded by ``open_clip.pretrained.download_pretrained_from_url``). The
file is read by :func:`export.weights.read_state_dict` (safetensors, or ``weights_only=True``;
open_clip's own reader falls back to a full unpickle on some errors), then converted as
``open_clip.load_checkpoint`` does (third-party layouts, position embeddings resampled to the
input size) and loaded strictly into the image tower.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import nn

from featurestore.utils import file_sha256
from featurestore.spec import Preprocessing, WeightsInfo

from ._cache import _fill, _one_line, hf_cached_repos, hf_hub_weights, hf_snapshot_revision
from .errors import (ExportOptionsError, MissingExtraError, UnknownBackboneError, WeightsDownloadError, WeightsError,
                     WeightsNotCachedError)
from .weights import read_state_dict

__all__ = ["OPEN_CLIP_PREFIX", "PRE_PROJECTION", "open_clip_names", "open_clip_split", "open_clip_preprocessing",
           "open_clip_build", "open_clip_training_only", "open_clip_pretrained", "open_clip_weights_file",
           "open_clip_cached_names", "OpenClipImageTower"]

OPEN_CLIP_PREFIX = "open_clip:"
PRE_PROJECTION = "pre_projection"
#: open_clip's cache folder for weights published by URL (``download_pretrained_from_url``'s default).
URL_CACHE = os.path.join("~", ".cache", "clip")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise MissingExtraError("OpenCLIP backbones need open_clip_torch, which is not installed: "
                                "pip install 'featurestore[clip]'") from None
    return open_clip


@lru_cache(maxsize=1)
def _pretrained() -> tuple[tuple[str, str], ...]:
    return tuple(_open_clip().list_pretrained())


@lru_cache(maxsize=1)
def open_clip_names() -> tuple[str, ...]:
    """Every name this family takes, without the prefix: ``ARCH`` for each architecture
    (``open_clip.list_models()``) and ``ARCH/TAG`` for each pretrained pair."""
    archs = tuple(_open_clip().list_models())
    return archs + tuple(f"{arch}/{tag}" for arch, tag in _pretrained())


def open_clip_split(name: str) -> tuple[str, str | None]:
    """``"ViT-B-32/openai"`` -> ``("ViT-B-32", "openai")``; a bare ``ARCH`` takes the first tag
    open_clip lists for it (None when it has none); tags are normalised as open_clip does.

    Raises
    ------
    UnknownBackboneError
        Not an architecture of open_clip, or not one of its tags (the tags are listed).
    """
    open_clip = _open_clip()
    arch, sep, tag = name.partition("/")
    if arch not in open_clip.list_models():
        from .errors import close_matches_hint

        raise UnknownBackboneError(f"unknown OpenCLIP architecture {arch!r}; "
                                   f"{close_matches_hint(arch, list(open_clip.list_models()))}")
    tags = [t for a, t in _pretrained() if a == arch]
    if not sep:
        return arch, (tags[0] if tags else None)
    clean = tag.lower().replace("-", "_")
    if clean not in tags:
        listed = ", ".join(tags) if tags else "none (use --random-init or --weights PATH)"
        raise UnknownBackboneError(f"OpenCLIP architecture {arch!r} has no pretrained tag {tag!r}; its tags: {listed}")
    return arch, clean


def _tag_cfg(arch: str, tag: str | None) -> dict:
    return dict(_open_clip().pretrained.get_pretrained_cfg(arch, tag)) if tag else {}


def _model_cfg(arch: str) -> dict:
    cfg = _open_clip().get_model_config(arch)
    if cfg is None:
        raise UnknownBackboneError(f"unknown OpenCLIP architecture {arch!r}")
    return cfg


def open_clip_preprocessing(arch: str, tag: str | None) -> Preprocessing:
    """The evaluation preprocessing ``open_clip.image_transform`` builds from the tag's cfg.

    Raises
    ------
    ExportOptionsError
        A resize the spec cannot express (``longest`` with padding, non-square ``shortest``).
    """
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), _tag_cfg(arch, tag))
    size = _model_cfg(arch)["vision_cfg"].get("image_size", cfg["size"])
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    label = OPEN_CLIP_PREFIX + (f"{arch}/{tag}" if tag else arch)
    mode = cfg["resize_mode"] or "shortest"
    interpolation = "bilinear" if cfg["interpolation"] == "bilinear" else "bicubic"  # open_clip: else bicubic
    if mode == "squash":
        return Preprocessing(crop_size=(height, width), resize_mode="exact", interpolation=interpolation,
                             mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    if mode == "shortest" and height == width:
        return Preprocessing(crop_size=(height, width), resize_size=height, interpolation=interpolation,
                             mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    raise ExportOptionsError(f"{label}: open_clip's {mode!r} resize of a {height}x{width} input cannot be expressed "
                             f"as a featurestore preprocessing; pass a Preprocessing to export_backbone")


class OpenClipImageTower(nn.Module):
    """An open_clip image tower whose output is ``encode_image``'s and whose ``pre_projection``
    module outputs the features the projection reads.

    Parameters
    ----------
    visual : nn.Module
        ``VisionTransformer``, ``TimmModel`` or ``ModifiedResNet`` of open_clip.
    """

    #: A model without classifier: its output is its pre-logits (``last``).
    num_classes = 0

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        kind = type(visual).__name__
        self.kind = kind
        if kind == "VisionTransformer":
            self.num_prefix_tokens, self.has_class_token = 1, True  # open_clip's ViTs always have one
        elif kind == "TimmModel":
            trunk = visual.trunk
            if getattr(trunk, "num_prefix_tokens", None) is not None:
                self.num_prefix_tokens = int(trunk.num_prefix_tokens)
            if hasattr(trunk, "has_class_token"):
                self.has_class_token = bool(trunk.has_class_token)
            elif hasattr(trunk, "cls_token"):
                self.has_class_token = trunk.cls_token is not None
            # the trunk's own classifier is the projection when open_clip adds none
            self.trunk_projects = len(visual.head) == 0 and trunk.num_classes > 0
        if kind != "ModifiedResNet":
            self.pre_projection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        if self.kind == "VisionTransformer":
            pooled, _ = visual._pool(visual.transformer(visual._embeds(x)))
            pooled = self.pre_projection(pooled)
            return pooled @ visual.proj if visual.proj is not None else pooled
        if self.kind == "TimmModel":
            trunk = visual.trunk
            if self.trunk_projects:
                features = self.pre_projection(trunk.forward_head(trunk.forward_features(x), pre_logits=True))
                return trunk.get_classifier()(features)
            return visual.head(self.pre_projection(trunk(x)))
        return visual(x)


def open_clip_build(arch: str, tag: str | None, image_size: int | None = None) -> OpenClipImageTower:
    """The image tower of ``arch`` as ``CLIP`` builds it (QuickGELU when the tag or architecture
    says so), untrained; ``image_size`` rebuilds a ViT's position embeddings for that size."""
    _open_clip()
    from open_clip.model import _build_vision_tower

    cfg = _model_cfg(arch)
    vision = dict(cfg["vision_cfg"])
    vision["timm_model_pretrained"] = False  # never download timm's own weights
    if image_size is not None and "timm_model_name" not in vision:
        vision["image_size"] = image_size
    quick_gelu = bool(cfg.get("quick_gelu")) or bool(_tag_cfg(arch, tag).get("quick_gelu"))
    visual = _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=quick_gelu)
    return OpenClipImageTower(visual).eval()


def open_clip_training_only(arch: str) -> tuple[str, ...]:
    """Key prefixes of an open_clip checkpoint outside the image tower (text tower, logit scale):
    a ``--weights`` file's keys under them are dropped."""
    return ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
            "logit_scale", "logit_bias", "attn_mask", "text.", "text_decoder.")


def _hf_files(hf_hub: str) -> tuple[str, tuple[str, ...]]:
    """(repo, filenames preferred first) of a tag's ``hf_hub`` entry, as open_clip's
    ``download_pretrained`` and ``download_pretrained_from_hf`` resolve it."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        safe = (HF_SAFE_WEIGHTS_NAME,)
    elif filename.endswith((".bin", ".pth")):
        safe = (filename[:-4] + ".safetensors",)
    else:
        safe = ()
    return repo, safe + (filename,)


def _url_file(label: str, url: str, offline: bool) -> str:
    open_clip = _open_clip()
    folder = os.path.expanduser(URL_CACHE)
    filename = os.path.basename(url)
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
        return path
    fill = _fill(label, f"~/.cache/clip/{filename} into {folder}")
    if offline:
        raise WeightsNotCachedError(f"{label}: weights file {filename} is not in open_clip's cache {folder} "
                                    f"(offline); {fill}")
    try:
        return open_clip.pretrained.download_pretrained_from_url(url, cache_dir=folder)
    except Exception as exc:  # network errors come in many types
        raise WeightsDownloadError(f"{label}: cannot download {url} into {folder} "
                                   f"({type(exc).__name__}: {_one_line(exc)}); {fill}") from None


def open_clip_weights_file(arch: str, tag: str | None, offline: bool) -> tuple[str, str] | None:
    """(path, label) of the tag's weights file in the cache (downloaded into it unless
    ``offline``), or None when ``arch`` has no pretrained tag.

    Raises
    ------
    WeightsNotCachedError
        Offline and the file is not cached.
    WeightsDownloadError
        The download failed.
    """
    if tag is None:
        return None
    cfg = _tag_cfg(arch, tag)
    label = f"{OPEN_CLIP_PREFIX}{arch}/{tag}"
    if cfg.get("hf_hub"):
        repo, filenames = _hf_files(cfg["hf_hub"])
        return hf_hub_weights(label, repo, offline, filenames), label
    if cfg.get("url"):
        return _url_file(label, cfg["url"], offline), label
    return None


def _load(tower: OpenClipImageTower, path: str) -> None:
    """Load a full open_clip checkpoint's image tower into ``tower``, converted as
    ``open_clip.load_checkpoint`` converts it; text-tower keys are not needed."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import resize_pos_embed

    if os.path.splitext(path)[1] in (".npz", ".npy"):
        raise WeightsError(f"weights file {path!r} is a numpy archive; only safetensors and torch state_dicts "
                           f"are read")
    state = read_state_dict(path)
    if state and next(iter(state)).startswith("module"):
        state = {k[7:]: v for k, v in state.items()}
    state = convert_state_dict(tower, state)
    resize_pos_embed(state, tower)
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    result = tower.visual.load_state_dict(visual, strict=False)
    problems = [f"{what}: {', '.join(keys[:10])}" + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "")
                for what, keys in (("missing keys", result.missing_keys), ("unexpected keys", result.unexpected_keys))
                if keys]
    if problems:
        raise WeightsError(f"weights file {path!r} does not fit the image tower: {'; '.join(problems)}")


def open_clip_pretrained(arch: str, tag: str | None, offline: bool,
                         image_size: int | None) -> tuple[nn.Module, WeightsInfo] | None:
    """The image tower with the tag's weights, or None when ``arch`` has no tag.

    Raises
    ------
    WeightsNotCachedError, WeightsDownloadError
        Offline and not cached, or the download failed.
    WeightsError
        The file cannot be read as tensors or does not fit.
    ExportOptionsError
        ``image_size`` for a ModifiedResNet tower (its attention pool's grid is fixed).
    """
    found = open_clip_weights_file(arch, tag, offline)
    if found is None:
        return None
    path, label = found
    from .weights import seeded

    native = _model_cfg(arch)["vision_cfg"].get("image_size")
    size = None if image_size in (None, native) else image_size
    with seeded():
        tower = open_clip_build(arch, tag, size)
    if size is not None and tower.kind == "ModifiedResNet":
        raise ExportOptionsError(f"{label}: a ModifiedResNet tower takes its native size {native} only "
                                 f"(its attention pool has a fixed grid); drop --image-size")
    try:
        _load(tower, path)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"weights file {path!r} does not fit the image tower of {label}: "
                           f"{str(exc).splitlines()[-1].strip()}") from None
    if size is not None and tower.kind == "TimmModel":
        tower.visual.set_input_size(size)  # after loading, as open_clip's force_image_size does
    return tower.eval(), WeightsInfo(label, file_sha256(path), False, family="open_clip", tag=tag,
                                     revision=hf_snapshot_revision(path))


def open_clip_cached_names() -> list[str]:
    """``open_clip:ARCH/TAG`` for each tag whose weights file the caches hold, found as
    :func:`open_clip_weights_file` finds it offline."""
    repos = hf_cached_repos()
    names = []
    for arch, tag in _pretrained():
        hf_hub = _tag_cfg(arch, tag).get("hf_hub")
        if hf_hub and os.path.split(hf_hub)[0] not in repos:
            continue
        try:
            open_clip_weights_file(arch, tag, offline=True)
        except WeightsNotCachedError:
            continue
        names.append(f"{OPEN_CLIP_PREFIX}{arch}/{tag}")
    return names

