"""Export PyTorch backbones to ONNX graphs whose named outputs are pooled layers.

The graph takes uint8 NHWC images and embeds its preprocessing and layer spec in the
model's metadata (see :mod:`featurestore.spec`).
"""

from featurestore.export_config import ExportConfig

from .backbones import BackboneEntry, fetch_weights, get_backbone, list_backbones, list_cached, register_backbone
from .errors import ExportError, LayerNotFoundError, UnknownBackboneError, WeightsError, WeightsRequiredError
from .exporter import PIXELS, build_backbone, export_backbone
from .layers import SHORTHANDS, LayerInfo, select_layers, trace_layers

__all__ = [
    "BackboneEntry",
    "ExportConfig",
    "ExportError",
    "LayerInfo",
    "LayerNotFoundError",
    "PIXELS",
    "SHORTHANDS",
    "UnknownBackboneError",
    "WeightsError",
    "WeightsRequiredError",
    "build_backbone",
    "export_backbone",
    "fetch_weights",
    "get_backbone",
    "list_backbones",
    "list_cached",
    "list_layers",
    "register_backbone",
    "select_layers",
    "trace_layers",
]


def list_layers(backbone: str, image_size: int | None = None) -> list[LayerInfo]:
    """List the selectable layers of a registered backbone (architecture only, no weights)."""
    entry = get_backbone(backbone)
    size = (image_size, image_size) if image_size else entry.preprocessing.crop_size
    module = entry.build_at_size(image_size) if image_size and entry.build_at_size is not None else entry.build()
    return trace_layers(module, size)
