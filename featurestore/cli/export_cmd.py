"""``featurestore export BACKBONE -o model.onnx``: write a multi-layer ONNX with its spec."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..spec import POOLINGS


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="export a PyTorch backbone to ONNX with pooled layer outputs",
        description=(
            "Export a backbone (any torchvision classification model by name, timm:NAME for timm's models, "
            "efficientnet_lite0/1/2, or `pixels`) to an ONNX file whose "
            "named outputs are the chosen layers, pooled inside the graph. The graph takes uint8 NHWC "
            "images and embeds its preprocessing and layer spec in its metadata."
        ),
    )
    p.add_argument("backbone", help="backbone name (see `featurestore layers --list`) or `pixels`")
    p.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--layers", default="last",
                   help="comma-separated layer names or shorthands: last (default), stages, all, logits; "
                        "NAME:POOL overrides the pooling of one layer")
    p.add_argument("--pool", default="avg", choices=POOLINGS,
                   help="pooling: of feature maps (avg, max, gem, avgmax, none; default avg) or of transformer "
                        "tokens (cls, mean, cls+mean, none; default cls, or mean without a class token); "
                        "the other kind of layer keeps its default")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=Path,
                         help="state_dict file to load: .pth/.pt (torch.save(model.state_dict()), read with "
                              "weights_only=True) or .safetensors")
    weights.add_argument("--random-init", action="store_true",
                         help="export untrained (seeded) weights; recorded as such in the spec")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="compute precision of the backbone; inputs/outputs stay uint8/float32")
    p.add_argument("--image-size", type=int, help="input size override (square)")
    p.add_argument("--grayscale", action="store_true", help="one input channel (pixels backbone only)")
    return p


def run(args: argparse.Namespace) -> int:
    from export import export_backbone

    spec, data = export_backbone(
        args.backbone, args.output, layers=args.layers, pooling=args.pool, weights=args.weights,
        random_init=args.random_init, precision=args.precision, image_size=args.image_size,
        grayscale=args.grayscale,
    )
    prep = spec.preprocessing
    h, w, c = spec.input_shape
    print(f"wrote {args.output} ({len(data) / 1e6:.1f} MB): {spec.backbone}, weights {spec.weights.source}"
          + (" (RANDOM INIT)" if spec.weights.random_init else ""))
    print(f"input  {spec.input_name}: uint8 (batch, {h}, {w}, {c}); resize {prep.resize_mode} "
          f"{prep.resize_size or ''} -> crop {prep.crop_size}, {prep.interpolation}, mean {prep.mean}, std {prep.std}")
    for layer in spec.layers:
        stride = layer.stride if layer.stride is not None else "-"
        print(f"output {layer.output}: float32 (batch, {layer.dim})  channels {layer.channels}, stride {stride}, "
              f"layout {layer.layout}, pooling {layer.pooling}")
    return 0
