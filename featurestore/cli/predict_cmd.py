"""``featurestore predict MODEL.onnx HEAD SOURCE -o predictions.csv``: classify new images."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._config import add_arguments, from_arguments
from ..errors import OptionsError
from ..head_config import PredictConfig


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="decode, extract, fuse and classify new images with a saved head",
        description="Classify SOURCE (an image folder, a CSV/TSV file, or fashion-mnist[:split]) with MODEL HEAD "
                    "(the ONNX file the head's store was extracted with, and a head from `featurestore fit`; "
                    "pickles are refused), or with one CLASSIFIER file from `featurestore package`.")
    p.add_argument("model", type=Path, help="MODEL.onnx, or a CLASSIFIER.onnx from `featurestore package`")
    p.add_argument("paths", nargs="+", metavar="[HEAD] SOURCE",
                   help="the head file (.skops) and the source; the source alone with a CLASSIFIER")
    p.add_argument("-o", "--output", required=True, type=Path, help="CSV to write")
    add_arguments(p, PredictConfig)
    return p


def run(args: argparse.Namespace) -> int:
    from .predict import predict_packaged, predict_source

    config = from_arguments(PredictConfig, args)
    if len(args.paths) == 1:
        counts = predict_packaged(args.model, args.paths[0], args.output, device=config.device,
                                  batch_size=config.batch_size)
    elif len(args.paths) == 2:
        counts = predict_source(args.model, Path(args.paths[0]), args.paths[1], args.output, device=config.device,
                                batch_size=config.batch_size)
    else:
        raise OptionsError(f"predict takes MODEL HEAD SOURCE or CLASSIFIER SOURCE, got {len(args.paths) + 1} paths")
    print(f"wrote {args.output}: {counts['predicted']} predicted, {counts['failed']} failed")
    return 0
