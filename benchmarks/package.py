"""The packaged classifier (``featurestore package``) against ``featurestore predict``.

``python -m benchmarks.package [--quick] [--images 256] [--head logreg]``

Same JPEG folder, same MobileNetV2 export (ImageNet weights, ``last``) and the same fitted
head (on a store of the same images with two arbitrary labels: speed, not accuracy), timed
interleaved:

- **predict**: ``featurestore predict MODEL HEAD SOURCE``: decode, onnxruntime backbone, then
  the skops head in scikit-learn;
- **packaged**: ``featurestore predict CLASSIFIER SOURCE``: the same decoding, one
  onnxruntime session from image to class;
- **packaged, onnxruntime only**: the packaged session on pre-decoded uint8 batches (no
  decoding, no CSV): its ceiling.

Also the sizes of the backbone, the head file and the packaged file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, make_parser, measure, parse_args, repeats_for, run_and_report
from ._common import scratch_dir, speed_ratio, spread_cell, ratio_cell, table
from ._images import jpeg_folder
from ._models import BACKBONES, exported_model

__all__ = ["main", "run"]


def _labelled_folder(images: Path, root: Path) -> Path:
    """The JPEGs as two class folders (links, alternating), so that a head can be fitted."""
    folder = root / "labelled"
    for i, path in enumerate(sorted(images.glob("*.jpg"))):
        target = folder / ("a" if i % 2 else "b") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return folder


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the three variants; return the results document."""
    from featurestore import ExtractConfig, decode_image, extract
    from heads.package import package_head
    from featurestore.cli.predict import predict_packaged, predict_source
    from featurestore.session import FeatureModel
    from heads.fit import fit_head

    count = 16 if args.quick else args.images
    images, info = jpeg_folder(args.cache_dir, count, [(500, 375)], seed=args.seed)
    model = exported_model(BACKBONES["mobilenet_v2"], "last", args.cache_dir)
    with scratch_dir(args, "package") as work:
        folder = _labelled_folder(images, work)
        extract(model, folder, work / "store", ExtractConfig(device="cpu", progress=False))
        head = work / "head.skops"
        fit_head(work / "store", args.head, head)
        classifier = work / "classifier.onnx"
        package_head(model, head, classifier)
        session = FeatureModel(classifier, device="cpu")
        batch = np.stack([decode_image(p, session.spec.preprocessing) for p in sorted(folder.rglob("*.jpg"))])
        out = work / "p.csv"
        variants = [
            Variant("predict", lambda _: predict_source(model, head, folder, out, device="cpu"), count, "img"),
            Variant("packaged", lambda _: predict_packaged(classifier, folder, out, device="cpu"), count, "img"),
            Variant("packaged, onnxruntime only",
                    lambda _: [session.run(batch[i:i + 32], ["label", "probabilities"]) for i in range(0, count, 32)],
                    count, "img"),
        ]
        stats = measure(variants, repeats_for(args), warmup=True)
        sizes = {"backbone_mb": os.path.getsize(model) / 1e6, "head_kb": os.path.getsize(head) / 1e3,
                 "packaged_mb": os.path.getsize(classifier) / 1e6}
    ratio = speed_ratio(stats, "packaged", "predict")
    rows = [[name, f"{s['rate']:.1f}", spread_cell(s)] for name, s in stats.items()]
    return {
        "parameters": {"images": count, "jpegs": info, "head": args.head, "backbone": "mobilenet_v2 (last)"},
        "variants": stats, "ratios": {"packaged/predict": ratio}, "sizes": sizes, "targets": [],
        "tables": [
            table(f"Images/s ({count} JPEGs 500x375, MobileNetV2 + {args.head}, batch 32)",
                  ["variant", "images/s", "spread"], rows),
            table("Packaged vs predict, and file sizes", ["packaged/predict", "backbone MB", "head KB", "packaged MB"],
                  [[ratio_cell(ratio), f"{sizes['backbone_mb']:.1f}", f"{sizes['head_kb']:.0f}",
                    f"{sizes['packaged_mb']:.1f}"]]),
        ],
        "notes": [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("package", __doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEG files (default 256)")
    parser.add_argument("--head", default="logreg", help="a head that packages (default logreg)")
    add_cache_dir(parser)
    return run_and_report("package", parse_args(parser, argv), run)


if __name__ == "__main__":
    raise SystemExit(main())
