"""``featurestore layers BACKBONE``: the layers a user can select, with channels and stride."""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="list a backbone's selectable layers",
        description="List the layers of a backbone that `featurestore export --layers` accepts: blocks "
                    "(`all`), the `stages` among them, `pre_logits` (`last`) and `logits`.",
    )
    p.add_argument("backbone", nargs="?", help="backbone name")
    p.add_argument("--list", action="store_true", help="list the known backbones instead")
    p.add_argument("--all-modules", action="store_true", help="every module with a 2-D or 4-D output")
    p.add_argument("--image-size", type=int, help="input size to trace at (default: the backbone's)")
    return p


def run(args: argparse.Namespace) -> int:
    from export import list_backbones, list_layers, select_layers

    if args.list or not args.backbone:
        print("\n".join(list_backbones() + ["pixels"]))
        return 0
    layers = list_layers(args.backbone, args.image_size)
    stages = {c.layer.name for c in select_layers(layers, "stages")}
    last = {c.layer.name for c in select_layers(layers, "last")}
    shown = layers if args.all_modules else [
        layer for layer in layers if layer.is_block or layer.name in ("pre_logits", "logits")]
    width = max(len(layer.name) for layer in shown)
    print(f"{'layer':<{width}}  {'channels':>8}  {'stride':>6}  {'shape':<16}  tags")
    for layer in shown:
        tags = [t for t, on in (("block", layer.is_block), ("stage", layer.name in stages),
                                ("last", layer.name in last)) if on]
        stride = str(layer.stride) if layer.stride is not None else "-"
        shape = "x".join(map(str, layer.shape))
        print(f"{layer.name:<{width}}  {layer.channels:>8}  {stride:>6}  {shape:<16}  {','.join(tags)}")
    return 0
