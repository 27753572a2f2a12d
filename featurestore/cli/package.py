"""Where ``featurestore package`` used to live: the packager is library code now, in :mod:`heads.package`
(files) and :mod:`heads.onnx` (a fitted head to ONNX, through each class's converter).

These names stay importable from here for code written before the move.
"""

from __future__ import annotations

from typing import Any

from heads.onnx import head_to_onnx
from heads.package import CLASSES_KEY, HEAD_KEY, package_head

__all__ = ["CLASSES_KEY", "HEAD_KEY", "package_head"]


def _head_graph(estimator: Any, width: int, opset: int) -> Any:
    """:func:`heads.onnx.head_to_onnx`, under its former name."""
    return head_to_onnx(estimator, width, opset)
