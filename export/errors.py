"""Exceptions raised by :mod:`export`; each also subclasses the builtin callers expect."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from featurestore.errors import FeatureStoreError

__all__ = [
    "ExportError",
    "UnknownBackboneError",
    "LayerNotFoundError",
    "WeightsError",
    "WeightsRequiredError",
    "WeightsFileNotFoundError",
    "LayerSelectionError",
    "ExportOptionsError",
    "close_matches_hint",
]


def close_matches_hint(name: str, valid: Iterable[str], limit: int = 5) -> str:
    """A "did you mean" phrase naming the closest valid names (or a few valid names)."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=limit, cutoff=0.5)
    if close:
        return "did you mean: " + ", ".join(close)
    shown = valid[: limit * 2]
    more = f" (and {len(valid) - len(shown)} more)" if len(valid) > len(shown) else ""
    return "valid names: " + ", ".join(shown) + more


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


class LayerSelectionError(ExportError, ValueError):
    """A layer selection that cannot be exported: no layers, an unknown pooling or one that does not
    fit the layer's layout, a shorthand the model has nothing for."""


class ExportOptionsError(ExportError, ValueError):
    """Export options that do not go together or are not supported (opset, precision, grayscale)."""
