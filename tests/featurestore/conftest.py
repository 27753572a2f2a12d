"""Fixtures for the store suites: a tiny exported model and small image folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "export"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A three-conv model exported at 32x32 with its stages and pre-logits (dims 8, 16, 32, 32)."""
    from export import export_backbone
    from tiny_models import tiny_net

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    export_backbone(tiny_net(), path, layers="stages,last", image_size=32)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_other(tmp_path_factory) -> Path:
    """The same architecture with other weights: a different model for the same store."""
    from export import export_backbone
    from tiny_models import tiny_net

    path = tmp_path_factory.mktemp("models") / "tiny_other.onnx"
    export_backbone(tiny_net(seed=1), path, layers="stages,last", image_size=32)
    return path
