"""Acceptance 3 of the export issue: onnxruntime outputs equal torch's pooled layer outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export import build_backbone, export_backbone
from featurestore.session import FeatureModel
from reference import assert_close_to_scale, reference_outputs
from tiny_models import tiny_net

BACKBONES = [
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet50",
    "efficientnet_b0", "convnext_tiny", "efficientnet_lite0",
]
SLOW = {"resnet50", "convnext_tiny", "efficientnet_b0", "mobilenet_v3_large"}
RTOL = 1e-4


def _images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BACKBONES])
def test_backbone_parity_last_and_stages(name, tmp_path):
    # Real ImageNet weights for MobileNetV2 (offline); seeded random init for the others.
    random_init = name != "mobilenet_v2"
    path = tmp_path / f"{name}.onnx"
    spec, _ = export_backbone(name, path, layers="last,stages", random_init=random_init)
    torch_model, _ = build_backbone(name, random_init=random_init)
    session = FeatureModel(path, device="cpu")
    for batch, seed in ((1, 0), (5, 1)):
        images = _images(batch, spec.preprocessing.crop_size[0], seed)
        got = session.run(images)
        want = reference_outputs(torch_model, spec, images)
        for layer in spec.layers:
            assert got[layer.output].shape == (batch, layer.dim)
            assert_close_to_scale(got[layer.output], want[layer.output], RTOL, f"{name} {layer.output} bs{batch}")


@pytest.mark.parametrize("pooling", ["avg", "max", "gem", "avgmax", "none"])
def test_every_pooling_matches_torch(pooling, tmp_path):
    model = tiny_net()
    spec, _ = export_backbone(model, tmp_path / "tiny.onnx", layers="features.1,features.4,last",
                              pooling=pooling, image_size=32)
    images = _images(3, 32, 7)
    got = FeatureModel(tmp_path / "tiny.onnx", device="cpu").run(images)
    want = reference_outputs(model, spec, images)
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output], RTOL, layer.output)
    block = spec.layer("features.4")
    assert block.pooling == pooling
    if pooling == "none":
        assert got[block.output].shape == (3, 16, 8, 8)
    else:
        assert got[block.output].shape == (3, block.dim)
        assert block.dim == (32 if pooling == "avgmax" else 16)


def test_stages_pick_last_block_of_each_stride(tmp_path):
    spec, _ = export_backbone(tiny_net(), tmp_path / "t.onnx", layers="stages", image_size=32)
    assert [(s.name, s.stride, s.channels) for s in spec.layers] == [
        ("features.1", 2, 8), ("features.4", 4, 16), ("features.6", 8, 32)]


def test_fp16_stays_within_documented_tolerance(tmp_path):
    spec32, _ = export_backbone("mobilenet_v2", tmp_path / "a.onnx", layers="stages")
    spec16, _ = export_backbone("mobilenet_v2", tmp_path / "b.onnx", layers="stages", precision="fp16")
    assert spec16.precision == "fp16"
    images = _images(2, 224, 3)
    a = FeatureModel(tmp_path / "a.onnx", device="cpu").run(images)
    b = FeatureModel(tmp_path / "b.onnx", device="cpu").run(images)
    for layer in spec32.layers:
        assert b[layer.output].dtype == np.float32
        # documented: fp16 features are within 2e-2 of the output's scale
        assert_close_to_scale(b[layer.output], a[layer.output], 2e-2, layer.output)


@pytest.mark.parametrize("size", [32, 16])
def test_grid_and_pyramid_poolings_match_adaptive_average_pooling(size, tmp_path):
    # At 32 px the maps are 16, 8 and 4 wide; at 16 px the last is 2 x 2, smaller than the 4 x 4 grid.
    model = tiny_net()
    spec, _ = export_backbone(model, tmp_path / "g.onnx", image_size=size,
                              layers="features.1:grid2,features.4:grid4,features.6:pyramid,features.6:grid4")
    assert [layer.dim for layer in spec.layers] == [8 * 4, 16 * 16, 32 * 21, 32 * 16]
    images = _images(3, size, 5)
    got = FeatureModel(tmp_path / "g.onnx", device="cpu").run(images)
    want = reference_outputs(model, spec, images)
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output], RTOL, layer.output)


def test_grid_pooling_of_a_map_the_grid_does_not_divide(tmp_path):
    from test_any_backbone_parity import randomize_norm_statistics
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = randomize_norm_statistics(resnet18(weights=None), seed=4)
    spec, _ = export_backbone(model, tmp_path / "r.onnx", layers="layer4:grid4,layer3:pyramid")  # 7 x 7, 14 x 14
    images = _images(2, 224, 6)
    got = FeatureModel(tmp_path / "r.onnx", device="cpu").run(images)
    want = reference_outputs(model, spec, images)
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output], RTOL, layer.output)
