"""``featurestore package MODEL.onnx HEAD.skops -o classifier.onnx``: one ONNX file from image to class."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._config import add_arguments, from_arguments
from ..head_config import PackageConfig


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="ship a fitted head as one ONNX file from image to class (runs with onnxruntime alone)",
        description="Merge the exported backbone, the head's fusion and the head into one ONNX graph: input "
                    "`images` (uint8, N x H x W x 3), outputs `label` (int64 index into the class names in "
                    "metadata `featurestore.classes`) and `probabilities` (float32, N x K). Converts every "
                    "registered head, alone or after a concat or attention fusion.",
    )
    p.add_argument("model", type=Path, help="the ONNX file the head's store was extracted with")
    p.add_argument("head", type=Path, help="head file from `featurestore fit` (.skops)")
    p.add_argument("-o", "--output", required=True, type=Path, help="classifier ONNX file to write")
    add_arguments(p, PackageConfig)
    return p


def run(args: argparse.Namespace) -> int:
    from heads.package import package_head

    config = from_arguments(PackageConfig, args)
    info = package_head(args.model, args.head, args.output, precision=config.precision)
    print(f"wrote {args.output} ({info['bytes'] / 1e6:.1f} MB): {info['head']} on {', '.join(info['layers'])}; "
          f"{len(info['classes'])} classes")
    return 0
