"""Exceptions raised by :mod:`export`; each also subclasses the builtin callers expect."""

from __future__ import annotations

from featurestore.utils import close_matches_hint
from featurestore.errors import FeatureStoreError

__all__ = [
    "ExportError",
    "UnknownBackboneError",
    "LayerNotFoundError",
    "WeightsError",
    "WeightsRequiredError",
    "WeightsFileNotFoundError",
    "WeightsNotCachedError",
    "WeightsDownloadError",
    "LayerSelectionError",
    "ExportOptionsError",
    "RemoteCodeError",
    "MissingExtraError",
    "CalibrationError",
    "close_matches_hint",
]


class ExportError(FeatureStoreError):
    """Base class of export errors."""


class UnknownBackboneError(ExportError, KeyError):
    """The backbone name is not in the registry."""


class LayerNotFoundError(ExportError, KeyError):
    """A selected layer is not a module of the backbone."""


class WeightsError(ExportError, ValueError):
    """A weights file cannot be read or does not fit the backbone (missing/unexpected keys)."""


class WeightsRequiredError(ExportError, ValueError):
    """No weights were given for a backbone without offline weights, and random init was not asked for."""


class WeightsFileNotFoundError(ExportError, FileNotFoundError):
    """A weights file that was named does not exist."""


class WeightsNotCachedError(ExportError, FileNotFoundError):
    """Pretrained weights are wanted offline but are not in the library's cache (torch.hub's, the
    Hugging Face Hub's)."""


class WeightsDownloadError(ExportError, ConnectionError):
    """Pretrained weights are not cached and downloading them into the cache failed."""


class LayerSelectionError(ExportError, ValueError):
    """A layer selection that cannot be exported: no layers, an unknown pooling or one that does not
    fit the layer's layout, a shorthand the model has nothing for."""


class ExportOptionsError(ExportError, ValueError):
    """Export options that do not go together or are not supported (opset, precision, grayscale)."""


class RemoteCodeError(ExportError, ValueError):
    """A Hugging Face repo or folder needs code of its own (``auto_map``, an architecture transformers
    does not have): featurestore never sets ``trust_remote_code``, so it is refused."""


class MissingExtraError(ExportError, ImportError):
    """A backbone family needs an optional dependency that is not installed (``featurestore[hf]``,
    ``featurestore[clip]``)."""


class CalibrationError(ExportError, ValueError):
    """An int8 export without calibration images, or with a source that has too few decodable images."""
