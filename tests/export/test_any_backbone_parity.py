"""Every family exports with the right layers: ORT equals the torch model's own features.

Random weights with non-trivial normalisation statistics, batch 1 and 3, at ``last`` and
``stages``: each output within 1e-4 of its scale (1e-3 for transformers) of an independent
torch reference (hooks on the original model, pooled in torch by layout), and ``last`` is
exactly what the model's own classifier reads (timm's ``forward_head(..., pre_logits=True)``, the input
of a torchvision model's final Linear or, averaged over space, Conv classifier).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from export import export_backbone, get_backbone
from featurestore.session import FeatureModel
from reference import assert_close_to_scale, classifier_name, is_timm, reference_outputs

#: name -> (transformer, slow)
MODELS = {
    "resnet34": (False, False),
    "densenet121": (False, True),
    "regnet_y_400mf": (False, False),
    "efficientnet_v2_s": (False, True),
    "convnext_tiny": (False, True),
    "swin_t": (True, True),
    "vit_b_16": (True, True),
    "maxvit_t": (True, True),
    "shufflenet_v2_x0_5": (False, False),
    "mnasnet0_5": (False, False),
    "timm:vit_small_patch16_224": (True, True),
    "timm:deit_tiny_patch16_224": (True, False),
    "timm:swin_tiny_patch4_window7_224": (True, True),
    "timm:convnext_atto": (False, False),
    "timm:efficientnet_b0": (False, False),
    "timm:resnet18d": (False, False),
    "timm:regnetx_002": (False, False),
    "timm:mobilenetv3_small_100": (False, False),
    # `last` beyond a linear classifier's input: a convolution classifier, models built without their
    # auxiliary heads and with transform_input, timm's final norm / MLP head, CaiT's class-attention blocks
    "squeezenet1_1": (False, False),
    "googlenet": (False, False),
    "inception_v3": (False, False),
    "timm:efficientformerv2_s0": (True, True),
    "timm:convformer_s18": (False, True),
    "timm:cait_xxs24_224": (True, True),
}


def randomize_norm_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Seeded running statistics and affine parameters for every BatchNorm (eval mode then matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                if module.weight is not None:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def _images(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def check_parity(model: nn.Module, spec, path, rtol: float) -> None:
    session = FeatureModel(path, device="cpu")
    for batch, seed in ((1, 0), (3, 1)):
        images = _images(batch, spec.preprocessing.crop_size, seed)
        got = session.run(images)
        want = reference_outputs(model, spec, images)
        for layer in spec.layers:
            if layer.pooling != "none":
                assert got[layer.output].shape == (batch, layer.dim), layer.output
            assert_close_to_scale(got[layer.output], want[layer.output], rtol, f"{layer.output} bs{batch}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if slow else n
                                  for n, (_, slow) in MODELS.items()])
def test_ort_equals_torch_at_last_and_stages(name, tmp_path):
    transformer, _ = MODELS[name]
    entry = get_backbone(name)
    torch.manual_seed(0)
    model = randomize_norm_statistics(entry.build(), seed=1)
    path = tmp_path / "model.onnx"
    spec, _ = export_backbone(model, path, layers="last,stages", preprocessing=entry.preprocessing, name=name)
    stages = [layer for layer in spec.layers if layer.name != "pre_logits"]
    assert len(stages) >= 3, [layer.name for layer in spec.layers]
    assert len({layer.stride for layer in stages}) == len(stages) or all(s.layout == "NLC" for s in stages)
    # `last` is what the model's own classifier reads (checked by value in check_parity)
    assert spec.layers[0].name == "pre_logits"
    if not is_timm(model):
        classifier = dict(model.named_modules())[classifier_name(model)]
        assert spec.layers[0].dim == getattr(classifier, "in_features", getattr(classifier, "in_channels", None))
    check_parity(model, spec, path, 1e-3 if transformer else 1e-4)
