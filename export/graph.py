"""The ``nn.Module`` that gets exported: uint8 NHWC in, normalised, pooled layers out."""

from __future__ import annotations

import torch
from torch import nn

from featurestore.spec import Preprocessing

from .errors import LayerSelectionError
from .layers import LayerChoice

__all__ = ["FeatureGraph", "pool"]

GEM_P = 3.0
GEM_EPS = 1e-6


def pool(x: torch.Tensor, pooling: str, layout: str = "NCHW", prefix_tokens: int = 0) -> torch.Tensor:
    """Pool a layer's output over space (maps) or tokens (``NLC``), keeping its channels.

    Channels-last maps are made channels-first first, so ``none`` gives ``(N, C, H, W)`` for
    every map; for tokens ``none`` gives ``(N, L, C)``.
    """
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    if layout == "NLC":
        patches = x[:, prefix_tokens:]
        if pooling == "cls":
            return x[:, 0]
        if pooling == "mean":
            return patches.mean(dim=1)
        if pooling == "cls+mean":
            return torch.cat([x[:, 0], patches.mean(dim=1)], dim=1)
        if pooling == "none":
            return x
        raise LayerSelectionError(f"unknown token pooling {pooling!r}")
    if pooling == "none" or x.dim() != 4:
        return x
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "max":
        return x.amax(dim=(2, 3))
    if pooling == "gem":
        return x.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
    if pooling == "avgmax":
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
    if pooling in ("grid2", "grid4"):
        return _grid(x, int(pooling[-1]))
    if pooling == "pyramid":
        return torch.cat([x.mean(dim=(2, 3)), _grid(x, 2), _grid(x, 4)], dim=1)
    raise LayerSelectionError(f"unknown pooling {pooling!r}")


def _grid(x: torch.Tensor, cells: int) -> torch.Tensor:
    """Average over a ``cells x cells`` grid (adaptive average pooling's bins), flattened channel-major.

    The bins are static slices (the map's size is fixed once the input size is), so the graph
    exports for any map size, including sizes the grid does not divide (7 x 7 into 4 x 4).
    """
    height, width = int(x.shape[2]), int(x.shape[3])
    means = []
    for i in range(cells):
        top, bottom = i * height // cells, -(-(i + 1) * height // cells)
        for j in range(cells):
            left, right = j * width // cells, -(-(j + 1) * width // cells)
            means.append(x[:, :, top:bottom, left:right].mean(dim=(2, 3)))
    return torch.stack(means, dim=2).flatten(1)


class FeatureGraph(nn.Module):
    """Wrap a backbone so that its graph takes uint8 NHWC images and returns pooled layers.

    Parameters
    ----------
    backbone : nn.Module
        The model; it is put in eval mode.
    choices : list of LayerChoice
        Layers to return, in order, with their pooling.
    preprocessing : Preprocessing
        Supplies ``mean`` and ``std``; the graph computes ``(x / 255 - mean) / std``.
    dtype : torch.dtype, default=torch.float32
        Compute dtype of the backbone (``torch.float16`` for half-precision models);
        input normalisation and the outputs stay float32.
    """

    def __init__(self, backbone: nn.Module, choices: list[LayerChoice], preprocessing: Preprocessing,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.choices = list(choices)
        self.compute_dtype = dtype
        channels = preprocessing.channels
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        x = (x / 255.0 - self.mean) / self.std
        captured: dict[tuple[str, str], torch.Tensor] = {}
        modules = dict(self.backbone.named_modules())
        wanted = list(dict.fromkeys((c.layer.module, c.layer.capture) for c in self.choices))
        head = ("", "pre_logits") in wanted  # timm's forward_head: run the model as features, then head
        handles = []
        for module_name, capture in wanted:
            if module_name == "" and (head or capture == "pre_logits"):
                continue
            def hook(module, args, output, key=(module_name, capture)):
                if key[1] == "input":
                    value = args[0]
                    captured[key] = value.mean(dim=(2, 3)) if value.dim() == 4 else value  # a conv classifier
                else:
                    captured[key] = output
            handles.append(modules[module_name].register_forward_hook(hook))
        try:
            x = x.to(self.compute_dtype)
            if head:
                features = self.backbone.forward_features(x)
                captured[("", "pre_logits")] = self.backbone.forward_head(features, pre_logits=True)
                if ("", "output") in wanted:
                    captured[("", "output")] = self.backbone.forward_head(features)
            else:
                self.backbone(x)
        finally:
            for handle in handles:
                handle.remove()
        return tuple(
            pool(captured[(c.layer.module, c.layer.capture)], c.pooling, c.layer.layout,
                 c.layer.prefix_tokens).to(torch.float32)
            for c in self.choices
        )
