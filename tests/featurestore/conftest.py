"""Fixtures for the store suites: a tiny exported model, small image folders, small real disks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
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


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, size)`` mounts a tmpfs of ``size`` at ``tmp_path / name`` (a real disk that
    fills up); unmounted afterwards. Mounting needs root, as in CI: elsewhere the test skips."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
