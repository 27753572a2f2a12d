"""Which traced layers are blocks (``all``) and which are resolution stages (``stages``).

Stages mean one thing across families, as timm's ``feature_info`` does: for CNNs and
hierarchical transformers, the module that ends each stride. The modules on the model's
main path are listed in execution order (a container is opened up when its own children
run at three strides or more, i.e. it holds several stages, as ``features`` or
``trunk_output`` do; a module whose children run at two, such as a downsampling layer or an
Inception block whose parallel branches downsample, stays whole); each maximal run of one stride contributes its last module. Global pools, modules
whose output is one (SqueezeNet's convolution classifier), what follows them and layout-only
modules (permutes, dropouts) are no stage. For plain ViTs,
whose blocks all keep one resolution, the stages are the last block of each quarter of
depth. A model that declares its stages in timm's ``feature_info`` gets those.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["block_names", "token_blocks", "stage_names", "quarter_blocks"]

#: Modules that only move or drop values: they end no stage.
_PASSTHROUGH = ("Permute", "Identity", "Flatten", "Dropout", "Dropout1d", "Dropout2d", "DropPath")

Described = dict[str, tuple[str | None, int, int | None]]


def block_names(model: nn.Module, described: Described, prefix: str = "") -> list[str]:
    """Indexed elements of ``nn.Sequential``/``nn.ModuleList`` with a map output (containers of
    indexed elements only are opened up into their own elements)."""
    names: list[str] = []
    for child_name, child in model.named_children():
        full = prefix + child_name
        expandable = type(child) in (nn.Sequential, nn.ModuleList) and all(
            n.isdigit() for n, _ in child.named_children())
        is_map = described.get(full, (None,))[0] in ("NCHW", "NHWC")
        if child_name.isdigit() and is_map and not expandable:
            names.append(full)
        else:
            names.extend(block_names(child, described, full + "."))
    return names


def token_blocks(model: nn.Module, outputs: dict[str, torch.Tensor], described: Described) -> list[str]:
    """The transformer blocks: the largest group (>= 2) of sibling modules made of modules (never a
    block's linear projections or norms) with parameters whose outputs are token sequences of one
    shape, in execution order."""
    best: list[str] = []
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        groups: dict[tuple[int, ...], list[str]] = {}
        for child_name, child in parent.named_children():
            full = prefix + child_name
            if described.get(full, (None,))[0] == "NLC" and any(True for _ in child.children()) and any(
                    True for _ in child.parameters()):
                groups.setdefault(tuple(outputs[full].shape[1:]), []).append(full)
        for group in groups.values():
            if len(group) >= 2 and len(group) > len(best):
                best = group
    return best


def _declared_stages(model: nn.Module, described: Described) -> list[str]:
    """The stages a model declares in timm's ``feature_info`` (a list of dicts naming ``module`` and
    ``reduction``), when it names at least three and every module it names was traced; quarters of depth when they all share
    one reduction (plain ViTs list every block)."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or len(info) < 3 or not all(isinstance(i, dict) and "module" in i for i in info):
        return []
    names = [str(i["module"]) for i in info]
    if not all(described.get(n, (None,))[0] is not None for n in names):
        return []
    if len({i.get("reduction") for i in info}) == 1 and len(names) > 4:
        return quarter_blocks(names)
    return names


def quarter_blocks(blocks: list[str]) -> list[str]:
    """The last block of each quarter of depth (blocks 2, 5, 8, 11 of 12)."""
    depth = len(blocks)
    return [blocks[i] for i in sorted({max(0, round(depth * q / 4) - 1) for q in (1, 2, 3, 4)})]


def stage_names(model: nn.Module, order: list[str], described: Described, pools: set[str],
                tokens: list[str]) -> list[str]:
    """The layers ``stages`` selects (see the module docstring)."""
    declared = _declared_stages(model, described)
    if declared:
        return declared
    if tokens:
        return quarter_blocks(tokens)
    rank = {name: i for i, name in enumerate(order)}
    modules = dict(model.named_modules())

    def is_map(name: str) -> bool:
        return (described.get(name, (None,))[0] in ("NCHW", "NHWC") and name not in pools
                and type(modules[name]).__name__ not in _PASSTHROUGH)

    def kids(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        found = []
        for child_name, child in module.named_children():
            full = prefix + child_name
            if full in rank:
                found.append((rank[full], full, child))
            else:  # not called itself (a ModuleList) or no tensor output: its children stand in for it
                found.extend((rank[n], n, m) for n, m in kids(full + ".", child))
        for _, name, child in sorted(found, key=lambda entry: entry[0]):
            yield name, child

    def spans(name: str, module: nn.Module) -> bool:
        # three strides or more among its children: it holds several stages. Two are one
        # downsampling, also when parallel branches alternate between them (Inception's Mixed_6a).
        return len({described[n][2] for n, _ in kids(name + ".", module) if is_map(n)}) >= 3

    def main_path(prefix: str, module: nn.Module) -> list[str]:
        path: list[str] = []
        for name, child in kids(prefix, module):
            if name in pools or (is_map(name) and not spans(name, child) and any(
                    n.startswith(name + ".") and described[n][2] == described[name][2] for n in pools)):
                # the head starts here: a global pool, or a module whose output is one (SqueezeNet's classifier)
                path.append("")
            elif is_map(name) and not spans(name, child):
                path.append(name)
            else:
                path.extend(main_path(name + ".", child))
        return path

    path = main_path("", model)
    path = path[:path.index("")] if "" in path else path
    return [name for i, name in enumerate(path)
            if i == len(path) - 1 or described[path[i + 1]][2] != described[name][2]]
