"""``featurestore predict MODEL.onnx HEAD SOURCE -o predictions.csv``: classify new images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..session import DEVICES


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="decode, extract, fuse and classify new images with a saved head")
    p.add_argument("model", type=Path, help="the ONNX file the head's store was extracted with")
    p.add_argument("head", type=Path, help="head file from `featurestore fit` (.skops); pickles are refused")
    p.add_argument("source", help="image folder, CSV/TSV file, or fashion-mnist[:split]")
    p.add_argument("-o", "--output", required=True, type=Path, help="CSV to write")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--batch-size", type=int, default=32)
    return p


def run(args: argparse.Namespace) -> int:
    from .predict import predict_source

    counts = predict_source(args.model, args.head, args.source, args.output, device=args.device,
                            batch_size=args.batch_size)
    print(f"wrote {args.output}: {counts['predicted']} predicted, {counts['failed']} failed")
    return 0
