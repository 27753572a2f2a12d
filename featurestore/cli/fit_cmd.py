"""``featurestore fit STORE --head NAME -o head.skops``: fit and save one head."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench_config import KNOWN_FUSIONS


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--param takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="fit one head on a store and save it (skops + JSON sidecar)")
    p.add_argument("store", type=Path)
    p.add_argument("--head", required=True, help="head name (see `featurestore bench --heads all`)")
    p.add_argument("--layers", help="comma-separated layers (default: the store's last layer)")
    p.add_argument("--fusion", default="concat", choices=KNOWN_FUSIONS,
                   help="how several layers are fused (concat standardises each feature; -l2 and -power normalise "
                        "each layer's block instead)")
    p.add_argument("--param", action="append", type=_param, default=[], help="head parameter KEY=VALUE")
    p.add_argument("--search", action="store_true")
    p.add_argument("--task", help="the store task to learn (default: the labels); a regression task takes a "
                                  "regression head (ridge, svr, tree, forest, bayes, xgb, knn)")
    p.add_argument("-o", "--output", required=True, type=Path, help="head file (.skops)")
    return p


def run(args: argparse.Namespace) -> int:
    from heads.fit import fit_head

    meta = fit_head(args.store, args.head, args.output, layers=args.layers.split(",") if args.layers else None,
                    fusion=args.fusion, params=dict(args.param), search=args.search, task=args.task)
    scores = meta["scores"]
    score = (f"R2 {scores['r2']:.4f}, MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}" if "r2" in scores
             else f"mAP {scores['map']:.4f}, micro-F1 {scores['micro_f1']:.4f}, subset accuracy "
                  f"{scores['subset_accuracy']:.4f}" if "map" in scores else f"accuracy {scores['accuracy']:.4f}")
    print(f"wrote {args.output} ({meta['head']}, {meta['method']}, layers {', '.join(meta['layers'])}): "
          f"{scores['evaluation']} {score}, "
          f"fit {meta['fit_seconds']:.1f} s on {meta['trained_rows']} rows")
    return 0
