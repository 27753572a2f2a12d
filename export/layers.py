"""Discover a backbone's selectable layers and resolve a user's layer selection.

A dry forward pass with hooks records every module's output shape, from which the
channels and stride of each layer follow. Names:

- any module name (``features.18``, ``layer3.1``) whose output is ``(N, C, H, W)`` or ``(N, C)``;
- ``pre_logits``: the input of the final ``nn.Linear`` classifier (the penultimate features);
- ``logits``: the model's own output.

Shorthands: ``last`` (``pre_logits``, or the last block pooled when the model has no
linear classifier), ``stages`` (the last block before each change of stride, like timm's
``feature_info``), ``all`` (every block) and ``logits``.

A *block* is an element of an ``nn.Sequential`` or ``nn.ModuleList`` (its name ends in an
index) with a 4-D output; plain ``nn.Sequential`` elements whose children are all indexed
are opened up into their own elements instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from featurestore.spec import POOLINGS

from .errors import ExportError, LayerNotFoundError, close_matches_hint

__all__ = ["LayerInfo", "SHORTHANDS", "trace_layers", "select_layers", "LayerChoice"]

SHORTHANDS = ("last", "stages", "all", "logits")
PRE_LOGITS = "pre_logits"
LOGITS = "logits"


@dataclass(frozen=True)
class LayerInfo:
    """One selectable layer.

    Parameters
    ----------
    name : str
        Module name, ``pre_logits`` or ``logits``.
    module : str
        The module whose output (or, for ``pre_logits``, input) it is; ``""`` is the model.
    capture : {'output', 'input'}
        Whether the hook takes the module's output or its first input.
    shape : tuple of int
        Per-sample shape: ``(C, H, W)`` or ``(C,)``.
    stride : int or None
        Input pixels per output pixel along the height; None for vectors.
    is_block : bool
        Whether the layer is a block (listed by ``all``).
    """

    name: str
    module: str
    capture: str
    shape: tuple[int, ...]
    stride: int | None
    is_block: bool

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def is_map(self) -> bool:
        return len(self.shape) == 3


@dataclass(frozen=True)
class LayerChoice:
    """A resolved selection entry: a layer and its pooling."""

    layer: LayerInfo
    pooling: str


def trace_layers(model: nn.Module, input_hw: tuple[int, int], in_channels: int = 3) -> list[LayerInfo]:
    """Run one dry forward pass and list the model's selectable layers in execution order.

    Parameters
    ----------
    model : nn.Module
        The backbone (put in eval mode by this call).
    input_hw : (int, int)
        Input height and width.
    in_channels : int, default=3
        Channels of the input.
    """
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    classifier_inputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                if name not in outputs:
                    order.append(name)
                outputs[name] = output
                if isinstance(module, nn.Linear) and args and isinstance(args[0], torch.Tensor):
                    classifier_inputs[name] = args[0]
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            result = model(torch.zeros(1, in_channels, *input_hw))
    finally:
        for handle in handles:
            handle.remove()

    height = input_hw[0]

    def info(name: str, module: str, capture: str, tensor: torch.Tensor, is_block: bool) -> LayerInfo:
        shape = tuple(int(v) for v in tensor.shape[1:])
        stride = max(1, round(height / shape[1])) if len(shape) == 3 else None
        return LayerInfo(name, module, capture, shape, stride, is_block)

    blocks = set(_block_names(model, "", outputs))
    layers = [
        info(name, name, "output", outputs[name], name in blocks)
        for name in order
        if outputs[name].dim() in (2, 4)
    ]
    if isinstance(result, torch.Tensor) and result.dim() == 2:
        final = [n for n in order if outputs[n] is result and n in classifier_inputs]
        if final and classifier_inputs[final[-1]].dim() == 2:
            layers.append(info(PRE_LOGITS, final[-1], "input", classifier_inputs[final[-1]], False))
        layers.append(info(LOGITS, "", "output", result, False))
    return layers


def _block_names(module: nn.Module, prefix: str, outputs: dict[str, torch.Tensor]) -> list[str]:
    names: list[str] = []
    for child_name, child in module.named_children():
        full = prefix + child_name
        is_indexed = child_name.isdigit()
        expandable = type(child) in (nn.Sequential, nn.ModuleList) and all(
            n.isdigit() for n, _ in child.named_children()
        )
        if is_indexed and full in outputs and outputs[full].dim() == 4 and not expandable:
            names.append(full)
        else:
            names.extend(_block_names(child, full + ".", outputs))
    return names


def select_layers(layers: list[LayerInfo], selection: str | list[str], pooling: str = "avg") -> list[LayerChoice]:
    """Resolve a selection (names, shorthands, ``name:pool``) into layer choices.

    Parameters
    ----------
    layers : list of LayerInfo
        From :func:`trace_layers`.
    selection : str or list of str
        Comma-separated string or list; each item a layer name or a shorthand of
        :data:`SHORTHANDS`, optionally suffixed with ``:POOL`` to override ``pooling``.
    pooling : str, default='avg'
        Pooling for 4-D layers: one of ``avg``, ``max``, ``gem``, ``avgmax``, ``none``.

    Raises
    ------
    LayerNotFoundError
        An unknown name; the message lists the closest valid names.
    ExportError
        An unknown pooling, or ``logits`` on a model whose output is not ``(N, classes)``.
    """
    items = [s.strip() for s in (selection.split(",") if isinstance(selection, str) else selection) if s.strip()]
    if not items:
        raise ExportError("no layers selected; use a layer name or one of " + ", ".join(SHORTHANDS))
    by_name = {layer.name: layer for layer in layers}
    blocks = [layer for layer in layers if layer.is_block]
    choices: list[LayerChoice] = []
    for item in items:
        name, _, pool = item.partition(":")
        pool = pool or pooling
        if pool not in POOLINGS:
            raise ExportError(f"unknown pooling {pool!r} in {item!r}; choose one of {', '.join(POOLINGS)}")
        for layer in _expand(name, by_name, blocks):
            choice = LayerChoice(layer, pool if layer.is_map else "none")
            if choice not in choices:
                choices.append(choice)
    return choices


def _expand(name: str, by_name: dict[str, LayerInfo], blocks: list[LayerInfo]) -> list[LayerInfo]:
    if name == "last":
        if PRE_LOGITS in by_name:
            return [by_name[PRE_LOGITS]]
        if not blocks:
            raise ExportError("this model has neither a linear classifier nor blocks; name a layer instead")
        return [blocks[-1]]
    if name == "all":
        return list(blocks)
    if name == "stages":
        return [b for i, b in enumerate(blocks) if i == len(blocks) - 1 or blocks[i + 1].stride != b.stride]
    if name in by_name:
        return [by_name[name]]
    if name == LOGITS:
        raise ExportError("this model's output is not (batch, classes); `logits` is not available")
    valid = list(SHORTHANDS) + list(by_name)
    raise LayerNotFoundError(f"layer {name!r} is not in this backbone; {close_matches_hint(name, valid)}")
