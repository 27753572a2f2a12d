"""``featurestore layers BACKBONE``: the layers a user can select, with channels and stride."""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="list a backbone's selectable layers",
        description="List the layers of a backbone that `featurestore export --layers` accepts: blocks "
                    "(`all`), the `stages`, `pre_logits` (`last`) and `logits`, with each layer's layout "
                    "(NCHW, NHWC channels-last, NLC tokens with their prefix tokens). `--list [FILTER]` lists "
                    "the backbone names: registered, torchvision, timm:NAME and open_clip:ARCH/TAG; with "
                    "--cached, only those whose pretrained weights the caches already hold (they export "
                    "offline).",
    )
    p.add_argument("backbone", nargs="?", help="backbone name, or with --list a filter (substring or glob)")
    p.add_argument("--list", action="store_true", help="list the known backbones (those matching BACKBONE)")
    p.add_argument("--cached", action="store_true",
                   help="with --list: only the names whose pretrained weights are in the caches now "
                        "(torch.hub's, the Hugging Face Hub's, installed packages)")
    p.add_argument("--all-modules", action="store_true", help="every module with a map, token or vector output")
    p.add_argument("--image-size", type=int, help="input size to trace at (default: the backbone's)")
    return p


def run(args: argparse.Namespace) -> int:
    from export import ExportError, list_backbones, list_cached, list_layers, select_layers

    if args.cached:
        cached = list_cached(args.backbone)
        if cached:
            print("\n".join(cached))
        return 0
    if args.list or not args.backbone:
        pattern = args.backbone if args.list else None
        names = list_backbones(pattern)
        if not pattern or pattern.lower() in "pixels":
            names.append("pixels")
        print("\n".join(names))
        return 0
    layers = list_layers(args.backbone, args.image_size)
    try:
        last = {choice.layer.name for choice in select_layers(layers, "last")}
    except ExportError:  # neither a classifier nor stages
        last = set()
    shown = layers if args.all_modules else [
        layer for layer in layers
        if layer.is_block or layer.is_stage or layer.name in ("pre_logits", "pre_projection", "logits")]
    width = max(len(layer.name) for layer in shown)
    print(f"{'layer':<{width}}  {'channels':>8}  {'stride':>6}  {'layout':<8}  {'shape':<16}  tags")
    for layer in shown:
        tags = [t for t, on in (("block", layer.is_block), ("stage", layer.is_stage),
                                ("last", layer.name in last)) if on]
        stride = str(layer.stride) if layer.stride is not None else "-"
        layout = f"{layer.layout}+{layer.prefix_tokens}" if layer.prefix_tokens else layer.layout
        shape = "x".join(map(str, layer.shape))
        print(f"{layer.name:<{width}}  {layer.channels:>8}  {stride:>6}  {layout:<8}  {shape:<16}  {','.join(tags)}")
    return 0
