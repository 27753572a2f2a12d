"""``featurestore fit STORE --head NAME -o head.skops``: fit and save one head."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._config import add_arguments, from_arguments
from ..head_config import FitConfig


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="fit one head on a store and save it (skops + JSON sidecar)")
    p.add_argument("store", type=Path)
    add_arguments(p, FitConfig)
    p.add_argument("-o", "--output", required=True, type=Path, help="head file (.skops)")
    return p


def run(args: argparse.Namespace) -> int:
    from heads.fit import fit_head

    config = from_arguments(FitConfig, args)
    meta = fit_head(args.store, config.head, args.output, layers=list(config.layers) if config.layers else None,
                    fusion=config.fusion, params=config.head_params(), search=config.search, task=config.task)
    scores = meta["scores"]
    score = (f"R2 {scores['r2']:.4f}, MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}" if "r2" in scores
             else f"mAP {scores['map']:.4f}, micro-F1 {scores['micro_f1']:.4f}, subset accuracy "
                  f"{scores['subset_accuracy']:.4f}" if "map" in scores else f"accuracy {scores['accuracy']:.4f}")
    print(f"wrote {args.output} ({meta['head']}, {meta['method']}, layers {', '.join(meta['layers'])}): "
          f"{scores['evaluation']} {score}, "
          f"fit {meta['fit_seconds']:.1f} s on {meta['trained_rows']} rows")
    return 0
