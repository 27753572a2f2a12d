"""``featurestore map STORE --layer L [--task T] [-o map.html]``: a 2-D embedding map of a store's rows."""

from __future__ import annotations

import argparse
from pathlib import Path

# heads.embedding_map's METHODS and defaults, spelled out so that building the parser imports no
# heads (tests/heads/test_embedding_map.py checks that they agree)
METHODS = ("tsne", "umap", "pca")
DEFAULT_METHOD = "tsne"
DEFAULT_MAX_POINTS = 10_000
DEFAULT_MAX_THUMBNAILS = 2_000


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="draw a 2-D map of a store's rows (PCA, then t-SNE or UMAP) as one HTML page",
        description="Place the clean rows of one stored layer in 2-D (standardised, PCA to 50 dimensions, then "
                    "t-SNE or UMAP) and write one self-contained HTML page: points coloured by label; hovering "
                    "one shows its thumbnail, path and label. Above --max-points rows a stratified, seeded "
                    "sample is drawn, and the page says so. Reads features only; decodes only the thumbnails "
                    "the page carries.",
    )
    p.add_argument("store", type=Path)
    p.add_argument("--layer", required=True, help="layer (output or layer name, see `featurestore info`)")
    p.add_argument("-o", "--output", type=Path, default=Path("map.html"), help="page to write (default: map.html)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"how points are placed in 2-D (default: {DEFAULT_METHOD})")
    p.add_argument("--task", help="colour (and stratify) points by this task of the store: its class, or a "
                                  "regression task's value on a colour scale (default: the rows' labels)")
    p.add_argument("--split", help="only rows of this split (default: every split)")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                   help=f"rows above this are subsampled, stratified by label (default: {DEFAULT_MAX_POINTS:,})")
    p.add_argument("--thumbnails", type=int, default=DEFAULT_MAX_THUMBNAILS,
                   help=f"points that carry a thumbnail (default: {DEFAULT_MAX_THUMBNAILS:,}; 0 for none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the layout")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    from heads.embedding_map import write_map

    result = write_map(args.store, args.layer, args.output, method=args.method, max_points=args.max_points,
                       max_thumbnails=args.thumbnails, seed=args.seed, split=args.split, progress=args.progress,
                       task=args.task)
    sample = (f"{len(result.rows):,} of {result.total_rows:,} rows (stratified sample, seed {result.seed})"
              if result.subsampled else f"{result.total_rows:,} rows")
    quality = ("" if result.knn_accuracy_2d is None else
               f"; 10-NN accuracy {result.knn_accuracy_2d:.3f} in 2-D, {result.knn_accuracy_input:.3f} in PCA space")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"wrote {args.output}: {sample} of {result.layer} by {result.method}{quality} ({timing})")
    return 0
