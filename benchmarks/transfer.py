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

``--full-levers runs/fashion_mnist_levers`` adds the levers at full size (60,000 / 10,000), from
the ``bench --select`` steps of ``examples/fashion_mnist_levers.toml`` (every cell by 3-fold CV on
the training split): the ``mlp`` head against ``svm`` on the pyramid, ``pre_logits`` concatenated to
it, the flipped views as training rows of the ``mlp``, several backbones joined by content key;
then a vote of the best ``--ensemble`` cells by CV (soft when all have probabilities, else by
majority), each refitted on the training split here and scored once on the test split.
``--levers none`` keeps the subset levers of the results file already there instead of
measuring them again.
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

__all__ = ["CLASSICAL", "FULL_BENCHES", "LEVERS", "main", "run"]

MOBILENET = BackboneCase("mobilenet_v2", random_init=False, nominal_gflop=0.60)
LITE0 = BackboneCase("efficientnet_lite0", random_init=False, nominal_gflop=0.80)
MOBILENET_LAYERS = "features.13:avg,features.13:pyramid,last"
AVG, PYRAMID, LAST = "features.13.avg", "features.13.pyramid", "pre_logits"
LEVERS = (1, 2, 3, 4, 5)
_SIZES = {"full": (5000, 2000), "quick": (200, 100)}  # (train, test) images
#: The ``[[bench]]`` steps of examples/fashion_mnist_levers.toml that measure a lever, with and without it.
FULL_BENCHES = ("mlp", "views", "backbones")

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
    if text.strip().lower() == "none":
        return []
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


_FULL_SET_TITLES = ("Full set, every cell by", "Full set, the cell bench --select chose")


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


# --- the levers at full size --------------------------------------------------------------------
def _bench_documents(folder: Path) -> dict[str, dict[str, Any]]:
    """The ``results.json`` of each lever bench of the levers pipeline found under ``folder``."""
    import json

    found = {name: json.loads((folder / name / "results.json").read_text())
             for name in FULL_BENCHES if (folder / name / "results.json").is_file()}
    if not found:
        raise SystemExit(f"{folder}: no bench results of examples/fashion_mnist_levers.toml "
                         f"({', '.join(FULL_BENCHES)}); run the pipeline first")
    return found


def _find(documents: dict[str, dict[str, Any]], head: str, layer: str, store: str | None = None,
          views: str = "clean") -> dict[str, Any] | None:
    """The cell of ``head`` on ``layer`` (of ``store``: default each bench's first store) in any of the benches
    whose views are ``views`` (the benches draw the same seeded folds of the same training rows, so their cells
    compare)."""
    for document in documents.values():
        if document["config"]["views"] != views:
            continue
        wanted = store or document["stores"][0]["name"]
        found = next((r for r in document["results"] if r["head"] == head and r["layer"] == layer
                      and r["store"] == wanted), None)
        if found is not None:
            return found
    return None


def _full_rows(documents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Lever rows, with and without, from the CV accuracies of the levers pipeline's benches."""
    concat = "concat(2 layers)"
    pairs = [("mlp head", _find(documents, "svm", PYRAMID), "features.13 pyramid, svm",
              _find(documents, "mlp", PYRAMID), "features.13 pyramid, mlp"),
             ("mlp head", _find(documents, "mlp", PYRAMID), "features.13 pyramid, mlp",
              _find(documents, "mlp", concat), "+ pre_logits (concat), mlp"),
             *[("flipped views", _find(documents, "mlp", layer), f"{name}, mlp, clean rows",
                _find(documents, "mlp", layer, views="train"),
                "+ the flipped view of each training image as a training row")
               for layer, name in ((PYRAMID, "features.13 pyramid"), (concat, "pyramid + pre_logits"))]]
    backbones = documents.get("backbones")
    if backbones is not None:
        names = [s["name"] for s in backbones["stores"]]
        joined = next((n for n in names if "+" in n), None)
        alone = [r for r in backbones["results"] if r["store"] not in (names[0], joined)]
        first = next((r for r in backbones["results"] if r["store"] == names[0]), None)
        last = next((r for r in backbones["results"] if r["store"] == joined), None)
        if first is not None and last is not None:
            pairs.append(("several backbones", first, f"{names[0]}: {first['layer']}, {first['head']}", last,
                          f"joined by content key with {', '.join(n for n in names[1:] if n != joined)}: "
                          f"{last['layer']}, {last['head']}",
                          ", ".join(f"{r['store']} alone {r['accuracy']:.4f}" for r in alone)))
    rows = []
    for lever, without, without_name, with_, with_name, *detail in pairs:
        if without is not None and with_ is not None:
            rows.append(_row(lever, without_name, without["accuracy"], with_name, with_["accuracy"],
                             detail[0] if detail else f"fit {without['fit_seconds']:.0f} / {with_['fit_seconds']:.0f} "
                                                           "s per fold"))
    return rows


def _member_data(document: dict[str, Any], store: str, use_views: bool, cache: dict[tuple, Any]) -> Any:
    """The bench's loaded data of ``store`` (a store of ``document``, or its stores joined), loaded once."""
    from heads.bench import load_store_data
    from heads.joined import join_store_data

    entry = next(s for s in document["stores"] if s["name"] == store)
    paths = tuple(p.strip() for p in entry["path"].split(", "))
    key = (paths, use_views)
    if key not in cache:
        loaded = load_store_data(list(paths), use_views=use_views)
        cache[key] = loaded[0] if len(loaded) == 1 else join_store_data(loaded)
    return cache[key]


def _full_ensemble(documents: dict[str, dict[str, Any]], members: int, seed: int) -> dict[str, Any]:
    """A vote of the ``members`` cells of best CV accuracy, each refitted on the training split and scored on
    the test split: soft (mean probabilities) when every member has probabilities, else by majority (a tie
    goes to the member of best CV). Returns the vote's and each member's test accuracy."""
    from heads.bench import build_estimator

    cells, seen = [], set()
    for name, document in documents.items():
        for r in document["results"]:
            key = (r["store"], r["layers"], r["fusion"], r["head"], document["config"]["views"])
            if key not in seen:
                seen.add(key)
                cells.append((r["accuracy"], name, r, document))
    cells.sort(key=lambda c: -c[0])
    cache: dict[tuple, Any] = {}
    probabilities, predictions, chosen = [], [], []
    started = time.perf_counter()
    for cv, name, r, document in cells[:members]:
        use_views = document["config"]["views"] == "train"
        data = _member_data(document, r["store"], use_views, cache)
        layers = r["layers"].split("+")
        train, test = np.flatnonzero(~data.test), np.flatnonzero(data.test)
        X = np.concatenate([data.X[layer] for layer in layers], axis=1)
        X_train, y_train = X[train], data.y[train]
        views = data.augmented_views(layers) if use_views else None
        if views is not None:
            X_train, y_train = np.concatenate([X_train, *views[:, train]]), np.concatenate([y_train] * (1 + len(views)))
        fit_started = time.perf_counter()
        estimator = build_estimator(r["head"], r["fusion"], [data.X[layer].shape[1] for layer in layers], seed)
        estimator.fit(X_train, y_train)
        predicted = estimator.predict(X[test])
        predictions.append(predicted)
        probabilities.append(estimator.predict_proba(X[test]) if hasattr(estimator, "predict_proba") else None)
        chosen.append({"bench": name, "store": r["store"], "layer": r["layer"], "head": r["head"],
                       "views": document["config"]["views"], "cv_accuracy": cv,
                       "test_accuracy": float(np.mean(predicted == data.y[test])),
                       "fit_seconds": time.perf_counter() - fit_started})
        y_test, classes = data.y[test], estimator.classes_
    if all(P is not None for P in probabilities):
        kind, voted = "soft", classes[np.mean(probabilities, axis=0).argmax(1)]
    else:
        votes = np.stack(predictions)  # (members, rows), the member of best CV first
        counts = np.stack([(votes == c).sum(0) for c in classes])  # (classes, rows)
        tie = (counts == counts.max(0)).sum(0) > 1
        kind, voted = "majority", np.where(tie, votes[0], classes[counts.argmax(0)])
    return {"members": chosen, "vote": kind, "test_accuracy": float(np.mean(voted == y_test)),
            "seconds": time.perf_counter() - started}


def _fewshot(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The few-shot bench of the levers pipeline (``folder/fewshot``): mean ± std per head, and per draw the
    learned heads (``mlp``, ``siamese``) against ``logreg`` and ``knn`` on the same draws."""
    import csv
    import json

    path = folder / "fewshot" / "results.json"
    if not path.is_file():
        return None
    shots = json.loads(path.read_text())["shots"]
    ks = shots["shots"]
    by = {(r["layer"], r["head"], r["shots"]): r for r in shots["table"]}
    keys = list(dict.fromkeys((r["layer"], r["head"]) for r in shots["table"]))
    cells = [[layer, head] + ["fails" if (r := by.get((layer, head, k))) and r["failed"] == r["draws"] else
                              "" if r is None else f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}" for k in ks]
             for layer, head in keys]
    mean_std = table(f"Few-shot on the full store: test accuracy (10,000 images) against training images per class, "
                     f"mean ± std over {shots['seeds']} seeded draws, the same for every head (fewshot/results.json "
                     "of examples/fashion_mnist_levers.toml)", ["layer", "head"] + [f"{k} shots" for k in ks], cells)
    draws: dict[tuple, dict[str, float]] = {}
    with open(folder / "fewshot" / "shots.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["accuracy"] not in ("", "nan"):
                draws.setdefault((row["layer"], row["shots"], row["seed"]), {})[row["head"]] = float(row["accuracy"])
    compared, rows = [], []
    for layer in dict.fromkeys(layer for layer, _ in keys):
        for k in ks:
            gaps, wins = [], 0
            for (at, shot, _), heads in draws.items():
                learned = [heads[h] for h in ("mlp", "siamese") if h in heads]
                plain = [heads[h] for h in ("logreg", "knn") if h in heads]
                if at == layer and shot == k and learned and plain:
                    gaps.append(max(learned) - max(plain))
                    wins += gaps[-1] > 0
            if gaps:
                compared.append({"layer": layer, "shots": k, "draws": len(gaps), "wins": wins,
                                 "gap_points_mean": 100 * float(np.mean(gaps))})
                rows.append([layer, k, f"{wins} of {len(gaps)}", f"{100 * np.mean(gaps):+.2f}",
                             f"{100 * min(gaps):+.2f} to {100 * max(gaps):+.2f}"])
    same_draws = table("Few-shot, per draw: the better of mlp and siamese against the better of logreg and knn "
                       "(a head that fails a draw is left out of it)",
                       ["layer", "shots", "draws won", "gap (points, mean)", "gap range"], rows)
    return {"table": shots["table"], "compared": compared}, [mean_std, same_draws]


def _full_levers(folder: Path, members: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The levers pipeline's results (``folder``: its workdir) as a summary and tables."""
    documents = _bench_documents(folder)
    rows = _full_rows(documents)
    chosen = [{k: v for k, v in d["selection"].items() if k not in ("confusion", "wrong", "test_metrics")}
              | {"bench": name, "seconds": d["timing"]["total_seconds"]}
              for name, d in documents.items() if d.get("selection")]
    best = max(chosen, key=lambda c: c["cv_accuracy"])
    ensemble = _full_ensemble(documents, members, seed) if members > 1 else None
    if ensemble is not None:
        rows.append(_row("ensemble", f"the cell of best CV: {best['store']} / {best['layer']} / {best['head']}",
                         best["test_accuracy"], f"{ensemble['vote']} vote of the {members} best cells by CV",
                         ensemble["test_accuracy"], "test accuracy (the rows above: CV accuracy); members: " +
                         "; ".join(f"{m['store']} / {m['layer']} / {m['head']}"
                                   f"{' + flipped views as rows' if m['views'] == 'train' else ''}: test "
                                   f"{m['test_accuracy']:.4f}" for m in ensemble["members"])))
    levers = table("Full set (60,000 train / 10,000 test): each lever with and without it, 3-fold CV accuracy on "
                   "the training split (examples/fashion_mnist_levers.toml; the ensemble row: test accuracy)",
                   ["lever", "without", "accuracy", "with", "accuracy", "gain (points)", "also"],
                   [[r["lever"], r["without"], f"{r['without_accuracy']:.4f}", r["with"], f"{r['with_accuracy']:.4f}",
                     f"{r['gain_points']:+.2f}", r["detail"]] for r in rows])
    selected = table("Full set, the cell each lever bench chose by CV on the training split, and its test accuracy",
                     ["bench", "chosen", "CV accuracy", "test accuracy", "refit s", "bench wall s (cells)"],
                     [[c["bench"], f"{c['store']} / {c['layer']} / {c['head']} ({c['method']})",
                       f"{c['cv_accuracy']:.4f}", f"{c['test_accuracy']:.4f}", f"{c['refit_seconds']:.0f}",
                       f"{c['seconds']:.0f} ({c['cells']})"] for c in chosen])
    summary = {"levers": rows, "chosen": chosen, "best_by_cv": best, "ensemble": ensemble,
               "reaches_0_95": max([best["test_accuracy"]] + ([ensemble["test_accuracy"]] if ensemble else [])) >= 0.95}
    return summary, [levers, selected]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract the two stores, measure every lever; return the results document."""
    train, test = _SIZES["quick" if args.quick else "full"]
    sizes = {"train": args.images or train, "test": args.test or test}
    parameters = {"images_train": sizes["train"], "images_test": sizes["test"], "levers": args.levers,
                  "mobilenet_layers": MOBILENET_LAYERS,
                  "views": "1 horizontal flip (MobileNetV2 store)"}
    if not args.levers:  # the subset levers of the results file already there, measured before
        return _keep_subset(args, parameters)
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
    document = {"parameters": parameters, "levers": rows, "select_cost": select_cost, "extract_seconds": extract_s,
                "levers_seconds": levers_s, "classical": [dict(zip(("classifier", "preprocessing", "accuracy", "where"),
                                                                   c)) for c in CLASSICAL],
                "targets": [], "notes": notes, "tables": tables}
    return _add_full(args, document)


def _add_full(args: argparse.Namespace, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the full-set tables of ``--full-results`` and ``--full-levers``."""
    document["full_set_selection"] = document["full_set_levers"] = None
    if args.full_results is not None:
        document["full_set_selection"], full_tables = _full_set(args.full_results)
        document["tables"] += full_tables
    if args.full_levers is not None:
        document["full_set_levers"], full_tables = _full_levers(args.full_levers, args.ensemble, args.seed)
        document["tables"] += full_tables
        full = document["full_set_levers"]
        best, ensemble = full["best_by_cv"], full["ensemble"]
        document["notes"].append(
            f"Full set, levers ({args.full_levers}): the cell of best CV accuracy over the lever benches is "
            f"{best['store']} / {best['layer']} / {best['head']} (CV {best['cv_accuracy']:.4f}, test "
            f"{best['test_accuracy']:.4f})" + ("" if ensemble is None else
                                               f"; the {ensemble['vote']} vote of the {len(ensemble['members'])} "
                                               f"best cells by CV: test {ensemble['test_accuracy']:.4f} "
                                               f"({ensemble['seconds']:.0f} s)")
            + f"; 0.95 {'reached' if full['reaches_0_95'] else 'not reached'}.")
        fewshot = _fewshot(args.full_levers)
        document["fewshot"] = None if fewshot is None else fewshot[0]
        document["tables"] += [] if fewshot is None else fewshot[1]
    return document


def _keep_subset(args: argparse.Namespace, parameters: dict[str, Any]) -> dict[str, Any]:
    """``--levers none``: the subset levers, tables and notes of the transfer.json in ``--results-dir``."""
    import json

    path = args.results_dir / "transfer.json"
    if not path.is_file():
        raise SystemExit(f"--levers none keeps the subset levers of {path}, which does not exist; measure them")
    kept = json.loads(path.read_text())
    if not kept.get("levers"):
        raise SystemExit(f"{path} holds no subset levers to keep; measure them (--levers 1,2,3,4,5)")
    sizes = {"train": kept["parameters"]["images_train"], "test": kept["parameters"]["images_test"]}
    document = {key: kept.get(key) for key in ("levers", "select_cost", "extract_seconds", "levers_seconds",
                                               "classical")}
    # A kept document may itself have kept its levers: name the run that measured them, not the last one.
    origin = [n for n in kept.get("notes", []) if n.startswith("Subset levers kept from")]
    if kept["parameters"].get("kept_from") and origin:
        measured, origin_note = kept["parameters"]["kept_from"], origin[0]
    else:
        measured = kept.get("created")
        origin_note = f"Subset levers kept from the run of {measured} (`{' '.join(kept.get('command', []))}`)."
    regenerated = ("Subset levers kept from", "Full set, levers (")  # _add_full writes the second afresh
    document.update(parameters=dict(parameters, images_train=sizes["train"], images_test=sizes["test"],
                                    levers=kept["parameters"]["levers"], kept_from=measured),
                    targets=[], tables=_tables(kept["levers"], sizes),
                    notes=[origin_note] + [n for n in kept.get("notes", []) if not n.startswith(regenerated)])
    document = _add_full(args, document)
    if args.full_results is None and kept.get("full_set_selection"):  # the full-set pipeline's tables, kept too
        document["full_set_selection"] = kept["full_set_selection"]
        document["tables"][2:2] = [t for t in kept["tables"] if t["title"].startswith(_FULL_SET_TITLES)]
    return document


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("transfer", __doc__.splitlines()[0])
    parser.add_argument("--images", type=_positive_int, help="training images (default: 5000; 200 with --quick)")
    parser.add_argument("--test", type=_positive_int, help="test images (default: 2000; 100 with --quick)")
    parser.add_argument("--levers", type=_levers, default=list(LEVERS),
                        help="comma-separated levers to measure, of 1 (pooling), 2 (backbones), 3 (test-time "
                             "augmentation), 4 (heads and normalisation), 5 (bench --select); default all; none "
                             "keeps those of the transfer.json in --results-dir")
    parser.add_argument("--full-results", type=Path,
                        help="results.json of the full-set pipeline's bench --select, added as two tables")
    parser.add_argument("--full-levers", type=Path,
                        help="workdir of examples/fashion_mnist_levers.toml: its lever benches, added as two tables")
    parser.add_argument("--ensemble", type=int, default=3,
                        help="with --full-levers: cells in the vote (default 3; 1 for none)")
    add_cache_dir(parser)
    return run_and_report("transfer", parse_args(parser, argv), run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
