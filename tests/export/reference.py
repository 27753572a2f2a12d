"""An independent torch reference for exported layers: hooks on the original model, pooled in torch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from featurestore.spec import ModelSpec


def _pool(x: torch.Tensor, pooling: str, layout: str = "NCHW", prefix: int = 0) -> torch.Tensor:
    if layout == "NLC":  # tokens (N, L, C): class token, mean of the patch tokens, both, or all
        return {"cls": lambda: x[:, 0], "mean": lambda: x[:, prefix:].mean(1),
                "cls+mean": lambda: torch.cat([x[:, 0], x[:, prefix:].mean(1)], 1), "none": lambda: x}[pooling]()
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
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
    if pooling in ("grid2", "grid4", "pyramid"):
        sizes = {"grid2": (2,), "grid4": (4,), "pyramid": (1, 2, 4)}[pooling]
        return torch.cat([torch.nn.functional.adaptive_avg_pool2d(x, k).flatten(1) for k in sizes], 1)
    raise ValueError(pooling)


def classifier_name(model: nn.Module) -> str | None:
    """The model's own final classifier: timm's ``get_classifier()``, else its last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return next((name for name, m in modules.items() if m is head and isinstance(m, nn.Linear)), None)
    return ([name for name, m in modules.items() if isinstance(m, nn.Linear)] or [None])[-1]


def reference_outputs(model: nn.Module, spec: ModelSpec, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) on uint8 NHWC ``images`` the textbook way; return each spec layer pooled."""
    model.eval()
    prep = spec.preprocessing
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    x = (x - mean) / std
    modules = dict(model.named_modules())
    classifier = classifier_name(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for layer in spec.layers:
        if layer.name == "logits":
            continue
        if layer.name == "pre_logits" and classifier is None:  # no classifier: the model returns pre-logits
            continue
        if layer.name == "pre_logits":
            handles.append(modules[classifier].register_forward_hook(
                lambda m, a, o, key=layer.output: captured.__setitem__(key, a[0])))
        else:
            handles.append(modules[layer.name].register_forward_hook(
                lambda m, a, o, key=layer.output: captured.__setitem__(key, o)))
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # torch's fused attention differs from the exported math
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    for h in handles:
        h.remove()
    out = {}
    for layer in spec.layers:
        value = logits if layer.output not in captured else captured[layer.output]
        out[layer.output] = _pool(value, layer.pooling, layer.layout, layer.prefix_tokens).numpy()
    return out


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str = "") -> None:
    """max |actual - expected| <= rtol * max |expected| (error relative to the output's scale)."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) or 1.0
    err = float(np.abs(actual - expected).max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} x scale {scale:.3g}"
