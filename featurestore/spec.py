"""The model spec: the single source of truth that travels inside each exported ONNX file.

`export/` writes a :class:`ModelSpec` as versioned JSON into the ONNX model's
``metadata_props`` under the key :data:`SPEC_KEY`; everything downstream (decoding,
extraction, the store's fingerprint, heads) reads it back with :func:`read_spec`
instead of taking preprocessing or layer names as flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ModelNotFoundError, SpecError, UnsafeModelError

__all__ = [
    "SPEC_KEY",
    "SPEC_VERSION",
    "POOLINGS",
    "MAP_POOLINGS",
    "TOKEN_POOLINGS",
    "LAYOUTS",
    "POOLED_WIDTH",
    "INTERPOLATIONS",
    "CROP_OFFSETS",
    "PRECISIONS",
    "LayerSpec",
    "Preprocessing",
    "WeightsInfo",
    "Quantization",
    "ModelSpec",
    "read_spec",
    "check_external_data",
]

SPEC_KEY = "featurestore.spec"
SPEC_VERSION = 1
#: Poolings of a feature map (``NCHW`` or ``NHWC``): over its spatial axes, channels kept.
#: ``gridK`` averages over a K x K grid of cells (PyTorch's adaptive average pooling) and keeps
#: where things are; ``pyramid`` concatenates ``avg``, ``grid2`` and ``grid4`` (1 + 4 + 16 cells).
MAP_POOLINGS = ("avg", "max", "gem", "avgmax", "grid2", "grid4", "pyramid", "none")
#: Output width of each pooling, in multiples of the layer's channels.
POOLED_WIDTH = {"avgmax": 2, "cls+mean": 2, "grid2": 4, "grid4": 16, "pyramid": 21}
#: Poolings of a token sequence (``NLC``): the class token, the mean of the patch tokens (prefix
#: tokens left out), both concatenated (DINOv2's linear-evaluation features), or every token.
TOKEN_POOLINGS = ("cls", "mean", "cls+mean", "none")
POOLINGS = MAP_POOLINGS + TOKEN_POOLINGS[:-1]
#: Layouts of a layer's per-image output: a vector, a channels-first or channels-last map,
#: or a sequence of tokens.
LAYOUTS = ("NC", "NCHW", "NHWC", "NLC")
#: Compute precisions of an exported backbone (its inputs and outputs stay uint8 and float32).
#: ``int8`` is an fp32 export quantised with onnxruntime (its :class:`Quantization` says how).
PRECISIONS = ("fp32", "fp16", "int8")
#: How an ``int8`` model was quantised: ``static`` (QDQ, calibrated activations) or ``dynamic``
#: (activations quantised at run time; weights only are calibration-free).
QUANTIZATION_MODES = ("static", "dynamic")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RESIZE_MODES = ("shorter_side", "exact")
COLOR_MODES = ("RGB", "L")
#: How the centre crop's offset is computed from an odd margin: ``round`` as torchvision does
#: (``int(round(margin / 2))``, half to even), ``floor`` as transformers' image processors do.
CROP_OFFSETS = ("round", "floor")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


@dataclass(frozen=True)
class LayerSpec:
    """One named output of the exported graph.

    Parameters
    ----------
    name : str
        Layer name as the user selects it (a module name, ``pre_logits`` or ``logits``).
    output : str
        Name of the ONNX graph output that carries this layer.
    channels : int
        Channels of the layer before pooling.
    dim : int
        Width of the pooled output (channels times :data:`POOLED_WIDTH`: 2 for ``avgmax`` and
        ``cls+mean``, 4 for ``grid2``, 16 for ``grid4``, 21 for ``pyramid``). For
        ``pooling='none'`` this is ``channels`` and the output keeps its spatial axes (maps,
        as ``(C, H, W)``) or its tokens (``(L, C)``).
    stride : int or None
        Input pixels per output pixel (per token for a token layer); None for vectors.
    pooling : str
        One of :data:`MAP_POOLINGS` for maps, :data:`TOKEN_POOLINGS` for tokens; ``none``
        for layers that are already vectors.
    layout : str, optional
        One of :data:`LAYOUTS`: the layer's own layout inside the model (``NHWC`` for
        channels-last hierarchies such as Swin, ``NLC`` for transformer tokens). Default:
        ``NCHW`` when the layer has a stride, else ``NC`` (what specs without the field meant).
    prefix_tokens : int, default=0
        For ``NLC`` layers: tokens before the patch tokens (class, distillation, registers).
    """

    name: str
    output: str
    channels: int
    dim: int
    stride: int | None
    pooling: str
    layout: str | None = None
    prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if self.layout is None:
            object.__setattr__(self, "layout", "NC" if self.stride is None else "NCHW")
        _require(self.layout in LAYOUTS, f"layer {self.name!r}: layout {self.layout!r} not in {LAYOUTS}")
        allowed = TOKEN_POOLINGS if self.layout == "NLC" else MAP_POOLINGS
        _require(self.pooling in allowed, f"layer {self.name!r}: pooling {self.pooling!r} not in {allowed}")
        _require(self.channels > 0 and self.dim > 0, f"layer {self.name!r}: channels and dim must be positive")
        _require(self.prefix_tokens >= 0, f"layer {self.name!r}: prefix_tokens must be >= 0")


@dataclass(frozen=True)
class Preprocessing:
    """How the host turns an image file into the graph's uint8 input.

    The host only decodes, converts the colour mode, resizes and crops; scaling and
    mean/std normalisation happen inside the graph with :attr:`mean` and :attr:`std`.

    Parameters
    ----------
    crop_size : (int, int)
        (height, width) of the graph input.
    resize_size : int or None
        With ``resize_mode='shorter_side'``, the shorter side is resized to this many
        pixels before the centre crop. Ignored for ``exact``.
    resize_mode : {'shorter_side', 'exact'}
        ``exact`` resizes straight to ``crop_size`` (aspect ratio not kept).
    interpolation : {'nearest', 'bilinear', 'bicubic'}
        Pillow resampling filter (antialiased when shrinking).
    mean, std : tuple of float
        Per channel, on the 0..1 scale; the graph computes ``(x / 255 - mean) / std``.
    color_mode : {'RGB', 'L'}
        Channels the graph takes: 3 for RGB, 1 for grayscale.
    crop_offset : {'round', 'floor'}
        How the centre crop's top/left offset is computed from the margin (resized size minus
        crop size): ``round`` halves it and rounds as torchvision does (half to even, so a margin
        of 3 starts the crop at 2), ``floor`` halves it and rounds down as transformers' image
        processors do (a margin of 3 starts it at 1). Serialised only when not ``round``, so
        specs and stores written before it existed keep their bytes and fingerprints.
    """

    crop_size: tuple[int, int]
    resize_size: int | None = None
    resize_mode: str = "shorter_side"
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color_mode: str = "RGB"
    crop_offset: str = "round"

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        _require(len(self.crop_size) == 2 and min(self.crop_size) > 0, f"crop_size {self.crop_size} must be (h, w) > 0")
        _require(self.resize_mode in RESIZE_MODES, f"resize_mode {self.resize_mode!r} not in {RESIZE_MODES}")
        _require(self.interpolation in INTERPOLATIONS, f"interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        _require(self.color_mode in COLOR_MODES, f"color_mode {self.color_mode!r} not in {COLOR_MODES}")
        _require(self.crop_offset in CROP_OFFSETS, f"crop_offset {self.crop_offset!r} not in {CROP_OFFSETS}")
        _require(
            len(self.mean) == len(self.std) == self.channels,
            f"mean/std need {self.channels} values for color_mode {self.color_mode!r}",
        )
        _require(all(s > 0 for s in self.std), "std values must be positive")
        if self.resize_mode == "shorter_side":
            _require(
                self.resize_size is not None and self.resize_size >= max(self.crop_size),
                f"resize_size {self.resize_size} must be >= the crop size {self.crop_size}",
            )

    @property
    def channels(self) -> int:
        """Number of colour channels of the graph input."""
        return 3 if self.color_mode == "RGB" else 1

    def crop_origin(self, height: int, width: int) -> tuple[int, int]:
        """(top, left) of the centre crop in an image of ``height`` x ``width`` (after the resize).

        Parameters
        ----------
        height, width : int
            Size of the resized image, at least :attr:`crop_size`.

        Returns
        -------
        (int, int)
            Offsets by :attr:`crop_offset`'s rule: ``round`` (torchvision) or ``floor`` (transformers).
        """
        crop_h, crop_w = self.crop_size
        if self.crop_offset == "floor":
            return (height - crop_h) // 2, (width - crop_w) // 2
        return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))

    def to_dict(self) -> dict[str, Any]:
        """Field values, without ``crop_offset`` when it is the default (older specs keep their bytes)."""
        data = asdict(self)
        if data["crop_offset"] == "round":
            del data["crop_offset"]
        return data


@dataclass(frozen=True)
class WeightsInfo:
    """Where the backbone's weights came from.

    Parameters
    ----------
    source : str
        ``offline:<package>``, ``torchvision:<model>:<ENUM>``, ``timm:<model>.<tag>``,
        ``file:<name>``, ``module`` (an in-memory ``nn.Module``) or ``random-init``.
    sha256 : str or None
        Hash of the weights file, or of the state_dict's tensors for a module.
    random_init : bool
        True when the weights were not trained; never silent.
    family : str, optional
        Library the pretrained weights were named in (``torchvision``, ``timm``).
    tag : str, optional
        The weights' name in that library (torchvision's enum member, timm's tag or hub repo).
    license : str, optional
        The weights' license, where the library records one.
    revision : str, optional
        The commit of the Hugging Face repo snapshot the cache held the file in.
    """

    source: str
    sha256: str | None
    random_init: bool
    family: str | None = None
    tag: str | None = None
    license: str | None = None
    revision: str | None = None


_OPTIONAL_WEIGHTS_KEYS = ("family", "tag", "license", "revision")


@dataclass(frozen=True)
class Quantization:
    """How an ``int8`` model was quantised from its fp32 export, and what it cost.

    Parameters
    ----------
    mode : {'static', 'dynamic'}
        ``static``: QDQ with activation ranges calibrated on images; ``dynamic``: weights
        quantised ahead, activations at run time.
    op_types : tuple of str
        Op types the quantised graph computes in int8 (those with quantised inputs).
    calibration_sha256 : str
        sha256 over the calibration images' content keys (in draw order), their count, the
        seed and the method: equal for the same images drawn the same way.
    calibration_count : int
        Images the activation ranges were calibrated on (0 in ``dynamic`` mode, which needs none).
    held_back : int
        Further images of the same source, not used for calibration, that :attr:`cosine` is
        measured on.
    seed : int
        Seed of the draw.
    method : str
        Calibration method (``minmax``, ``percentile``, ``entropy``).
    float_nodes : tuple of str
        Kinds of node kept in float on purpose (``first_conv``, ``depthwise_conv``).
    cosine : dict
        Per output, the mean cosine similarity of the int8 model's features to the fp32 model's
        on the held-back images (rounded to 6 decimals).
    percentile : float, optional
        The ``percentile`` method's percentile of each activation's calibration histogram.
    bias_correction : bool
        Whether the quantised convolutions' biases were corrected for their weights' rounding.
    cpu_flags : tuple of str
        ISA extensions of the CPU that quantised the model and measured :attr:`cosine`
        (:func:`featurestore.cpu.isa_flags`; empty where unknown).
    """

    mode: str
    op_types: tuple[str, ...]
    calibration_sha256: str
    calibration_count: int
    held_back: int
    seed: int
    method: str
    float_nodes: tuple[str, ...] = ()
    cosine: dict[str, float] = field(default_factory=dict)
    percentile: float | None = None
    bias_correction: bool = False
    cpu_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "op_types", tuple(self.op_types))
        object.__setattr__(self, "cpu_flags", tuple(self.cpu_flags))
        object.__setattr__(self, "float_nodes", tuple(self.float_nodes))
        object.__setattr__(self, "cosine", {str(k): float(v) for k, v in dict(self.cosine).items()})
        _require(self.mode in QUANTIZATION_MODES, f"quantization mode {self.mode!r} not in {QUANTIZATION_MODES}")
        _require(self.calibration_count >= 0 and self.held_back >= 0, "quantization counts must be >= 0")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about an exported model.

    Read it from a file with :func:`read_spec`; ``ModelSpec.from_json(spec.to_json())``
    round-trips exactly.
    """

    backbone: str
    weights: WeightsInfo
    layers: tuple[LayerSpec, ...]
    preprocessing: Preprocessing
    input_name: str = "images"
    opset: int = 17
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    versions: dict[str, str] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    schema_version: int = SPEC_VERSION
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        _require(len(self.layers) > 0, "a model spec needs at least one layer")
        outputs = [layer.output for layer in self.layers]
        _require(len(set(outputs)) == len(outputs), f"duplicate output names in {outputs}")
        _require(self.precision in PRECISIONS, f"precision {self.precision!r} not in {PRECISIONS}")
        _require((self.precision == "int8") == (self.quantization is not None),
                 "an int8 spec needs its quantization record, and only an int8 spec has one")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image in the graph's uint8 NHWC input."""
        h, w = self.preprocessing.crop_size
        return (h, w, self.preprocessing.channels)

    def layer(self, name: str) -> LayerSpec:
        """Return the layer called ``name`` (layer name or output name)."""
        for layer in self.layers:
            if name in (layer.name, layer.output):
                return layer
        names = [layer.name for layer in self.layers]
        raise SpecError(f"layer {name!r} is not in model {self.backbone!r}; available: {', '.join(names)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists instead of tuples)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal specs give equal bytes."""
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        for key in _OPTIONAL_WEIGHTS_KEYS:  # absent rather than null: specs without them keep their bytes
            if data["weights"][key] is None:
                del data["weights"][key]
        if data["quantization"] is None:  # absent rather than null: fp32/fp16 specs keep their bytes
            del data["quantization"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        """Parse :meth:`to_json` output, refusing unknown schema versions."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"model spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        """Build a spec from :meth:`to_dict` output."""
        version = data.get("schema_version")
        if version != SPEC_VERSION:
            raise SpecError(
                f"model spec schema version {version!r} is not supported (this featurestore reads "
                f"version {SPEC_VERSION}); re-export the model with this version"
            )
        try:
            return cls(
                backbone=data["backbone"],
                weights=WeightsInfo(**data["weights"]),
                layers=tuple(LayerSpec(**layer) for layer in data["layers"]),
                preprocessing=Preprocessing(**data["preprocessing"]),
                input_name=data["input_name"],
                opset=data["opset"],
                precision=data["precision"],
                versions=dict(data["versions"]),
                class_names=tuple(data["class_names"]) if data.get("class_names") is not None else None,
                schema_version=version,
                quantization=Quantization(**data["quantization"]) if data.get("quantization") is not None else None,
            )
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"model spec is malformed: {exc}") from None


def read_spec(model: str | Path | Any) -> ModelSpec:
    """Read the :class:`ModelSpec` embedded in an exported ONNX model.

    Parameters
    ----------
    model : str, Path or onnx.ModelProto
        Path of an ONNX file written by ``featurestore export``, or a loaded model.

    Returns
    -------
    ModelSpec

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    SpecError
        The file is not an ONNX model, or carries no featurestore spec, or an unsupported version of it.
    UnsafeModelError
        The file's external data lies outside its folder (see :func:`check_external_data`).

    Examples
    --------
    >>> spec = read_spec("mobilenet_v2.onnx")  # doctest: +SKIP
    >>> [layer.name for layer in spec.layers]  # doctest: +SKIP
    ['pre_logits']
    """
    where = "model"
    if isinstance(model, (str, Path)):
        where = str(model)
        if not Path(model).is_file():
            raise ModelNotFoundError(f"ONNX model {where!r} does not exist")
        model_path = Path(model)
        model = _load_onnx(model_path)
        check_external_data(model, model_path)
    for prop in model.metadata_props:
        if prop.key == SPEC_KEY:
            return ModelSpec.from_json(prop.value)
    raise SpecError(
        f"{where} carries no featurestore spec (metadata key {SPEC_KEY!r}); "
        "export it with `featurestore export`"
    )


def _load_onnx(path: Path) -> Any:
    """``onnx.load`` of ``path`` without its external data; a file that is no ONNX model is a :class:`SpecError`."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, TypeError, RuntimeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not an ONNX model ({type(exc).__name__}); give the file "
                        "`featurestore export` wrote") from None


def _tensors(graph: Any) -> Any:
    """Every tensor of a graph: initializers (sparse ones too) and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Any:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _tensors(sub)


def check_external_data(model: Any, path: str | Path) -> None:
    """Refuse an ONNX file whose tensors keep their data outside the file's own folder.

    The folder is the one onnxruntime resolves locations against (the model path as given,
    made absolute; a model file that is a link is refused, since the two could differ). Each
    external-data ``location`` must be a relative path without ``..`` naming a regular file
    (not a link) inside that folder. Checked on the parsed graph (model-local functions
    included) before onnxruntime or anything else opens any of those files.

    Raises
    ------
    UnsafeModelError
    """
    tensors = [t for t in _tensors(model.graph)] + [t for f in model.functions for t in _node_tensors(f.node)]
    external = [t for t in tensors if t.data_location == 1]  # onnx.TensorProto.EXTERNAL
    if not external:
        return
    if Path(path).is_symlink():
        raise UnsafeModelError(f"ONNX file {path} is a link and keeps data in external files; refusing to load it "
                               "(give the real path)")
    folder = Path(path).absolute().parent
    for tensor in external:
        location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        target = folder / location
        if not location or Path(location).is_absolute() or ".." in Path(location).parts or target.is_symlink() \
                or not target.resolve().is_relative_to(folder.resolve()) or not target.is_file():
            raise UnsafeModelError(f"ONNX file {path} keeps tensor {tensor.name!r} in {location!r}, outside its "
                                   "folder, through a link or not in a regular file; refusing to load it")
