"""The configs of the commands that run a fitted head or a model's logits: ``fit``, ``predict``,
``package`` and ``classify``, one source of their flags as :class:`~featurestore.export_config.ExportConfig`,
:class:`~featurestore.extract.ExtractConfig` and :class:`~featurestore.bench_config.BenchConfig`
are of theirs (see :mod:`featurestore._config`).

They live in the core, like ``BenchConfig``, so that the command line knows the flags without
importing scikit-learn; :mod:`heads` runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._config import option
from .bench_config import KNOWN_FUSIONS
from .errors import OptionsError
from .session import DEVICES
from .spec import PRECISIONS

__all__ = ["ClassifyConfig", "FitConfig", "PackageConfig", "PredictConfig"]


@dataclass(frozen=True)
class FitConfig:
    """What ``featurestore fit`` fits (the keywords of :func:`heads.fit.fit_head`).

    Parameters
    ----------
    head : str
        Registered head name (``featurestore bench --heads all`` runs every one).
    layers : tuple of str, optional
        Layers, by output or layer name; default the store's last layer.
    fusion : str, default='concat'
        How several layers are fused (:data:`featurestore.bench_config.KNOWN_FUSIONS`).
    params : tuple of str, default=()
        Head parameters, ``KEY=VALUE`` each; a VALUE that is JSON is read as JSON (numbers,
        lists, ...), any other as a string (see :meth:`head_params`).
    search : bool, default=False
        A small grid search over the head's parameters.
    task : str, optional
        The store task to learn (default: the labels).

    Raises
    ------
    OptionsError
        A parameter without ``=``.
    """

    head: str = option("", "head name (see `featurestore bench --heads all`)", required=True)
    layers: tuple[str, ...] | None = option(None, "comma-separated layers (default: the store's last layer)",
                                            kind="list")
    fusion: str = option("concat", "how several layers are fused (concat standardises each feature; -l2 and "
                                   "-power normalise each layer's block instead)", choices=KNOWN_FUSIONS)
    params: tuple[str, ...] = option((), "head parameter KEY=VALUE (once per parameter)", kind="repeat",
                                     flag="--param")
    search: bool = option(False, "small grid search over the head's parameters", kind="switch")
    task: str | None = option(None, "the store task to learn (default: the labels); a regression task takes a "
                                    "regression head (ridge, svr, tree, forest, bayes, xgb, knn)")

    def __post_init__(self) -> None:
        bad = [text for text in self.params if "=" not in text]
        if bad:
            raise OptionsError(f"--param takes KEY=VALUE, got {bad[0]!r}")

    def head_params(self) -> dict[str, Any]:
        """``params`` as keywords of :func:`heads.create_head`: each VALUE read as JSON, else kept as text."""
        out = {}
        for text in self.params:
            key, _, value = text.partition("=")
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out


@dataclass(frozen=True)
class PredictConfig:
    """How ``featurestore predict`` runs the backbone (:func:`featurestore.cli.predict.predict_source`).

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}, default='auto'
    batch_size : int, default=32
        Images per onnxruntime call.
    """

    device: str = option("auto", "where the model runs (default auto: CUDA when present)", choices=DEVICES)
    batch_size: int = option(32, "images per onnxruntime call (default 32)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionsError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class PackageConfig:
    """How ``featurestore package`` builds its classifier (:func:`heads.package.package_head`).

    Parameters
    ----------
    precision : {'fp32', 'fp16'}, default='fp32'
        fp16: the backbone computes in half precision (fusion and head stay float32).
    """

    precision: str = option("fp32", "fp16: the backbone computes in half precision (fusion and head stay float32)",
                            choices=tuple(p for p in PRECISIONS if p != "int8"))


@dataclass(frozen=True)
class ClassifyConfig:
    """What ``featurestore classify`` shows.

    Parameters
    ----------
    top : int, default=5
        Classes shown per image.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
    """

    top: int = option(5, "classes to show per image (default 5)")
    device: str = option("auto", "where the model runs (default auto: CUDA when present)", choices=DEVICES)
