from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featurestore import ArraySource, ExtractConfig, Preprocessing, extract


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """An 8 x 8 grey pixels model ``p.onnx``, a ``store`` of 60 images of 3 classes, 4 PNG files in ``pngs``."""
    from export import export_backbone

    root = tmp_path_factory.mktemp("pixels")
    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1.0,), color_mode="L")
    export_backbone("pixels", root / "p.onnx", preprocessing=prep)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    extract(root / "p.onnx", ArraySource(images, labels=[str(i % 3) for i in range(60)]), root / "store",
            ExtractConfig(device="cpu", progress=False))
    (root / "pngs").mkdir()
    for i in range(4):
        Image.fromarray(images[i]).save(root / "pngs" / f"{i}.png")
    return root
