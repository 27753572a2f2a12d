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


def is_timm(model: nn.Module) -> bool:
    """A timm model: its classifier reads ``forward_head(forward_features(x), pre_logits=True)``."""
    return type(model).__module__.startswith("timm.") and hasattr(model, "forward_head")


def classifier_name(model: nn.Module) -> str | None:
    """The model's own final classifier: timm's ``get_classifier()``, else its last ``nn.Linear`` (its last
    ``nn.Conv2d`` when it has no linear layer, as SqueezeNet)."""
    modules = dict(model.named_modules())
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return next((name for name, m in modules.items() if m is head and isinstance(m, nn.Linear)), None)
    for kind in (nn.Linear, nn.Conv2d):
        found = [name for name, m in modules.items() if isinstance(m, kind)]
        if found:
            return found[-1]
    return None


def classifier_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the model's own classifier reads for (normalised) ``x``: timm's pre-logits, else the input of
    the final classifier layer as that layer sees it (a map averaged over space, as the logits are)."""
    with torch.no_grad():
        if is_timm(model):
            return model.forward_head(model.forward_features(x), pre_logits=True)
        captured = []
        handle = dict(model.named_modules())[classifier_name(model)].register_forward_hook(
            lambda m, a, o: captured.append(a[0]))
        try:
            model(x)
        finally:
            handle.remove()
    value = captured[-1]
    return value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)


def normalise(images: np.ndarray, prep) -> torch.Tensor:
    """uint8 NHWC images as the model's float NCHW input."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(prep.mean).view(1, -1, 1, 1)) / torch.tensor(prep.std).view(1, -1, 1, 1)


def reference_outputs(model: nn.Module, spec: ModelSpec, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) on uint8 NHWC ``images`` the textbook way; return each spec layer pooled."""
    model.eval()
    x = normalise(images, spec.preprocessing)
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for layer in spec.layers:
        if layer.name in ("logits", "pre_logits"):
            continue
        handles.append(modules[layer.name].register_forward_hook(
            lambda m, a, o, key=layer.output: captured.__setitem__(key, o)))
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # torch's fused attention differs from the exported math
    try:
        with torch.no_grad():
            logits = model(x)
        for h in handles:
            h.remove()
        if any(layer.name == "pre_logits" for layer in spec.layers):
            # a model without classifier returns its pre-logits
            captured["pre_logits"] = logits if getattr(model, "num_classes", None) == 0 else classifier_input(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
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
