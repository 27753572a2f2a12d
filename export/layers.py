"""Discover a backbone's selectable layers and resolve a user's layer selection.

A dry forward pass with hooks records every module's output, from which each layer's
layout, channels and stride follow (:mod:`export._layout`). Names:

- any module name (``features.18``, ``layer3.1``, ``blocks.11``) whose output is a map
  (``NCHW``, or channels-last ``NHWC`` as in Swin), a token sequence (``NLC``, as in ViTs) or
  a vector (``NC``);
- ``pre_logits``: exactly what the model's own classifier reads: for timm models
  ``forward_head(forward_features(x), pre_logits=True)`` (timm's own pre-logits, final norms
  and hidden head layers included, for every family); otherwise the input of the final
  classifier layer, a ``nn.Linear`` or a convolution (SqueezeNet's), averaged over space when
  the classifier reads a map;
- ``logits``: the model's own output.

Shorthands:

- ``last``: ``pre_logits`` (or the last stage, pooled, for a model without a classifier);
- ``stages``: one layer per resolution stage (:mod:`export._stages`): for CNNs and
  hierarchical transformers the module that ends each stride, never a sub-layer of a block;
  for plain ViTs the last block of each quarter of depth;
- ``all``: every block (an element of an ``nn.Sequential`` or ``nn.ModuleList`` with a map
  output, or a transformer block);
- ``logits``.

Maps pool over their spatial axes (``avg``, ``max``, ``gem``, ``avgmax``, ``grid2``, ``grid4``,
``pyramid``, ``none``); tokens
over the sequence (``cls``, ``mean`` of the patch tokens, ``cls+mean``, ``none``). Channels
are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from featurestore.spec import MAP_POOLINGS, POOLINGS, TOKEN_POOLINGS

from ._layout import describe_output, has_class_token, is_global_pool
from ._stages import block_names, stage_names, token_blocks
from .errors import LayerNotFoundError, LayerSelectionError, close_matches_hint

__all__ = ["LayerInfo", "SHORTHANDS", "trace_layers", "select_layers", "LayerChoice", "default_pooling"]

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
    capture : {'output', 'input', 'pre_logits'}
        Whether the hook takes the module's output or its first input (averaged over space
        when it is a map); ``pre_logits`` is timm's ``forward_head(..., pre_logits=True)``.
    shape : tuple of int
        Per-sample shape as the model produces it: ``(C, H, W)``, ``(H, W, C)``, ``(L, C)`` or ``(C,)``.
    stride : int or None
        Input pixels per output pixel (per patch token) along the height; None for vectors.
    is_block : bool
        Whether the layer is a block (listed by ``all``).
    layout : {'NCHW', 'NHWC', 'NLC', 'NC'}
    prefix_tokens : int
        Tokens before the patch tokens (``NLC`` only).
    is_stage : bool
        Whether ``stages`` selects it.
    class_token : bool
        Whether the first prefix token is a class token (``cls`` pooling needs one).
    """

    name: str
    module: str
    capture: str
    shape: tuple[int, ...]
    stride: int | None
    is_block: bool
    layout: str = "NCHW"
    prefix_tokens: int = 0
    is_stage: bool = False
    class_token: bool = False

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.layout in ("NHWC", "NLC") else self.shape[0]

    @property
    def is_map(self) -> bool:
        return self.layout in ("NCHW", "NHWC")

    @property
    def is_tokens(self) -> bool:
        return self.layout == "NLC"


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
    inputs: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def make_hook(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                if name not in outputs:
                    order.append(name)
                outputs[name] = output
                if args and isinstance(args[0], torch.Tensor):
                    inputs[name] = args[0]
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    pre_logits = None
    try:
        with torch.no_grad(), no_attention_fast_path():
            x = torch.zeros(1, in_channels, *input_hw)
            if _has_timm_head(model):
                features = model.forward_features(x)
                pre_logits = model.forward_head(features, pre_logits=True)
                result = model.forward_head(features)  # last, so the head's hooks record the full pass
            else:
                result = model(x)
    finally:
        for handle in handles:
            handle.remove()

    modules = dict(model.named_modules())
    # an output whose first axis is not the batch (Swin's attention over windows) is no per-image layer
    described = {name: describe_output(model, modules[name], outputs[name], input_hw)
                 if outputs[name].dim() and outputs[name].shape[0] == 1 else (None, 0, None) for name in order}
    pools = {name for name in order if is_global_pool(modules[name], inputs.get(name), outputs[name],
                                                      described[name][0])}
    tokens = token_blocks(model, outputs, described)
    blocks = set(block_names(model, described)) | set(tokens)
    stages = set(stage_names(model, order, described, pools, tokens))
    layers = []
    for name in order:
        layout, prefix, stride = described[name]
        if layout is None:
            continue
        layers.append(LayerInfo(name, name, "output", _shape(outputs[name]), stride, name in blocks, layout, prefix,
                                name in stages, layout == "NLC" and prefix > 0 and has_class_token(model, prefix)))
    if isinstance(result, torch.Tensor) and result.dim() == 2:
        if getattr(model, "num_classes", None) == 0:  # a model built without classifier returns its pre-logits
            layers.append(LayerInfo(PRE_LOGITS, "", "output", _shape(result), None, False, "NC"))
            return layers
        if isinstance(pre_logits, torch.Tensor) and pre_logits.dim() == 2:
            layers.append(LayerInfo(PRE_LOGITS, "", "pre_logits", _shape(pre_logits), None, False, "NC"))
        elif (final := _final_classifier(order, modules, outputs, inputs, result)) is not None:
            layers.append(LayerInfo(PRE_LOGITS, final, "input", (_classifier_width(modules[final]),), None, False,
                                    "NC"))
        layers.append(LayerInfo(LOGITS, "", "output", _shape(result), None, False, "NC"))
    return layers


def _has_timm_head(model: nn.Module) -> bool:
    """Whether ``model`` is a timm model with ``forward_features`` and ``forward_head(x, pre_logits)``."""
    import inspect

    if not type(model).__module__.startswith("timm.") or not callable(getattr(model, "forward_features", None)):
        return False
    head = getattr(model, "forward_head", None)
    try:
        return callable(head) and "pre_logits" in inspect.signature(head).parameters
    except (TypeError, ValueError):
        return False


def _final_classifier(order: list[str], modules: dict[str, nn.Module], outputs: dict[str, torch.Tensor],
                      inputs: dict[str, torch.Tensor], result: torch.Tensor) -> str | None:
    """The module that computes the logits: a ``nn.Linear`` whose output is the model's, or a convolution
    with one output channel per class that is the last module with parameters to run (SqueezeNet)."""
    linear = [n for n in order if outputs[n] is result and isinstance(modules[n], nn.Linear)]
    if linear:
        return linear[-1] if inputs.get(linear[-1]) is not None and inputs[linear[-1]].dim() == 2 else None
    leaves = [n for n in order if not any(True for _ in modules[n].children())
              and any(True for _ in modules[n].parameters(recurse=False))]
    if leaves and isinstance(modules[leaves[-1]], nn.Conv2d) and inputs.get(leaves[-1]) is not None:
        conv = modules[leaves[-1]]
        if conv.out_channels == result.shape[1] and inputs[leaves[-1]].dim() == 4:
            return leaves[-1]
    return None


def _classifier_width(module: nn.Module) -> int:
    return int(module.in_features if isinstance(module, nn.Linear) else module.in_channels)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in tensor.shape[1:])


class no_attention_fast_path:
    """Turn off torch's fused multi-head attention inference path (``aten::_native_multi_head_attention``,
    which has no ONNX export) while tracing or exporting; restored afterwards."""

    def __enter__(self) -> None:
        self.before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc: object) -> None:
        torch.backends.mha.set_fastpath_enabled(self.before)



def default_pooling(layer: LayerInfo, pooling: str) -> str:
    """The pooling a layer gets from a selection-wide ``pooling``.

    A map pooling applies to maps, a token pooling to tokens; the other kind of layer keeps
    its own default (``avg`` for maps; ``cls`` for tokens with a class token, else ``mean``).
    """
    if layer.is_map:
        return pooling if pooling in MAP_POOLINGS else "avg"
    if layer.is_tokens:
        if pooling in TOKEN_POOLINGS:
            return pooling
        return "cls" if layer.class_token else "mean"
    return "none"


def _check_pooling(layer: LayerInfo, pool: str, item: str) -> None:
    if layer.is_tokens and pool not in TOKEN_POOLINGS:
        raise LayerSelectionError(f"{item!r}: {layer.name} is a token layer; it pools as {', '.join(TOKEN_POOLINGS)}")
    if layer.is_map and pool not in MAP_POOLINGS:
        raise LayerSelectionError(f"{item!r}: {layer.name} is a feature map; it pools as {', '.join(MAP_POOLINGS)}")
    if layer.is_tokens and pool in ("cls", "cls+mean") and not layer.class_token:
        raise LayerSelectionError(f"{item!r}: {layer.name} has no class token; pool it as mean or none")


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
        Pooling for the selection (see :func:`default_pooling`): a map pooling (``avg``,
        ``max``, ``gem``, ``avgmax``, ``grid2``, ``grid4``, ``pyramid``, ``none``) or a token
        pooling (``cls``, ``mean``, ``cls+mean``, ``none``).

    Raises
    ------
    LayerNotFoundError
        An unknown name; the message lists the closest valid names.
    ExportError
        An unknown pooling, one that does not fit the layer's layout, or ``logits`` on a
        model whose output is not ``(N, classes)``.
    """
    items = [s.strip() for s in (selection.split(",") if isinstance(selection, str) else selection) if s.strip()]
    if not items:
        raise LayerSelectionError("no layers selected; use a layer name or one of " + ", ".join(SHORTHANDS))
    if pooling not in POOLINGS:
        raise LayerSelectionError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    by_name = {layer.name: layer for layer in layers}
    choices: list[LayerChoice] = []
    for item in items:
        name, _, pool = item.rpartition(":") if ":" in item else (item, "", "")
        if pool and pool not in POOLINGS:
            raise LayerSelectionError(f"unknown pooling {pool!r} in {item!r}; choose one of {', '.join(POOLINGS)}")
        for layer in _expand(name, by_name, layers):
            chosen = pool or default_pooling(layer, pooling)
            if not (layer.is_map or layer.is_tokens):
                chosen = "none"
            _check_pooling(layer, chosen, item)
            choice = LayerChoice(layer, chosen)
            if choice not in choices:
                choices.append(choice)
    return choices


def _expand(name: str, by_name: dict[str, LayerInfo], layers: list[LayerInfo]) -> list[LayerInfo]:
    stages = [layer for layer in layers if layer.is_stage]
    if name == "last":
        if PRE_LOGITS in by_name:
            return [by_name[PRE_LOGITS]]
        if not stages:
            raise LayerSelectionError("this model has neither a linear classifier nor stages; name a layer instead")
        return [stages[-1]]
    if name == "all":
        return [layer for layer in layers if layer.is_block]
    if name == "stages":
        if not stages:
            raise LayerSelectionError("no resolution stages found in this model; name its layers instead "
                              "(`featurestore layers` lists them)")
        return stages
    if name in by_name:
        return [by_name[name]]
    if name == LOGITS:
        raise LayerSelectionError("this model's output is not (batch, classes); `logits` is not available")
    valid = list(SHORTHANDS) + list(by_name)
    raise LayerNotFoundError(f"layer {name!r} is not in this backbone; {close_matches_hint(name, valid)}")
