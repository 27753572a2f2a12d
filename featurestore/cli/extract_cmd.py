"""``featurestore extract MODEL.onnx SOURCE -o STORE``: features of a source into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..augment import AUGMENTATIONS
from ..session import DEVICES


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="extract features of an image source into a crash-safe store",
        description="Run an exported model over SOURCE (a folder, a CSV/TSV of path[,label][,split], or "
                    "fashion-mnist:train / fashion-mnist:test) and append the features to STORE. Content "
                    "already stored is skipped without decoding; bad files are recorded, never fatal "
                    "(unless --strict).",
    )
    p.add_argument("model", type=Path, help="ONNX file from `featurestore export`")
    p.add_argument("source", help="image folder, CSV/TSV file, or fashion-mnist[:train|:test]")
    p.add_argument("-o", "--output", required=True, type=Path, help="store directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--workers", type=int, help="decoding threads (default: all cores)")
    p.add_argument("--shard-rows", type=int, default=2048, help="rows per shard (default 2048)")
    p.add_argument("--views", type=int, default=0, help="augmented views per image besides the clean one")
    p.add_argument("--augment", default="", help=f"comma-separated augmentations: {', '.join(AUGMENTATIONS)}")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--strict", action="store_true", help="stop at the first bad input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from ..extract import ExtractOptions, extract

    options = ExtractOptions(
        batch_size=args.batch_size, device=args.device, intra_op_threads=args.threads,
        decode_workers=args.workers, shard_rows=args.shard_rows, views=args.views,
        augment=tuple(a for a in args.augment.split(",") if a), dtype=args.dtype, strict=args.strict,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    report = extract(args.model, args.source, args.output, options)
    print(report.summary())
    if report.decoded == 0:
        print("nothing new to extract: 0 images decoded, 0 inferred")
    return 0
