"""Heads written and packaged before packaging moved into :mod:`heads` still load and package into
files that predict as the old packager's did.

The fixture ``data/heads_v0`` was written by featurestore 65ab576 (``data/make_heads_v0.py``): a tiny
model, one head file per head and fusion, 12 decoded images, and the labels and probabilities each
head's packaged file gave on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heads import load_head, package_head

DATA = Path(__file__).parent / "data" / "heads_v0"
EXPECTED = json.loads((DATA / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_head_saved_before_packages_into_the_same_predictions(name, tmp_path):
    import onnxruntime as ort

    load_head(DATA / f"{name}.skops")
    package_head(DATA / "tiny.onnx", DATA / f"{name}.skops", tmp_path / "c.onnx")
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"images": np.load(DATA / "images.npy")})
    np.testing.assert_array_equal(label, EXPECTED[name]["label"])
    np.testing.assert_allclose(probabilities, EXPECTED[name]["probabilities"], atol=1e-6, rtol=0)
