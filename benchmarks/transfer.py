"""Transfer quality: what each lever of the Fashion-MNIST experiment buys, with and without it, in one run.

``python -m benchmarks.transfer [--quick] [--images 5000] [--test 2000] [--levers 1,2,3,4,5]``

Data: the first N training and M test images of Fashion-MNIST (Debian's ``dataset-fashion-mnist``;
without it the script records that it was skipped). Backbones with their real ImageNet weights
(installed offline): MobileNetV2 (``features.13`` averaged and pyramid-pooled, and ``last``; one
horizontally flipped view per image) and EfficientNet-Lite0 (``last``). Every accuracy is on the
M test images, every head fitted on the N training images; each row compares the lever with the
configuration a user gets without it, both fitted in this run:

1. **pooling**: ``features.13`` global average (96) against the pyramid (1 + 2x2 + 4x4 averages,
   2,016), with ``logreg`` and ``svm``;
2. **several backbones**: MobileNetV2 ``last`` alone against it joined by content key with
   EfficientNet-Lite0 ``last`` (concat), ``logreg`` (``featurestore bench`` joins the stores);
3. **test-time augmentation**: the flipped views unused against used as extra training rows,
   averaged at prediction, or both (``bench --views``), ``features.13`` pyramid + ``logreg``;
4. **heads and normalisation**: the ``svm`` head's earlier Nystroem path (1,000 landmarks on all
   dimensions) against its exact RBF kernel on 256 principal components, logistic regression for
   reference; concat of the pyramid and ``last`` standardised against per-block L2 and power
   normalisation; PCA whitening (256 components) before ``logreg`` and ``svm`` against none;
5. **``bench --select``**: the cell chosen by 3-fold CV on the training images against the best
   test score of the same cells (what picking on the test split would report), and its cost.

At N = 5,000 one test image is 0.05 points and differences under ~1 point are noise.
``--full-results runs/fashion_mnist/select/results.json`` adds the bench of the full-set
pipeline (``featurestore run examples/fashion_mnist.toml``): every cell's CV accuracy and fit
time, the cell chosen, its test accuracy, and what the choice cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import _positive_int, add_cache_dir, fashion_mnist_missing, make_parser, parse_args, run_and_report, scratch_dir, table
from ._common import train_test_matrices
from ._models import BackboneCase, exported_model

__all__ = ["CLASSICAL", "LEVERS", "main", "run"]

MOBILENET = BackboneCase("mobilenet_v2", random_init=False, nominal_gflop=0.60)
LITE0 = BackboneCase("efficientnet_lite0", random_init=False, nominal_gflop=0.80)
MOBILENET_LAYERS = "features.13:avg,features.13:pyramid,last"
AVG, PYRAMID, LAST = "features.13.avg", "features.13.pyramid", "pre_logits"
LEVERS = (1, 2, 3, 4, 5)
_SIZES = {"full": (5000, 2000), "quick": (200, 100)}  # (train, test) images

#: Classical entries of the Fashion-MNIST benchmark, quoted from zalandoresearch/fashion-mnist's
#: README (section "Benchmark", commit 02cf067) and its automatic scikit-learn benchmark.
CLASSICAL: tuple[tuple[str, str, float, str], ...] = (
    ("SVC (C=10, RBF)", "raw pixels", 0.897, "automatic scikit-learn benchmark (arXiv:1708.07747), best SVC"),
    ("XgBoost", "pixels scaled to mean 0, variance 1", 0.898, "README, submitted benchmarks"),
    ("MLP 256-128-64", "none", 0.900, "README, submitted benchmarks"),
    ("HOG + SVM", "HOG", 0.926, "README, submitted benchmarks"),
    ("2 conv layers, trained end to end", "none to normalisation", 0.876, "README: 0.876 to 0.932 across 7 entries"),
)


# --- data ---------------------------------------------------------------------------------------
def _extract(model: Path, store: Path, sizes: dict[str, int], views: int) -> float:
    """Extract the first train and test images into ``store``; its seconds."""
    from featurestore import ExtractConfig, FashionMnistSource, extract

    started = time.perf_counter()
    options = ExtractConfig(device="cpu", progress=False, views=views, augment=("hflip",) if views else ())
    for split, count in sizes.items():
        extract(model, FashionMnistSource(split, limit=count), store, options)
    return time.perf_counter() - started


# --- levers -------------------------------------------------------------------------------------
def _bench(stores: list[Path], work: Path, name: str, **config: Any) -> dict[str, Any]:
    """``featurestore bench`` over ``stores`` (cells run one at a time); its results document."""
    from featurestore.bench_config import BenchConfig
    from heads.bench import run_bench

    return run_bench(stores, work / f"bench-{name}", BenchConfig(n_jobs=1, **config), log=lambda *_: None)


def _cell(document: dict[str, Any], store: str | None = None, layer: str | None = None, head: str | None = None
          ) -> dict[str, Any]:
    found = [r for r in document["results"] if (store is None or r["store"] == store)
             and (layer is None or r["layer"] == layer) and (head is None or r["head"] == head)]
    if len(found) != 1:
        raise RuntimeError(f"expected one bench cell for {store}/{layer}/{head}, found {len(found)}")
    return found[0]


def _fit_score(head: str, data: tuple[np.ndarray, ...], transform: Any = None, **params: Any) -> dict[str, Any]:
    """Fit ``create_head(head, **params)`` on the training rows (after ``transform``), score the test rows."""
    from heads.registry import create_head
    from heads._method import method_used

    X, y, X_test, y_test = data
    started = time.perf_counter()
    if transform is not None:
        X, X_test = transform.fit_transform(X), transform.transform(X_test)
    estimator = create_head(head, **params).fit(X, y)
    fit = time.perf_counter() - started
    return {"accuracy": float(estimator.score(X_test, y_test)), "fit_s": fit, "method": method_used(estimator)}


def _row(lever: str, without: str, without_acc: float, with_: str, with_acc: float, detail: str = "") -> dict[str, Any]:
    return {"lever": lever, "without": without, "without_accuracy": without_acc, "with": with_,
            "with_accuracy": with_acc, "gain_points": 100 * (with_acc - without_acc), "detail": detail}


def _pooling(mnv2: Path, work: Path) -> list[dict[str, Any]]:
    document = _bench([mnv2], work, "pooling", heads=("logreg", "svm"), fusions=(), layers=(AVG, PYRAMID))
    rows = []
    for head in ("logreg", "svm"):
        avg, pyramid = _cell(document, layer=AVG, head=head), _cell(document, layer=PYRAMID, head=head)
        rows.append(_row("1. pooling", f"features.13 avg (96), {head}", avg["accuracy"],
                         f"features.13 pyramid (2,016), {head}", pyramid["accuracy"]))
    return rows


def _backbones(mnv2: Path, lite0: Path, work: Path) -> list[dict[str, Any]]:
    document = _bench([mnv2, lite0], work, "backbones", heads=("logreg",), fusions=("concat",), layers=(LAST,))
    alone = _cell(document, store=mnv2.name, layer=LAST)
    other = _cell(document, store=lite0.name, layer=LAST)
    joined = [r for r in document["results"] if r["store"] not in (mnv2.name, lite0.name)]
    return [_row("2. several backbones", "MobileNetV2 last, logreg", alone["accuracy"],
                 "+ EfficientNet-Lite0 last (joined by content key, concat), logreg", joined[0]["accuracy"],
                 f"EfficientNet-Lite0 last alone {other['accuracy']:.4f}")]


def _views(mnv2: Path, work: Path) -> list[dict[str, Any]]:
    scores = {use: _cell(_bench([mnv2], work, f"views-{use}", heads=("logreg",), fusions=(), layers=(PYRAMID,),
                                views=use))["accuracy"]
              for use in ("clean", "train", "average", "both")}
    described = {"train": "flipped views as extra training rows", "average": "predictions averaged over the flip",
                 "both": "both"}
    return [_row("3. test-time augmentation", "clean images only, features.13 pyramid, logreg", scores["clean"],
                 described[use], scores[use]) for use in ("train", "average", "both")]


def _heads(mnv2: Path, work: Path) -> list[dict[str, Any]]:
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    data = train_test_matrices(mnv2, [PYRAMID])
    nystroem = _fit_score("svm", data, max_dims=None, exact_max_samples=0)
    exact = _fit_score("svm", data)
    logreg = _fit_score("logreg", data)
    rows = [_row("4. kernel head", f"svm {nystroem['method']} (fit {nystroem['fit_s']:.0f} s)", nystroem["accuracy"],
                 f"svm {exact['method']} (fit {exact['fit_s']:.0f} s)", exact["accuracy"],
                 f"logreg {logreg['accuracy']:.4f} (fit {logreg['fit_s']:.0f} s)")]
    for head, plain in (("logreg", logreg), ("svm", exact)):
        components = min(256, len(data[1]) - 1)  # --quick has fewer rows than that
        whitening = Pipeline([("scale", StandardScaler()), ("pca", PCA(components, whiten=True, random_state=0))])
        whitened = _fit_score(head, data, transform=whitening)
        rows.append(_row("4. PCA whitening", f"features.13 pyramid, {head}", plain["accuracy"],
                         f"PCA-whitened to 256 first, {head}", whitened["accuracy"]))
    document = _bench([mnv2], work, "norms", heads=("logreg",), fusions=("concat", "concat-l2", "concat-power"),
                      layers=(PYRAMID, LAST), per_layer=False)
    standard = _cell(document, layer="concat(2 layers)")
    for fusion in ("concat-l2", "concat-power"):
        normed = _cell(document, layer=f"{fusion}(2 layers)")
        rows.append(_row("4. fusion normalisation", "concat (standardised) of pyramid + last, logreg",
                         standard["accuracy"], f"{fusion}, logreg", normed["accuracy"]))
    return rows


def _select(mnv2: Path, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = dict(heads=("logreg", "svm"), fusions=(), layers=(AVG, PYRAMID, LAST), cv=3)
    chosen = _bench([mnv2], work, "select", select=True, **config)["selection"]
    by_test = _bench([mnv2], work, "select-test", **config)
    best = max(by_test["results"], key=lambda r: r["accuracy"])
    cost = {"search_s": chosen["search_seconds"], "refit_s": chosen["refit_seconds"], "cells": chosen["cells"]}
    return [_row("5. bench --select", f"best test score of the {chosen['cells']} cells: {best['layer']} + "
                 f"{best['head']} (chosen on the test split)", best["accuracy"],
                 f"chosen by 3-fold CV on train: {chosen['layer']} + {chosen['head']} (CV {chosen['cv_accuracy']:.4f})",
                 chosen["test_accuracy"],
                 f"search {cost['search_s']:.0f} s over {cost['cells']} cells, refit {cost['refit_s']:.0f} s")], cost


# --- entry point --------------------------------------------------------------------------------
def _levers(text: str) -> list[int]:
    try:
        levers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        levers = []
    if not levers or any(lever not in LEVERS for lever in levers):
        raise argparse.ArgumentTypeError(f"expected levers among {','.join(map(str, LEVERS))}, got {text!r}")
    return levers


def _tables(rows: list[dict[str, Any]], sizes: dict[str, int]) -> list[dict[str, Any]]:
    levers = table(f"Test accuracy with and without each lever ({sizes['train']} train / {sizes['test']} test "
                   "Fashion-MNIST images, every head fitted in this run)",
                   ["lever", "without", "accuracy", "with", "accuracy", "gain (points)", "also"],
                   [[r["lever"], r["without"], f"{r['without_accuracy']:.4f}", r["with"], f"{r['with_accuracy']:.4f}",
                     f"{r['gain_points']:+.2f}", r["detail"]] for r in rows])
    classical = table("Classical entries of the Fashion-MNIST benchmark (quoted, not measured here; source: "
                      "zalandoresearch/fashion-mnist README)", ["classifier", "preprocessing", "test accuracy",
                                                                "where"],
                      [[name, prep, f"{acc:.3f}", where] for name, prep, acc, where in CLASSICAL])
    return [levers, classical]


def _full_set(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The full-set bench document (``results.json`` of a ``bench --select`` run) as two tables."""
    import json

    document = json.loads(path.read_text())
    chosen = document.get("selection")
    if not chosen:
        raise SystemExit(f"{path}: not a `bench --select` results.json (no selection); run the pipeline first")
    cells = table(f"Full set, every cell by {document['config']['cv']}-fold CV on the training split "
                  f"({path.parent.name}/results.json of examples/fashion_mnist.toml)",
                  ["store", "layer", "head", "method", "CV accuracy", "fit s (mean per fold)"],
                  [[r["store"], r["layer"], r["head"], r["method"], f"{r['accuracy']:.4f}", f"{r['fit_seconds']:.0f}"]
                   for r in sorted(document["results"], key=lambda r: -r["accuracy"])])
    selected = table("Full set, the cell bench --select chose and what choosing cost",
                     ["chosen", "CV accuracy", "test accuracy", "train / test rows", "refit s",
                      "search s (CV of every cell)"],
                     [[f"{chosen['store']} / {chosen['layer']} / {chosen['head']} ({chosen['method']})",
                       f"{chosen['cv_accuracy']:.4f}", f"{chosen['test_accuracy']:.4f}",
                       f"{chosen['n_train']} / {chosen['n_test']}", f"{chosen['refit_seconds']:.0f}",
                       f"{chosen['search_seconds']:.0f} ({chosen['cells']} cells)"]])
    return chosen, [cells, selected]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract the two stores, measure every lever; return the results document."""
    train, test = _SIZES["quick" if args.quick else "full"]
    sizes = {"train": args.images or train, "test": args.test or test}
    parameters = {"images_train": sizes["train"], "images_test": sizes["test"], "levers": args.levers,
                  "mobilenet_layers": MOBILENET_LAYERS,
                  "views": "1 horizontal flip (MobileNetV2 store)"}
    missing = fashion_mnist_missing()
    if missing:
        message = f"skipped: Fashion-MNIST is not available ({missing})"
        print(message, file=sys.stderr)
        return {"parameters": parameters, "skipped": message, "tables": [], "targets": [], "notes": [message]}
    mnv2_model = exported_model(MOBILENET, MOBILENET_LAYERS, args.cache_dir)
    lite0_model = exported_model(LITE0, "last", args.cache_dir)
    with scratch_dir(args, "transfer") as work:
        mnv2, lite0 = work / "mobilenet_v2", work / "efficientnet_lite0"
        extract_s = {"mobilenet_v2": _extract(mnv2_model, mnv2, sizes, views=1),
                     "efficientnet_lite0": _extract(lite0_model, lite0, sizes, views=0)}
        started = time.perf_counter()
        measured = {1: lambda: _pooling(mnv2, work), 2: lambda: _backbones(mnv2, lite0, work),
                    3: lambda: _views(mnv2, work), 4: lambda: _heads(mnv2, work), 5: lambda: _select(mnv2, work)}
        rows, select_cost = [], None
        for lever in args.levers:
            found = measured[lever]()
            if lever == 5:
                found, select_cost = found
            rows += found
        levers_s = time.perf_counter() - started
    for r in rows:
        print(f"  {r['lever']}: {r['without_accuracy']:.4f} -> {r['with_accuracy']:.4f} ({r['gain_points']:+.2f})",
              file=sys.stderr, flush=True)
    notes = [f"Extraction: MobileNetV2 (2 views) {extract_s['mobilenet_v2']:.0f} s, EfficientNet-Lite0 "
             f"{extract_s['efficientnet_lite0']:.0f} s; the levers' fits {levers_s:.0f} s."]
    tables = _tables(rows, sizes)
    full = None
    if args.full_results is not None:
        full, full_tables = _full_set(args.full_results)
        tables += full_tables
    return {"parameters": parameters, "levers": rows, "select_cost": select_cost, "extract_seconds": extract_s,
            "levers_seconds": levers_s, "classical": [dict(zip(("classifier", "preprocessing", "accuracy", "where"), c))
                                                      for c in CLASSICAL],
            "full_set_selection": full, "targets": [], "notes": notes, "tables": tables}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("transfer", __doc__.splitlines()[0])
    parser.add_argument("--images", type=_positive_int, help="training images (default: 5000; 200 with --quick)")
    parser.add_argument("--test", type=_positive_int, help="test images (default: 2000; 100 with --quick)")
    parser.add_argument("--levers", type=_levers, default=list(LEVERS),
                        help="comma-separated levers to measure, of 1 (pooling), 2 (backbones), 3 (test-time "
                             "augmentation), 4 (heads and normalisation), 5 (bench --select); default all")
    parser.add_argument("--full-results", type=Path,
                        help="results.json of the full-set pipeline's bench --select, added as two tables")
    add_cache_dir(parser)
    return run_and_report("transfer", parse_args(parser, argv), run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
