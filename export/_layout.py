"""The layout, stride and prefix tokens of a module's output, read from its shape.

A 4-D output is a channels-first map ``(N, C, H, W)`` when its last two axes follow the
input's aspect, a channels-last map ``(N, H, W, C)`` (Swin, ConvNeXt blocks in timm) when
its middle two do; when both fit (``C == H == W``) the model's own ``output_fmt`` decides,
else channels-first. A 3-D output is a token sequence ``(N, L, C)`` whose patch grid is
the input divided by a patch size; the tokens before it (class, distillation, registers)
are the model's ``num_prefix_tokens`` when it says so, else what is left over; a sequence of
patch tokens alone also fits a model that declares prefix tokens (CaiT adds its class token
after its patch blocks).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["describe_output", "has_class_token", "is_global_pool", "MAX_PREFIX_TOKENS"]

#: At most this many tokens may precede the patch tokens (class + distillation + registers).
MAX_PREFIX_TOKENS = 16


def _follows(h: int, w: int, input_hw: tuple[int, int]) -> int | None:
    """The stride if an ``h x w`` grid is the input downsampled evenly, else None."""
    height, width = input_hw
    if not (0 < h <= height and 0 < w <= width):
        return None
    stride = max(1, round(height / h))
    return stride if max(1, round(width / w)) == stride else None


def _channels_last_hint(model: nn.Module, module: nn.Module) -> bool:
    return any(getattr(m, "output_fmt", None) in ("NHWC", "NLC") for m in (module, model))


def _prefix_tokens(model: nn.Module, length: int, input_hw: tuple[int, int]) -> tuple[int, int] | None:
    """(prefix tokens, patch size) for a sequence of ``length`` tokens, or None if none fits."""
    height, width = input_hw
    declared = getattr(model, "num_prefix_tokens", None)
    fits = []
    for patch in range(1, min(height, width) + 1):
        if height % patch or width % patch:
            continue
        prefix = length - (height // patch) * (width // patch)
        if 0 <= prefix <= MAX_PREFIX_TOKENS and (declared is None or prefix in (0, declared)):
            fits.append((prefix != declared, prefix, patch))
    return min(fits)[1:] if fits else None


def has_class_token(model: nn.Module, prefix_tokens: int) -> bool:
    """Whether the first prefix token is a class token: what the model says (timm's
    ``has_class_token`` or ``cls_token``), else whenever there is a prefix token."""
    if hasattr(model, "has_class_token"):
        return bool(model.has_class_token)
    if hasattr(model, "cls_token"):
        return model.cls_token is not None
    return prefix_tokens > 0


def describe_output(model: nn.Module, module: nn.Module, out: torch.Tensor,
                    input_hw: tuple[int, int]) -> tuple[str | None, int, int | None]:
    """(layout, prefix tokens, stride) of ``out``; layout None when it is none of the known ones."""
    shape = tuple(int(v) for v in out.shape[1:])
    if len(shape) == 1:
        return "NC", 0, None
    if len(shape) == 2:
        found = _prefix_tokens(model, shape[0], input_hw)
        return ("NLC", found[0], found[1]) if found else (None, 0, None)
    if len(shape) == 3:
        first = _follows(shape[1], shape[2], input_hw)
        last = _follows(shape[0], shape[1], input_hw)
        if first is not None and (last is None or not _channels_last_hint(model, module)):
            return "NCHW", 0, first
        if last is not None:
            return "NHWC", 0, last
    return None, 0, None


def is_global_pool(module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor, layout: str | None) -> bool:
    """A parameter-free module that pools a map larger than 1x1 down to 1x1 (its output is no stage)."""
    if layout not in ("NCHW", "NHWC") or inp is None or inp.dim() != 4 or any(True for _ in module.parameters()):
        return False
    axes = slice(2, 4) if layout == "NCHW" else slice(1, 3)
    return out.shape[axes].numel() == 1 and inp.shape[axes].numel() > 1
