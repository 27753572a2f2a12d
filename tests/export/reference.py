"""An independent torch reference for exported layers: hooks on the original model, pooled in torch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from featurestore.spec import ModelSpec


def _pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "none" or x.dim() == 2:
        return x
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "max":
        return x.amax(dim=(2, 3))
    if pooling == "gem":
        return x.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    if pooling == "avgmax":
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1)
    raise ValueError(pooling)


def reference_outputs(model: nn.Module, spec: ModelSpec, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) on uint8 NHWC ``images`` the textbook way; return each spec layer pooled."""
    model.eval()
    prep = spec.preprocessing
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    x = (x - mean) / std
    modules = dict(model.named_modules())
    last_linear = [name for name, m in modules.items() if isinstance(m, nn.Linear)][-1:] or [None]
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for layer in spec.layers:
        if layer.name == "logits":
            continue
        if layer.name == "pre_logits":
            handles.append(modules[last_linear[0]].register_forward_hook(
                lambda m, a, o, key=layer.output: captured.__setitem__(key, a[0])))
        else:
            handles.append(modules[layer.name].register_forward_hook(
                lambda m, a, o, key=layer.output: captured.__setitem__(key, o)))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    out = {}
    for layer in spec.layers:
        value = logits if layer.name == "logits" else captured[layer.output]
        out[layer.output] = _pool(value, layer.pooling).numpy()
    return out


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str = "") -> None:
    """max |actual - expected| <= rtol * max |expected| (error relative to the output's scale)."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) or 1.0
    err = float(np.abs(actual - expected).max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} x scale {scale:.3g}"
