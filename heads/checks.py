"""Does a saved head fit this model? The checks ``featurestore predict`` and ``package`` run first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurestore.utils import file_sha256

from .errors import HeadModelMismatchError

__all__ = ["check_head_model", "check_head_width"]


def check_head_model(model_path: Path, outputs: list[str], metadata: dict[str, Any], head: Path) -> None:
    """Refuse a head whose store was extracted with another model file, or that needs outputs it lacks.

    Parameters
    ----------
    model_path : Path
        The exported model (its sha256 must be the sidecar's ``model_sha256``).
    outputs : list of str
        The model's layer outputs.
    metadata : dict
        The head's sidecar.
    head : Path
        The head file, for messages.

    Raises
    ------
    HeadModelMismatchError
    """
    model_sha = file_sha256(model_path)
    if metadata.get("model_sha256") != model_sha:
        raise HeadModelMismatchError(
            f"head {head} was trained on a store of model {metadata.get('backbone')} "
            f"(sha256 {str(metadata.get('model_sha256'))[:12]}...), another model than {model_path} "
            f"(sha256 {model_sha[:12]}...); use the model the store was extracted with")
    layers = metadata.get("layers")
    if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers) \
            or (metadata.get("task_type") != "regression" and not isinstance(metadata.get("classes"), list)):
        raise HeadModelMismatchError(f"the sidecar of head {head} lacks its layers or classes (a list each); "
                                     "restore it or refit the head")
    missing = [name for name in layers if name not in outputs]
    if missing:
        raise HeadModelMismatchError(f"model {model_path} has no output(s) {', '.join(missing)} needed by {head}")


def check_head_width(estimator: Any, dims: list[int], metadata: dict[str, Any], head: Path, model_path: Path) -> None:
    """Refuse a head whose input is not the model's layers it names, laid side by side.

    Parameters
    ----------
    estimator : estimator
        The loaded head.
    dims : list of int
        The model's dimensions of the head's layers, in the sidecar's order.
    metadata : dict
        The head's sidecar.
    head, model_path : Path
        The head and model files, for messages.

    Raises
    ------
    HeadModelMismatchError
    """
    blocks = metadata.get("blocks")
    if blocks is not None and list(blocks) != list(dims):
        raise HeadModelMismatchError(f"head {head} was fitted on layers of {blocks} features; model {model_path} gives "
                                     f"{list(dims)} for its layers {', '.join(metadata['layers'])}")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and int(expected) != sum(dims):
        raise HeadModelMismatchError(f"head {head} takes {int(expected)} features; model {model_path}'s layers "
                                     f"{', '.join(metadata['layers'])} give {sum(dims)}: restore the head's sidecar "
                                     "or use the model and layers it was fitted on")
