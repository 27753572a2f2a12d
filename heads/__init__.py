"""Classical heads over stored features: a registry of scikit-learn estimators, fusion of
several layers, the ``bench`` grid with its report, safe saving of fitted heads, and packaging
a head with its backbone as one ONNX file (:func:`package_head`, through each class's converter).

``heads`` never imports torch at import time; only :class:`AttentionFusion` needs it, and
imports it when it is fitted or used.
"""

from .attention import AttentionFusion
from .bench import BenchConfig, run_bench
from .errors import HeadDataError, HeadError, HeadModelFileError, HeadParamError, UnknownHeadError
from .fit import fit_head
from .fusion import ConcatFusion
from .onnx import head_to_onnx
from .package import package_head
from .persist import UnsafeHeadError, load_head, save_head
from .registry import create_head, head_description, list_heads, method_used, param_grid, register_head

__all__ = [
    "AttentionFusion",
    "BenchConfig",
    "ConcatFusion",
    "HeadDataError",
    "HeadError",
    "HeadModelFileError",
    "HeadParamError",
    "UnknownHeadError",
    "UnsafeHeadError",
    "create_head",
    "fit_head",
    "head_description",
    "head_to_onnx",
    "list_heads",
    "load_head",
    "method_used",
    "package_head",
    "param_grid",
    "register_head",
    "run_bench",
    "save_head",
]
