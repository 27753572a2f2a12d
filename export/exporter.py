"""`export_backbone`: a PyTorch backbone to an ONNX file that carries its own spec."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from torch import nn

from featurestore.utils import write_bytes_atomic
from featurestore import __version__
from featurestore.cpu import choose_precision, isa_flags
from featurestore.spec import POOLED_WIDTH, PRECISIONS, SPEC_KEY, LayerSpec, ModelSpec, Preprocessing, WeightsInfo

from ._cache import OFFLINE_ENV, is_offline
from .backbones import get_backbone
from .errors import CalibrationError, ExportOptionsError, WeightsRequiredError
from .graph import FeatureGraph
from .layers import LOGITS, LayerChoice, LayerInfo, no_attention_fast_path, select_layers, trace_layers
from .pixels import Pixels
from .quantize import DEFAULT_CALIBRATION_COUNT, draw_calibration, quantize_model
from .weights import RANDOM_INIT_SEED, file_sha256, load_weights_file, seeded, state_dict_sha256

__all__ = ["export_backbone", "build_backbone", "is_offline", "seeded", "PIXELS", "INPUT_NAME", "RANDOM_INIT_SEED",
           "OFFLINE_ENV"]

PIXELS = "pixels"
INPUT_NAME = "images"
MIN_OPSET = 17


def build_backbone(
    backbone: str | nn.Module,
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    offline: bool = False,
    image_size: int | None = None,
) -> tuple[nn.Module, WeightsInfo]:
    """Build (or take) a backbone and load its weights, never silently random.

    Without ``weights`` or ``random_init``, a named backbone takes its pretrained weights:
    those installed with a Python package, else the library's (torch.hub's checkpoint cache
    for torchvision, the Hugging Face Hub cache for timm), downloaded into that cache by the
    library's client unless offline.

    Parameters
    ----------
    backbone : str or nn.Module
        A registered name (see ``featurestore export --help``) or a module.
    weights : str or Path, optional
        A state_dict file (loaded with ``weights_only=True``, keys checked strictly).
    random_init : bool, default=False
        Keep the architecture's seeded random initialisation (recorded in the spec).
    offline : bool, default=False
        Use the caches only (also when ``FEATURESTORE_OFFLINE`` or ``HF_HUB_OFFLINE`` is set).
    image_size : int, optional
        Input size the pretrained model is created for (timm models that resample their
        position embeddings); None keeps the weights' own.

    Returns
    -------
    (nn.Module, WeightsInfo)

    Raises
    ------
    WeightsNotCachedError
        Offline and the pretrained weights are not cached.
    """
    if weights is not None and random_init:
        raise ExportOptionsError("pass either weights or random_init, not both")
    if isinstance(backbone, nn.Module):
        module = backbone
        if weights is not None:
            load_weights_file(module, weights)
            return module, WeightsInfo(f"file:{Path(weights).name}", file_sha256(weights), False)
        return module, WeightsInfo("random-init" if random_init else "module", state_dict_sha256(module), random_init)
    if backbone == PIXELS:
        return Pixels(), WeightsInfo("none", None, False)
    entry = get_backbone(backbone, is_offline(offline))
    if weights is None and not random_init and entry.offline_weights is None and entry.pretrained is not None:
        loaded = entry.pretrained(is_offline(offline), image_size)
        if loaded is not None:
            return loaded
    with seeded():
        module = (entry.build_at_size(image_size) if image_size is not None and entry.build_at_size is not None
                  else entry.build())
    if weights is not None:
        sha = load_weights_file(module, weights, entry.training_only)
        return module, WeightsInfo(f"file:{Path(weights).name}", sha, False)
    if random_init:
        return module, WeightsInfo("random-init", state_dict_sha256(module), True)
    if entry.offline_weights is None:
        raise WeightsRequiredError(
            f"backbone {backbone!r} has no pretrained weights; pass a state_dict with "
            f"--weights PATH, or --random-init for an untrained network"
        )
    path, source = entry.offline_weights()
    sha = load_weights_file(module, path, entry.training_only)
    return module, WeightsInfo(source, sha, False)


def _preprocessing(backbone: str | nn.Module, image_size: int | None, grayscale: bool,
                   preprocessing: Preprocessing | None, offline: bool = False) -> Preprocessing:
    if preprocessing is not None:
        return preprocessing
    if backbone == PIXELS:
        size = image_size or 32
        channels = 1 if grayscale else 3
        return Preprocessing(crop_size=(size, size), resize_mode="exact", interpolation="bilinear",
                             mean=(0.0,) * channels, std=(1.0,) * channels,
                             color_mode="L" if grayscale else "RGB")
    if grayscale:
        raise ExportOptionsError("--grayscale applies to the `pixels` backbone only (backbones take RGB)")
    base = get_backbone(backbone, offline).preprocessing if isinstance(backbone, str) else Preprocessing(
        crop_size=(224, 224), resize_size=256)
    if image_size is None:
        return base
    # an exact resize (squash) has no resize size; a shorter-side one keeps its ratio to the crop
    resize = None if base.resize_size is None else round(image_size * base.resize_size / base.crop_size[0])
    return Preprocessing(crop_size=(image_size, image_size), resize_size=resize,
                         resize_mode=base.resize_mode, interpolation=base.interpolation,
                         mean=base.mean, std=base.std, color_mode=base.color_mode, crop_offset=base.crop_offset)


def _layer_choices(module: nn.Module, backbone: str | nn.Module, prep: Preprocessing,
                   layers: str | list[str], pooling: str) -> list[LayerChoice]:
    if backbone == PIXELS:
        h, w = prep.crop_size
        return [LayerChoice(LayerInfo(PIXELS, "", "output", (prep.channels * h * w,), None, False, "NC"), "none")]
    infos = trace_layers(module, prep.crop_size, prep.channels)
    return select_layers(infos, layers, pooling)


def _layer_spec(choice: LayerChoice) -> LayerSpec:
    layer = choice.layer
    name = layer.name
    output = f"{name}.{choice.pooling}" if layer.is_map or layer.is_tokens else name
    dim = layer.channels * POOLED_WIDTH.get(choice.pooling, 1)
    return LayerSpec(name=name, output=output, channels=layer.channels, dim=dim, stride=layer.stride,
                     pooling=choice.pooling, layout=layer.layout, prefix_tokens=layer.prefix_tokens)


def export_backbone(
    backbone: str | nn.Module,
    output: str | Path | None = None,
    *,
    layers: str | list[str] = "last",
    pooling: str = "avg",
    weights: str | Path | None = None,
    random_init: bool = False,
    precision: str = "fp32",
    image_size: int | None = None,
    grayscale: bool = False,
    offline: bool = False,
    preprocessing: Preprocessing | None = None,
    name: str | None = None,
    opset: int = MIN_OPSET,
    calibrate: str | Path | None = None,
    calibrate_count: int = DEFAULT_CALIBRATION_COUNT,
    explain: Callable[[str], None] | None = None,
) -> tuple[ModelSpec, bytes]:
    """Export a backbone to ONNX with the chosen layers as named, pooled outputs.

    The graph takes ``uint8`` images of shape ``(batch, H, W, C)`` (dynamic batch) and
    does the cast, scaling, mean/std normalisation and layout change itself. The file's
    metadata carries the :class:`~featurestore.spec.ModelSpec`. Exporting twice with the
    same arguments gives byte-identical files.

    Parameters
    ----------
    backbone : str or nn.Module
        A registered backbone name, ``"pixels"``, or any ``nn.Module``.
    output : str or Path, optional
        Where to write the ``.onnx`` file (written atomically); None only returns the bytes.
    layers : str or list of str, default='last'
        Layer names and shorthands (``last``, ``stages``, ``all``, ``logits``), comma
        separated, each optionally ``NAME:POOL``.
    pooling : str, default='avg'
        Pooling inside the graph: of maps (``avg``, ``max``, ``gem``, ``avgmax``, ``grid2``,
        ``grid4``, ``pyramid``, ``none``) or of tokens (``cls``, ``mean``, ``cls+mean``, ``none``).
    weights : str or Path, optional
        A state_dict file to load.
    random_init : bool, default=False
        Export untrained weights (seeded); recorded in the spec.
    precision : {'fp32', 'fp16', 'int8', 'auto'}, default='fp32'
        ``fp16`` computes the backbone in half precision; ``int8`` quantises the fp32 graph
        with onnxruntime (:mod:`export.quantize`), calibrated on ``calibrate``; input and
        outputs stay uint8 and float32. ``auto`` quantises as ``int8`` does, then keeps the
        int8 model where this CPU has VNNI or AMX and its cosine to fp32 is at least 0.999 on
        every output, else the fp32 one (:func:`featurestore.cpu.choose_precision`).
    image_size : int, optional
        Override the input size (the resize size keeps its ratio to the crop).
    grayscale : bool, default=False
        For ``pixels`` only: one input channel.
    offline : bool, default=False
        Take pretrained weights from the library's cache only, never downloading (also when
        ``FEATURESTORE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).
    preprocessing : Preprocessing, optional
        Override the preprocessing entirely (required knowledge for custom modules
        whose weights expect something other than ImageNet's 256/224 and mean/std).
    name : str, optional
        Backbone name recorded in the spec (defaults to the registry name or class name).
    opset : int, default=17
        ONNX opset (17 or later).
    calibrate : str or Path, optional
        For ``int8`` (required there): the images to calibrate on, anything
        :func:`featurestore.sources.open_source` opens (a folder, ``fashion-mnist:train``, ...).
    calibrate_count : int, default=128
        Calibration images drawn from ``calibrate`` (seeded); more are held back for the cosine check.
    explain : callable, optional
        For ``auto``: called with the one-line reason for the precision chosen.

    Returns
    -------
    (ModelSpec, bytes)
        The embedded spec and the serialised model.

    Raises
    ------
    UnknownBackboneError, LayerNotFoundError, WeightsError, WeightsRequiredError, WeightsNotCachedError,
    ExportError, CalibrationError

    Examples
    --------
    >>> spec, _ = export_backbone("mobilenet_v2", "mnv2.onnx", layers="stages")  # doctest: +SKIP
    """
    if opset < MIN_OPSET:
        raise ExportOptionsError(f"opset {opset} is too old; use {MIN_OPSET} or later")
    if precision not in (*PRECISIONS, "auto"):
        raise ExportOptionsError(f"precision {precision!r} is not supported; choose {', '.join(PRECISIONS)} or auto")
    quantized = precision in ("int8", "auto")
    if quantized != (calibrate is not None):
        raise CalibrationError(f"--precision {precision} needs calibration images: pass --calibrate SOURCE (a folder "
                               "of your images, fashion-mnist:train, ...)" if calibrate is None else
                               "--calibrate applies to --precision int8 or auto only")
    prep = _preprocessing(backbone, image_size, grayscale, preprocessing, is_offline(offline))
    module, weights_info = build_backbone(backbone, weights=weights, random_init=random_init, offline=offline,
                                          image_size=image_size)
    module.eval()
    choices = _layer_choices(module, backbone, prep, layers, pooling)
    layer_specs = tuple(_layer_spec(c) for c in choices)
    backbone_name = name or (backbone if isinstance(backbone, str) else type(backbone).__name__)
    class_names = None
    if isinstance(backbone, str) and backbone != PIXELS and any(c.layer.name == LOGITS for c in choices):
        entry = get_backbone(backbone, is_offline(offline))
        class_names = entry.class_names() if entry.class_names else None
    spec = ModelSpec(
        backbone=backbone_name,
        weights=weights_info,
        layers=layer_specs,
        preprocessing=prep,
        input_name=INPUT_NAME,
        opset=opset,
        precision="fp32" if quantized else precision,  # type: ignore[arg-type]
        versions={"featurestore": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__},
        class_names=class_names,
    )
    dtype = torch.float16 if precision == "fp16" else torch.float32
    graph = FeatureGraph(module.to(dtype), choices, prep, dtype=dtype)
    data = _to_onnx(graph, spec)
    if quantized:  # the fp32 graph, quantised
        int8_spec, int8_data = quantize_model(data, spec, draw_calibration(calibrate, prep, calibrate_count))
        chosen, reason = choose_precision(isa_flags(), int8_spec.quantization.cosine) if precision == "auto" \
            else ("int8", "")
        if explain is not None and reason:
            explain(reason)
        if chosen == "int8":
            spec, data = int8_spec, int8_data
    if isinstance(backbone, nn.Module) and dtype != torch.float32:
        module.to(torch.float32)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(Path(output), data)
    return spec, data


def _to_onnx(graph: FeatureGraph, spec: ModelSpec) -> bytes:
    h, w, c = spec.input_shape
    dummy = torch.zeros(2, h, w, c, dtype=torch.uint8)
    outputs = [layer.output for layer in spec.layers]
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False) is deliberate: it is self-contained (no onnxscript),
    # fast, deterministic and writes one file; torch flags it as legacy.
    with torch.no_grad(), warnings.catch_warnings(), no_attention_fast_path():
        warnings.simplefilter("ignore", DeprecationWarning)
        # The input size is fixed in the graph (only the batch is dynamic, and the tests run other
        # batch sizes), so shapes read as Python numbers while tracing are constants by design; the
        # tracer's warnings about them would only reach the user's terminal as noise.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # A strided Slice (EfficientNet-Lite's padding) is left unfolded; the graph is still correct.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            graph, (dummy,), buffer,
            input_names=[spec.input_name], output_names=outputs,
            dynamic_axes={spec.input_name: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            opset_version=spec.opset, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.doc_string = f"featurestore export of {spec.backbone}"
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)
