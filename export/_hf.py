"""Hugging Face transformers vision models (``hf:ORG/REPO[@REVISION]``, ``hf:PATH``): architecture,
preprocessing and pretrained weights from transformers itself.

``hf:ORG/REPO`` is a Hub repo, its files (``config.json``, ``preprocessor_config.json``, the
model card and the weights: ``model.safetensors``, its sharded index, else
``pytorch_model.bin``) read from the Hugging Face Hub cache (``HF_HUB_CACHE`` / ``HF_HOME``) and
downloaded into it by ``huggingface_hub`` unless offline; ``@REVISION`` pins a branch, tag or
commit. ``hf:PATH`` is a folder written by ``save_pretrained``. Nothing a repo ships is run:
``trust_remote_code`` is never set and a config that needs code of its own (``auto_map``, or a
``model_type`` transformers does not know) is refused by name. Weights are read as tensors only
(:func:`export.weights.read_state_dict`) and handed to transformers' ``from_pretrained``, which
maps their keys; a weight the model needs that the file lacks is an error, never random.

The model is the vision network of the checkpoint: the ``*ForImageClassification`` model when
the config names one (``logits`` and ``pre_logits``, the classifier's input, as for any model),
the vision tower with its projection for CLIP (``CLIPVisionModelWithProjection``) and SigLIP
(``SiglipVisionModel``), else the base model. Layers keep transformers' module names (the
``K``-th block, ``encoder.layer.K`` / ``vision_model.encoder.layers.K`` / ``encoder.stages.K``,
is transformers' ``hidden_states[K + 1]``; Swin's stages, whose modules return tuples, are
``hidden_states.K``). A model without classifier has ``pre_logits`` = what its own head reads:
the final layer-normed class token for ViT and DINOv2 (``layernorm:cls+mean`` is what
``Dinov2ForImageClassification`` reads), ``pooler_output`` otherwise (the pooled features of
ConvNeXt, Swin, BEiT, ResNet; CLIP's and SigLIP's pooled output). CLIP and SigLIP also name
``pooler_output`` and ``image_embeds`` (``get_image_features``: CLIP's projection; SigLIP has
none, so it equals ``pooler_output``).

The preprocessing is the repo's image processor (``preprocessor_config.json`` as transformers
resolves it): resize (``size``: shortest edge, or height and width), centre crop
(``do_center_crop``, ``crop_size``; ConvNeXt's ``crop_pct``), ``resample``, and rescale plus
normalisation folded into the mean and std the graph applies.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from featurestore.utils import file_sha256
from featurestore.spec import Preprocessing, WeightsInfo

from ._cache import hf_hub_cache, hf_hub_mode, hf_hub_weights, hf_snapshot_revision
from .errors import (MissingExtraError, RemoteCodeError, UnknownBackboneError, WeightsDownloadError, WeightsError,
                     WeightsFileNotFoundError, WeightsNotCachedError)
from .weights import read_state_dict

__all__ = ["HF_PREFIX", "HFVisionModel", "hf_build", "hf_preprocessing", "hf_pretrained", "hf_classes",
           "hf_weights_file", "hf_cached_names"]

HF_PREFIX = "hf:"
CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
CARD = "README.md"
#: Weights files of a transformers checkpoint, preferred first (``from_pretrained`` prefers safetensors too).
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
#: Pillow resampling codes (``resample``) the host's resize has.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
#: Model types whose pooler is not what their classifier reads: that reads the layer-normed class token.
_CLASS_TOKEN_HEAD = ("vit", "deit", "vit_msn", "dinov2", "dinov2_with_registers")
_CLIP = ("clip", "clip_vision_model")
_SIGLIP = ("siglip", "siglip_vision_model")


def _transformers(label: str):
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(f"{label}: Hugging Face models need transformers; pip install 'featurestore[hf]'"
                                ) from None
    return transformers


@dataclass(frozen=True)
class _Source:
    """Where an ``hf:`` name's files are: a Hub repo (at a revision) or a ``save_pretrained`` folder."""

    label: str
    repo: str | None = None
    revision: str | None = None
    folder: str | None = None

    @property
    def cache_folder(self) -> str:
        return os.path.join(hf_hub_cache(), "models--" + str(self.repo).replace("/", "--"))


def _source(name: str) -> _Source:
    target = name[len(HF_PREFIX):]
    path = os.path.expanduser(target)
    if target and os.path.isdir(path):
        return _Source(name, folder=os.path.abspath(path))
    if _REPO_ID.match(target):
        repo, _, revision = target.partition("@")
        return _Source(name, repo=repo, revision=revision or None)
    raise UnknownBackboneError(f"{name!r} is neither a folder nor a Hugging Face repo id; use hf:ORG/REPO[@REVISION] "
                               f"or hf:PATH of a folder written by save_pretrained")


def _fill(src: _Source) -> str:
    return (f"run `featurestore fetch {src.label}` on a connected machine and copy the Hugging Face cache's "
            f"{os.path.basename(src.cache_folder)} into {hf_hub_cache()}")


def _file(src: _Source, filename: str, offline: bool, required: bool = True, optional: bool = False) -> str | None:
    """The path of ``filename``: in the folder, or in the Hub cache (downloaded into it unless
    ``offline``). None when not ``required`` and the folder or repo has no such file (the cache
    records a repo's missing files), or when ``optional`` and it cannot be had (offline, network).

    Raises
    ------
    WeightsFileNotFoundError, WeightsNotCachedError, WeightsDownloadError
        The file is not in the folder, not cached offline, or cannot be downloaded.
    """
    if src.folder is not None:
        path = os.path.join(src.folder, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise WeightsFileNotFoundError(f"{src.label}: folder {src.folder} has no {filename}; write it with "
                                           f"model.save_pretrained(folder)")
        return None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    cache = hf_hub_cache()
    found = try_to_load_from_cache(src.repo, filename, cache_dir=cache, revision=src.revision)
    if isinstance(found, str):
        return found
    if found is not None and not required:  # the cache records that the repo has no such file
        return None
    if offline:
        if optional:
            return None
        raise WeightsNotCachedError(f"{src.label}: {filename} of Hugging Face repo {src.repo} is not in the Hugging "
                                    f"Face cache {cache} (offline); {_fill(src)}")
    try:
        with hf_hub_mode(False):
            return hf_hub_download(src.repo, filename, revision=src.revision, cache_dir=cache)
    except EntryNotFoundError:
        if not required:
            return None
        raise WeightsDownloadError(f"{src.label}: Hugging Face repo {src.repo} has no {filename}") from None
    except Exception as exc:  # network and hub errors come in many types
        if optional:
            return None
        raise WeightsDownloadError(f"{src.label}: cannot download {filename} of Hugging Face repo {src.repo} into "
                                   f"{cache} ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                                   f"{_fill(src)}") from None


def _read_json(path: str, label: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{label}: cannot read {path} as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{label}: {path} holds a {type(data).__name__}, not a JSON object")
    return data


def _refuse_remote_code(src: _Source, path: str, data: dict, transformers) -> None:
    """Refuse a config that needs code of the repo's own (featurestore never sets ``trust_remote_code``)."""
    where = src.repo or src.folder
    if "auto_map" in data:
        raise RemoteCodeError(f"{src.label}: {path} maps its classes to code of the repo's own (auto_map); "
                              f"featurestore never runs a repository's code (trust_remote_code), so {where} "
                              f"cannot be exported")
    if os.path.basename(path) == CONFIG:
        model_type = data.get("model_type")
        if not model_type:
            raise RemoteCodeError(f"{src.label}: {path} has no model_type, so it is no transformers model "
                                  f"(a timm repo is named timm:hf-hub:{where})")
        if model_type not in transformers.models.auto.configuration_auto.CONFIG_MAPPING:
            raise RemoteCodeError(f"{src.label}: model_type {model_type!r} of {path} is not an architecture "
                                  f"transformers {transformers.__version__} has (its code would come from the repo, "
                                  f"and featurestore never sets trust_remote_code); {where} cannot be exported")


@contextmanager
def _quiet(transformers) -> Iterator[None]:
    """transformers' loading reports and progress bars off for the duration (restored afterwards)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _config(src: _Source, offline: bool):
    """``(config, config.json path)``; the config loaded by ``AutoConfig`` from the checked file's folder."""
    transformers = _transformers(src.label)
    path = _file(src, CONFIG, offline)
    _refuse_remote_code(src, path, _read_json(path, src.label), transformers)
    try:
        with hf_hub_mode(True), _quiet(transformers):
            config = transformers.AutoConfig.from_pretrained(os.path.dirname(path), trust_remote_code=False,
                                                             local_files_only=True)
    except Exception as exc:  # a config transformers cannot read comes in many types
        raise WeightsError(f"{src.label}: transformers cannot read {path} ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())})") from None
    return config, path


def _vision_config(config):
    """The config of the vision network to build and the class that builds it."""
    import transformers

    model_type = config.model_type
    architectures = tuple(getattr(config, "architectures", None) or ())
    if model_type in _CLIP:
        vision = config.vision_config if model_type == "clip" else config
        if model_type == "clip":
            vision.projection_dim = config.projection_dim
        with_projection = model_type == "clip" or "CLIPVisionModelWithProjection" in architectures
        return vision, (transformers.CLIPVisionModelWithProjection if with_projection else transformers.CLIPVisionModel)
    if model_type in _SIGLIP:
        return (config.vision_config if model_type == "siglip" else config), transformers.SiglipVisionModel
    classification = transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING
    if any(a.endswith("ForImageClassification") for a in architectures) and type(config) in classification:
        return config, classification[type(config)]
    if type(config) in transformers.MODEL_MAPPING:
        return config, transformers.MODEL_MAPPING[type(config)]
    return config, None


def _untraced(method):
    """``method`` run outside the ONNX tracer: its result (a position-embedding table resampled to
    the input size, a function of the weights and that size alone) enters the graph as a constant,
    computed by the model's own code, antialiased resampling included, which ONNX has no operator for."""
    def call(*args, **kwargs):
        state = torch._C._get_tracing_state()
        if state is None:
            return method(*args, **kwargs)
        torch._C._set_tracing_state(None)
        try:
            with torch.no_grad():
                return method(*args, **kwargs)
        finally:
            torch._C._set_tracing_state(state)
    return call


class _Tap(nn.Identity):
    """Names a tensor the model computes (its hook records it under the tap's name)."""


class HFVisionModel(nn.Module):
    """A transformers vision model that takes pixels and returns one tensor, so that hooks and the
    ONNX exporter see tensors: its logits when it has a classifier, else its ``pre_logits``.

    The model's own modules are this module's children under transformers' names (a block is
    ``encoder.layer.K`` as in the model itself); ``pooler_output`` and ``image_embeds`` (CLIP and
    SigLIP) and ``hidden_states.K`` (Swin's stages) are named outputs.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A vision model whose ``forward`` takes ``pixel_values``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "hf", model)  # its children are this module's, under their own names
        for name, child in model.named_children():
            self.add_module(name, child)
        config = model.config
        self.model_type = config.model_type
        self.classifier_model = "ForImageClassification" in type(model).__name__
        if not self.classifier_model:
            self.num_classes = 0  # the model returns its pre-logits (see export.layers)
        size = getattr(config, "image_size", None)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size) if isinstance(size, int) else None
        self.native_hw = size
        parameters = inspect.signature(model.forward).parameters
        self.interpolates = "interpolate_pos_encoding" in parameters
        self.named_outputs = self.model_type in _SIGLIP or hasattr(model, "visual_projection")
        if self.named_outputs:
            self.pooler_output = _Tap()
            self.image_embeds = _Tap()
        self.stages = "swin" in self.model_type or "donut" in self.model_type
        if self.stages:
            self.hidden_states = nn.ModuleList(_Tap() for _ in range(len(config.depths) + 1))
        for module in model.modules():
            if callable(getattr(module, "interpolate_pos_encoding", None)):
                module.interpolate_pos_encoding = _untraced(module.interpolate_pos_encoding)
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        self.has_class_token = self.model_type not in _SIGLIP
        self.num_prefix_tokens = int(self.has_class_token) + (self.model_type == "deit") + registers

    def train(self, mode: bool = True) -> HFVisionModel:
        super().train(mode)
        self.hf.training = mode
        return self

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.hf._apply(fn, recurse=False)  # the model's own parameters, if any, beside its children's
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # transformers' shape checks are constants of the traced graph
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return self._forward(pixel_values)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if self.interpolates:
            kwargs["interpolate_pos_encoding"] = self.native_hw is not None and \
                tuple(int(v) for v in pixel_values.shape[-2:]) != self.native_hw
        if self.stages:
            kwargs["output_hidden_states"] = True
        if self.model_type in _CLIP and hasattr(self.hf, "visual_projection"):
            out = self.hf.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
            pooled = self.pooler_output(out.pooler_output)
            self.image_embeds(self.hf.visual_projection(pooled))
            return pooled
        out = self.hf(pixel_values=pixel_values, return_dict=True, **kwargs)
        if self.stages:
            for tap, state in zip(self.hidden_states, out.reshaped_hidden_states):
                tap(state)
        if self.classifier_model:
            return out.logits
        if self.model_type in _CLASS_TOKEN_HEAD or getattr(out, "pooler_output", None) is None:
            pooled = out.last_hidden_state[:, 0] if self.has_class_token else out.last_hidden_state.mean(dim=1)
        else:
            pooled = out.pooler_output.flatten(1)
        if self.named_outputs:
            pooled = self.pooler_output(pooled)
            self.image_embeds(pooled)
        return pooled


def _model_class(src: _Source, config, path: str):
    vision, cls = _vision_config(config)
    if cls is None or "pixel_values" not in inspect.signature(cls.forward).parameters:
        raise UnknownBackboneError(f"{src.label}: {path} describes a {config.model_type} model, not a vision model "
                                   f"featurestore can export (no image classification or vision model in "
                                   f"transformers takes its config)")
    vision._attn_implementation = "eager"  # plain attention math: what the ONNX graph computes
    return vision, cls


def hf_build(name: str, offline: bool = True) -> HFVisionModel:
    """The architecture of ``name`` with freshly initialised weights (from its ``config.json`` alone)."""
    src = _source(name)
    config, path = _config(src, offline)
    vision, cls = _model_class(src, config, path)
    transformers = _transformers(name)
    with _quiet(transformers):
        model = cls._from_config(vision, dtype=torch.float32)
    return HFVisionModel(model.eval())


def _weights_paths(src: _Source, offline: bool) -> list[str]:
    if src.folder is not None:
        for filename in WEIGHTS_FILES:
            path = _file(src, filename, offline, required=False)
            if path is not None:
                break
        else:
            raise WeightsFileNotFoundError(f"{src.label}: folder {src.folder} has none of {', '.join(WEIGHTS_FILES)}; "
                                           f"write them with model.save_pretrained(folder)")
    else:
        path = hf_hub_weights(src.label, src.repo + (f"@{src.revision}" if src.revision else ""), offline,
                              WEIGHTS_FILES)
    if not path.endswith(".index.json"):
        return [path]
    shards = sorted(set(_read_json(path, src.label).get("weight_map", {}).values()))
    if not shards or not all(isinstance(s, str) and "/" not in s and "\\" not in s for s in shards):
        raise WeightsError(f"{src.label}: {path} names no weights shards")
    return [_file(src, shard, offline) for shard in shards]


def hf_weights_file(name: str, offline: bool) -> tuple[str, str]:
    """Fill the cache with everything ``name`` needs (config, image processor config, model card,
    weights); return ``(weights path, label)`` (the index of sharded weights)."""
    src = _source(name)
    _config(src, offline)
    _file(src, PROCESSOR, offline, required=False)
    _file(src, CARD, offline, required=False, optional=True)
    paths = _weights_paths(src, offline)
    return (paths[0] if len(paths) == 1 else os.path.join(os.path.dirname(paths[0]), WEIGHTS_FILES[1])), src.label


def _sha256(paths: list[str]) -> str:
    if len(paths) == 1:
        return file_sha256(paths[0])
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()


def _license(src: _Source, config: dict, offline: bool) -> str | None:
    """The license of the model card's front matter (``license:``), or the config's."""
    if isinstance(config.get("license"), str):
        return config["license"]
    card = _file(src, CARD, offline, required=False, optional=True)
    if card is None:
        return None
    with open(card, encoding="utf-8", errors="replace") as handle:
        text = handle.read(65536)
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    found = re.search(r"^license:\s*['\"]?([^'\"\n#]+?)['\"]?\s*$", front, re.MULTILINE)
    return found.group(1) if found else None


def hf_pretrained(name: str, offline: bool, image_size: int | None = None) -> tuple[HFVisionModel, WeightsInfo]:
    """The model with its pretrained weights, and their provenance (repo, the commit the cache
    holds, the weights file's sha256, the model card's license).

    The weights files are read as tensors only and handed to transformers' ``from_pretrained``
    (``state_dict=``) with the checked config; ``image_size`` needs nothing here (position
    embeddings are interpolated to the input by the model).

    Raises
    ------
    RemoteCodeError
        The config needs code of the repo's own.
    WeightsNotCachedError, WeightsDownloadError
        Offline and not cached, or the download failed.
    WeightsError
        A weight the model needs is not in the file, or has another shape.
    """
    src = _source(name)
    transformers = _transformers(name)
    config, path = _config(src, offline)
    vision, cls = _model_class(src, config, path)
    paths = _weights_paths(src, offline)
    state: dict = {}
    for weights in paths:
        state.update(read_state_dict(weights))
    from .weights import seeded

    try:
        with hf_hub_mode(True), _quiet(transformers), seeded():
            model, info = cls.from_pretrained(None, config=vision, state_dict=state, output_loading_info=True,
                                              dtype=torch.float32)
    except Exception as exc:  # transformers reports unloadable weights in many types
        raise WeightsError(f"{name}: transformers cannot load {paths[0]} into {cls.__name__} "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise WeightsError(f"{name}: weights file {paths[0]} does not fit {cls.__name__}: missing or mismatched "
                           f"keys: {shown}")
    revision = hf_snapshot_revision(path)
    tag = (f"{src.repo}@{revision}" if revision else src.repo) if src.repo else None
    info = WeightsInfo(name, _sha256(paths), False, family="hf", tag=tag,
                       license=_license(src, _read_json(path, name), offline))
    return HFVisionModel(model.eval()), info


def _processor(src: _Source, config, config_path: str, offline: bool):
    """The repo's image processor (its PIL backend, whose resizing is the host's), else the default
    one transformers has for the model type."""
    transformers = _transformers(src.label)
    path = _file(src, PROCESSOR, offline, required=False)
    with hf_hub_mode(True), _quiet(transformers):
        if path is not None:
            _refuse_remote_code(src, path, _read_json(path, src.label), transformers)
            try:
                return transformers.AutoImageProcessor.from_pretrained(
                    os.path.dirname(path), backend="pil", trust_remote_code=False, local_files_only=True)
            except Exception as exc:  # a config transformers cannot read comes in many types
                raise WeightsError(f"{src.label}: transformers cannot read {path} ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())})") from None
        names = transformers.models.auto.image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES
        for model_type in (config.model_type, getattr(getattr(config, "vision_config", None), "model_type", None)):
            entry = names.get(model_type) if model_type else None
            class_name = (entry.get("pil") or entry.get("torchvision")) if isinstance(entry, dict) else entry
            if class_name and hasattr(transformers, class_name):
                return getattr(transformers, class_name)()
    raise WeightsFileNotFoundError(f"{src.label}: {src.repo or src.folder} has no {PROCESSOR} and transformers has "
                                   f"no image processor for model type {config.model_type!r}")


def _get(value, key: str):
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def processor_preprocessing(processor) -> Preprocessing:
    """The :class:`Preprocessing` that does what ``processor`` (a transformers image processor) does.

    ``size`` with a shortest edge resizes the shorter side (ConvNeXt's ``crop_pct`` to
    ``int(edge / crop_pct)`` below 384, as its processor does), then crops ``crop_size`` (the
    edge when no crop is configured); ``size`` with height and width resizes to it exactly (a
    further crop to a smaller ``crop_size`` becomes a shorter-side resize to the size's shorter side,
    the same on square images). Rescale and normalisation are folded into mean and std.
    """
    size, crop = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    do_crop = bool(getattr(processor, "do_center_crop", False)) and crop is not None and _get(crop, "height")
    crop_hw = (int(_get(crop, "height")), int(_get(crop, "width"))) if do_crop else None
    edge = _get(size, "shortest_edge") if size is not None else None
    resample = getattr(processor, "resample", 2)
    interpolation = _RESAMPLE.get(int(getattr(resample, "value", resample) if resample is not None else 2), "bicubic")
    crop_pct = getattr(processor, "crop_pct", None)
    if edge:
        edge = int(edge)
        if crop_pct and type(processor).__name__.startswith("ConvNext"):
            prep = (dict(crop_size=(edge, edge), resize_size=int(edge / crop_pct)) if edge < 384
                    else dict(crop_size=(edge, edge), resize_mode="exact"))
        else:
            prep = dict(crop_size=crop_hw or (edge, edge), resize_size=max(edge, *(crop_hw or (edge,))))
    elif size is not None and _get(size, "height"):
        hw = (int(_get(size, "height")), int(_get(size, "width")))
        if crop_hw is not None and crop_hw != hw:
            prep = dict(crop_size=crop_hw, resize_size=max(min(hw), *crop_hw))
        else:
            prep = dict(crop_size=hw, resize_mode="exact")
    else:
        raise WeightsError(f"image processor {type(processor).__name__} has no size featurestore can follow "
                           f"(size={size!r})")
    channels = 3
    scale = float(getattr(processor, "rescale_factor", 1 / 255)) * 255.0 if getattr(processor, "do_rescale", True) \
        else 255.0
    if getattr(processor, "do_normalize", True):
        mean = _three(getattr(processor, "image_mean", None), 0.5)
        std = _three(getattr(processor, "image_std", None), 0.5)
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    # the processor computes (x * factor - mean) / std; the graph (x / 255 - mean') / std'
    if prep.get("resize_mode", "shorter_side") == "shorter_side":
        prep["crop_offset"] = "floor"  # transformers' centre crop floors an odd margin
    return Preprocessing(interpolation=interpolation, mean=tuple(m / scale for m in mean),
                         std=tuple(s / scale for s in std), **prep)


def _three(value, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * 3
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)


def hf_preprocessing(name: str, offline: bool = True) -> Preprocessing:
    """What the repo's (or folder's) image processor does, as a :class:`Preprocessing`."""
    src = _source(name)
    config, path = _config(src, offline)
    return processor_preprocessing(_processor(src, config, path, offline))


def hf_classes(name: str) -> tuple[str, ...] | None:
    """The classifier's class names (``id2label``) when the config names real ones."""
    src = _source(name)
    config, path = _config(src, True)
    _, cls = _vision_config(config)
    labels = getattr(config, "id2label", None) or {}
    if cls is None or "ForImageClassification" not in cls.__name__ or not labels:
        return None
    names = tuple(str(labels[i]) for i in sorted(labels))
    return None if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names


def hf_cached_names() -> list[str]:
    """``hf:ORG/REPO`` of every transformers model whose config and weights the Hugging Face cache
    holds (at the revision ``refs/main`` names, else any snapshot), sorted."""
    cache = hf_hub_cache()
    try:
        folders = sorted(os.listdir(cache))
    except OSError:
        return []
    names = []
    for folder in folders:
        if not folder.startswith("models--"):
            continue
        snapshots = os.path.join(cache, folder, "snapshots")
        try:
            revisions = sorted(os.listdir(snapshots))
        except OSError:
            continue
        for revision in revisions:
            snapshot = os.path.join(snapshots, revision)
            if not any(os.path.isfile(os.path.join(snapshot, f)) for f in WEIGHTS_FILES):
                continue
            try:
                with open(os.path.join(snapshot, CONFIG), encoding="utf-8") as handle:
                    config = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(config, dict) and isinstance(config.get("model_type"), str) and "auto_map" not in config:
                names.append(HF_PREFIX + folder[len("models--"):].replace("--", "/", 1))
                break
    return names
