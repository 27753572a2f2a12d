"""Heads loop: several heads evaluated on stored features vs re-extracting the features for every head.

``python -m benchmarks.heads [--quick] [--images N] [--test M] [--heads logreg,nb,tree,linear-svm,xgb]``

Data: the first N training and M test images of Fashion-MNIST (Debian's ``dataset-fashion-mnist``;
without it the script records that it was skipped). Backbone: MobileNetV2 with its real ImageNet
weights (installed offline), layer ``last`` (1,280 pooled features), exported through the
benchmark cache.

- **one-off extraction**: ``extract`` of the train and test images into a fresh store (model
  opened, images preprocessed, onnxruntime, shards and manifest written), timed once: what the
  store costs before the first experiment.
- **ours**: for every head, ``open_store``, load the train and test splits, fit
  ``heads.create_head(name)`` on the train rows and score it on the test rows.
- **re-extract** (what embetter or a hand-written scikit-learn pipeline does): for every head,
  ``Pipeline([("features", ImageFeatures()), ("head", create_head(name))])`` fitted on the raw
  train images and scored on the raw test images. :class:`ImageFeatures` is a transformer that,
  like embetter's encoders, loads the backbone when it is built and runs it in ``transform``:
  torchvision's MobileNetV2 with the weight file ``export`` uses (``torch.load(...,
  weights_only=True)``), classifier removed, torch eager under ``inference_mode``,
  preprocessing by torchvision transforms (resize 256, centre crop 224, ImageNet mean/std) on
  PIL images. Every experiment so loads the model and preprocesses and infers every train and
  test image again. ``--reextract-engine onnxruntime`` runs the exported graph instead (our
  preprocessing and ``FeatureModel``), which separates the cost of re-extracting from that of
  torch eager.

Both loops run every head in full; nothing is extrapolated. They are timed whole and
interleaved by ``_common.measure``. The re-extract loop is expensive, so it runs
``--reextract-repeats`` times (default 1) and the stored-feature loop ``--repeats`` times, its
first samples paired with the re-extract ones. Each loop also records per head the seconds spent
getting features (loading, or extracting) and fitting + scoring, and the test accuracy; the two
variants' accuracies agree up to the small torch/onnxruntime and resizing differences, which
shows that both did the same work.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._common import Variant, _positive_int, add_cache_dir, fashion_mnist_missing, make_parser, measure, parse_args
from ._common import ratio_cell, repeats_for, run_and_report, scratch_dir, speed_ratio, spread_cell, summarize, table
from ._models import BACKBONES, exported_model
from .targets import evaluate

__all__ = ["DEFAULT_HEADS", "ImageFeatures", "main", "run"]

DEFAULT_HEADS = ("logreg", "nb", "tree", "linear-svm", "xgb")
QUICK_HEADS = ("nb", "tree", "linear-svm")  # the heads that fit in seconds
BACKBONE, LAYERS = "mobilenet_v2", "last"
_SIZES = {"full": (1000, 250), "quick": (60, 30)}  # (train, test) images


# --- the re-extract baseline --------------------------------------------------------------------
class ImageFeatures(TransformerMixin, BaseEstimator):
    """Backbone features of raw images, computed in ``transform``: the first step of a naive pipeline.

    Parameters
    ----------
    engine : {'torch', 'onnxruntime'}, default='torch'
        ``torch``: torchvision's MobileNetV2, weights from the offline file ``export`` uses,
        torchvision preprocessing, eager inference. ``onnxruntime``: the exported graph at
        ``model_path`` through :class:`featurestore.FeatureModel`, with our preprocessing.
    model_path : str, optional
        The exported ONNX file (``engine='onnxruntime'`` only).
    batch_size : int, default=32

    Attributes
    ----------
    model_ : object
        The loaded backbone.
    seconds_ : float
        Seconds spent loading the model and computing features so far (the benchmark reads it).
    """

    def __init__(self, engine: str = "torch", model_path: str | None = None, batch_size: int = 32) -> None:
        self.engine = engine
        self.model_path = model_path
        self.batch_size = batch_size

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ImageFeatures:
        """Load the backbone (``X`` and ``y`` are not used)."""
        started = time.perf_counter()
        if self.engine == "torch":
            self.model_, self.preprocess_ = _torch_backbone()
        elif self.engine == "onnxruntime":
            from featurestore import FeatureModel

            if self.model_path is None:
                raise ValueError("ImageFeatures(engine='onnxruntime') needs model_path, the exported ONNX file")
            self.model_ = FeatureModel(self.model_path, device="cpu")
            self.preprocess_ = None
        else:
            raise ValueError(f"engine must be 'torch' or 'onnxruntime', got {self.engine!r}")
        self.seconds_ = time.perf_counter() - started
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Features ``(n_images, dim)`` of ``n_images`` uint8 images ``(n_images, H, W[, C])``."""
        check_is_fitted(self, "model_")
        started = time.perf_counter()
        parts = [self._batch(X[i:i + self.batch_size]) for i in range(0, len(X), self.batch_size)]
        self.seconds_ += time.perf_counter() - started
        return np.concatenate(parts)

    def _batch(self, images: np.ndarray) -> np.ndarray:
        if self.engine == "onnxruntime":
            from featurestore import preprocess_array

            prep = self.model_.spec.preprocessing
            outputs = self.model_.run(np.stack([preprocess_array(image, prep) for image in images]))
            return np.concatenate(list(outputs.values()), axis=1)
        import torch
        from PIL import Image

        x = torch.stack([self.preprocess_(Image.fromarray(image).convert("RGB")) for image in images])
        with torch.inference_mode():
            return self.model_(x).numpy()


def _torch_backbone():
    """torchvision's MobileNetV2 with the offline ImageNet weights, classifier removed, and its transforms."""
    import torch
    from torchvision import models, transforms

    from export.backbones import get_backbone

    entry = get_backbone(BACKBONE)
    weights, _ = entry.offline_weights()
    module = models.get_model(BACKBONE, weights=None)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.classifier = torch.nn.Identity()  # its input is the export's `last` layer
    prep = entry.preprocessing
    preprocess = transforms.Compose([
        transforms.Resize(prep.resize_size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(prep.crop_size), transforms.ToTensor(), transforms.Normalize(prep.mean, prep.std),
    ])
    return module.eval(), preprocess


# --- data ---------------------------------------------------------------------------------------
def _build_store(model_path: Path, store: Path, n_train: int, n_test: int) -> dict[str, Any]:
    """Extract the train and test images into ``store`` once, timed (model loading included)."""
    from featurestore import ExtractConfig, FashionMnistSource, FeatureModel, extract

    started = time.perf_counter()
    model = FeatureModel(model_path, device="cpu")
    options = ExtractConfig(device="cpu", progress=False)
    rows = sum(extract(model, FashionMnistSource(split, limit=n), store, options).rows_added
               for split, n in (("train", n_train), ("test", n_test)))
    seconds = time.perf_counter() - started
    images = n_train + n_test
    return {"seconds": seconds, "images": images, "rows": rows, "images_per_s": images / seconds}


def _raw_images(store: Path, layer: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The raw images of the store's train and test rows, in row order, with the store's labels.

    The re-extract baseline sees exactly the images the store holds (content the store keeps
    once is also used once there).
    """
    from featurestore import FashionMnistSource, open_store

    opened, out = open_store(store), {}
    for split in ("train", "test"):
        rows = opened.load(layer, split=split)
        index = [int(path.rsplit("/", 1)[1]) for path in rows.paths.tolist()]
        images = [item.array for item in FashionMnistSource(split, limit=max(index) + 1)]
        out[split] = (np.stack([images[i] for i in index]), rows.y)
    return out


# --- the two loops ------------------------------------------------------------------------------
def _lap(laps: dict[str, list[dict[str, float]]], head: str, started: float, features_s: float,
         accuracy: float) -> None:
    seconds = time.perf_counter() - started
    laps[head].append({"seconds": seconds, "features_s": features_s, "fit_score_s": seconds - features_s,
                       "accuracy": accuracy})


def _ours(store: Path, layer: str, heads: list[str], laps: dict[str, list[dict[str, float]]]) -> Variant:
    from featurestore import open_store
    from heads import create_head

    def run(_) -> None:
        for name in heads:
            started = time.perf_counter()
            opened = open_store(store)
            train, test = opened.load(layer, split="train"), opened.load(layer, split="test")
            loaded = time.perf_counter() - started
            head = create_head(name).fit(train.X[layer], train.y)
            _lap(laps, name, started, loaded, float(head.score(test.X[layer], test.y)))

    return Variant("ours", run, len(heads), "head")


def _reextract(data: dict[str, tuple[np.ndarray, np.ndarray]], heads: list[str], engine: str, model_path: Path,
               laps: dict[str, list[dict[str, float]]]) -> Variant:
    from sklearn.pipeline import Pipeline

    from heads import create_head

    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]

    def run(_) -> None:
        for name in heads:
            started = time.perf_counter()
            features = ImageFeatures(engine=engine, model_path=str(model_path))
            pipeline = Pipeline([("features", features), ("head", create_head(name))])
            pipeline.fit(x_train, y_train)
            accuracy = float(pipeline.score(x_test, y_test))
            _lap(laps, name, started, features.seconds_, accuracy)

    return Variant("re-extract", run, len(heads), "head")


def _warm(store: Path, layer: str, heads: list[str], data, engine: str, model_path: Path) -> None:
    """Untimed: imports (building every head), a first read of the store, 2 images through the baseline."""
    from featurestore import open_store
    from heads import create_head

    for name in heads:
        create_head(name)
    open_store(store).load(layer, split="train")
    ImageFeatures(engine=engine, model_path=str(model_path)).fit(None).transform(data["test"][0][:2])


def _measure(variants: dict[str, Variant], repeats: int, reextract_repeats: int) -> dict[str, dict[str, Any]]:
    """Both loops interleaved ``reextract_repeats`` times, then the stored-feature loop alone up to ``repeats``."""
    stats = measure([variants["ours"], variants["re-extract"]], reextract_repeats)
    if repeats > reextract_repeats:
        more = measure([variants["ours"]], repeats - reextract_repeats)["ours"]
        ours = variants["ours"]
        stats["ours"] = summarize(stats["ours"]["samples_s"] + more["samples_s"], ours.work, ours.unit)
    return stats


# --- analysis -----------------------------------------------------------------------------------
def _per_head(laps: dict[str, dict[str, list[dict[str, float]]]], heads: list[str]) -> dict[str, Any]:
    """Median seconds (total, features, fit + score) and accuracy per head and variant."""
    return {name: {variant: {key: float(np.median([lap[key] for lap in by_head[name]]))
                             for key in ("seconds", "features_s", "fit_score_s", "accuracy")}
                   for variant, by_head in laps.items()}
            for name in heads}


def _break_even(one_off_s: float, ours_per_head: float, reextract_per_head: float) -> int | None:
    """Experiments after which extracting once and reading the store costs less than re-extracting each time."""
    saving = reextract_per_head - ours_per_head
    return math.ceil(one_off_s / saving) if saving > 0 else None


def _analyse(stats, laps, heads: list[str], one_off: dict[str, Any]) -> dict[str, Any]:
    per_head = _per_head(laps, heads)
    ratio = speed_ratio(stats, "ours", "re-extract")
    sums = {variant: {key: sum(per_head[h][variant][key] for h in heads) for key in ("features_s", "fit_score_s")}
            for variant in ("ours", "re-extract")}
    n = len(heads)
    return {
        "variants": stats, "per_head": per_head, "ratio": ratio, "one_off_extraction": one_off,
        "feature_seconds": {v: s["features_s"] for v, s in sums.items()},
        "fit_score_seconds": {v: s["fit_score_s"] for v, s in sums.items()},
        "features_only_ratio": sums["re-extract"]["features_s"] / max(sums["ours"]["features_s"], 1e-12),
        "break_even_experiments": _break_even(one_off["seconds"], stats["ours"]["median_s"] / n,
                                              stats["re-extract"]["median_s"] / n),
        "accuracy_max_abs_diff": max(abs(per_head[h]["ours"]["accuracy"] - per_head[h]["re-extract"]["accuracy"])
                                     for h in heads),
    }


def _target(result: dict[str, Any], heads: list[str], sizes: dict[str, int]) -> dict[str, Any]:
    r, v = result["ratio"], result["variants"]
    feats, fits = result["feature_seconds"], result["fit_score_seconds"]
    bound = (feats["re-extract"] + fits["ours"]) / max(feats["ours"] + fits["ours"], 1e-12)
    note = (f"{len(heads)} heads ({', '.join(heads)}) on {sizes['train']} train / {sizes['test']} test images; "
            f"loop: ours {v['ours']['median_s']:.1f} s, of which {feats['ours']:.2f} s loading features; "
            f"re-extract {v['re-extract']['median_s']:.1f} s, of which {feats['re-extract']:.1f} s extracting. "
            f"Getting the features alone is {result['features_only_ratio']:.0f}x faster from the store. Fitting "
            f"and scoring the heads takes {fits['ours']:.1f} s on stored features ({fits['re-extract']:.1f} s "
            f"inside the re-extract pipelines); with equal fit times the loop ratio is (extract + fit) / (load + "
            f"fit) = {bound:.1f}x, so 100x needs all heads to fit in under 1/99 of the extraction time.")
    return evaluate("heads.vs_reextract", r["value"], paired_range=(r["paired_min"], r["paired_max"]), note=note,
                    detail={"feature_seconds": feats, "fit_score_seconds": fits,
                            "features_only_ratio": result["features_only_ratio"]})


def _tables(result: dict[str, Any], heads: list[str], sizes: dict[str, int], repeats: dict[str, int],
            engine: str) -> list[dict[str, Any]]:
    ph, v, one = result["per_head"], result["variants"], result["one_off_extraction"]
    rows = []
    for name in heads:
        o, x = ph[name]["ours"], ph[name]["re-extract"]
        rows.append([name, f"{o['seconds']:.2f}", f"{o['features_s']:.3f}", f"{o['fit_score_s']:.2f}",
                     f"{x['seconds']:.1f}", f"{x['features_s']:.1f}", f"{x['fit_score_s']:.2f}",
                     f"{x['seconds'] / max(o['seconds'], 1e-12):.1f}x", f"{o['accuracy']:.4f}", f"{x['accuracy']:.4f}"])
    loop = [["ours (stored features)", f"{v['ours']['median_s']:.2f} {spread_cell(v['ours'])}",
             f"{v['ours']['median_s'] / len(heads):.2f}", repeats["ours"]],
            [f"re-extract ({engine})", f"{v['re-extract']['median_s']:.1f} {spread_cell(v['re-extract'])}",
             f"{v['re-extract']['median_s'] / len(heads):.1f}", repeats["re-extract"]]]
    even = result["break_even_experiments"]
    return [
        table(f"Per head, median seconds (ours: {repeats['ours']} repeats, re-extract: {repeats['re-extract']}); "
              f"{sizes['train']} train / {sizes['test']} test Fashion-MNIST images, MobileNetV2 `last`",
              ["head", "ours total", "ours load", "ours fit+score", "re-extract total", "re-extract extract",
               "re-extract fit+score", "re-extract/ours", "acc ours", "acc re-extract"], rows),
        table(f"Loop over {len(heads)} heads (median s ±half-spread); re-extract/ours = "
              f"{ratio_cell(result['ratio'])} (per-repeat range)",
              ["variant", "loop s", "per head s", "repeats"], loop),
        table("One-off cost of the store: extract once (onnxruntime, batch 32), then read it for every experiment",
              ["images", "extraction s", "images/s", "store pays for itself after"],
              [[one["images"], f"{one['seconds']:.1f}", f"{one['images_per_s']:.1f}",
                f"{even} experiment(s)" if even is not None else "never (re-extracting was not slower)"]]),
    ]


def _notes(engine: str, sizes: dict[str, int], reextract_repeats: int, repeats: int,
           result: dict[str, Any]) -> list[str]:
    return [
        f"Re-extract baseline: a scikit-learn Pipeline whose first step computes the features ({engine}); it "
        f"loads the model and extracts the train and test images again for every head, as embetter pipelines "
        f"do. Its raw images are already in memory (not timed); the stored-feature loop's timing includes "
        f"opening the store and reading the features.",
        f"Both loops run every head on all {sizes['train']} + {sizes['test']} images (nothing is scaled). The "
        f"re-extract loop ran {reextract_repeats} time(s), interleaved with the first {reextract_repeats} of the "
        f"{repeats} stored-feature loops; the paired range covers those.",
        f"Accuracies of the two loops differ by at most {result['accuracy_max_abs_diff']:.4f} (torch vs "
        f"onnxruntime numerics and resizing): the same work was done.",
    ]


# --- entry point --------------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> tuple[dict[str, int], list[str], int]:
    from heads import list_heads

    train, test = _SIZES["quick" if args.quick else "full"]
    sizes = {"train": args.images or train, "test": args.test or test}
    heads = args.heads or list(QUICK_HEADS if args.quick else DEFAULT_HEADS)
    unknown = [name for name in heads if name not in list_heads()]
    if unknown:
        raise SystemExit(f"unknown head(s) {', '.join(unknown)}; choose from {', '.join(list_heads())}")
    return sizes, heads, min(args.reextract_repeats, repeats_for(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the store once, time both loops; return the results document."""
    import torch

    sizes, heads, reextract_repeats = _options(args)
    cores = len(os.sched_getaffinity(0))
    parameters = {"backbone": BACKBONE, "layers": LAYERS, "images_train": sizes["train"], "images_test": sizes["test"],
                  "heads": heads, "reextract_engine": args.reextract_engine, "repeats": repeats_for(args),
                  "reextract_repeats": reextract_repeats, "threads": cores}
    missing = fashion_mnist_missing()
    if missing:
        message = f"skipped: Fashion-MNIST is not available ({missing})"
        print(message, file=sys.stderr)
        return {"parameters": parameters, "skipped": message, "tables": [], "targets": [], "notes": [message]}
    torch.set_num_threads(cores)
    model_path = exported_model(BACKBONES[BACKBONE], LAYERS, args.cache_dir)
    laps: dict[str, dict[str, list]] = {v: {h: [] for h in heads} for v in ("ours", "re-extract")}
    with scratch_dir(args, "heads") as workdir:
        store = workdir / "store"
        one_off = _build_store(model_path, store, sizes["train"], sizes["test"])
        from featurestore import open_store

        layer = open_store(store).layers[0]
        data = _raw_images(store, layer)
        _warm(store, layer, heads, data, args.reextract_engine, model_path)
        variants = {"ours": _ours(store, layer, heads, laps["ours"]),
                    "re-extract": _reextract(data, heads, args.reextract_engine, model_path, laps["re-extract"])}
        stats = _measure(variants, repeats_for(args), reextract_repeats)
    sizes = {"train": len(data["train"][1]), "test": len(data["test"][1])}
    result = _analyse(stats, laps, heads, one_off)
    print(f"  heads loop: re-extract/ours {result['ratio']['value']:.1f}x", file=sys.stderr, flush=True)
    notes = _notes(args.reextract_engine, sizes, reextract_repeats, repeats_for(args), result)
    return {"parameters": dict(parameters, images_train=sizes["train"], images_test=sizes["test"],
                               model=model_path.name), **result,
            "targets": [_target(result, heads, sizes)], "notes": notes,
            "tables": _tables(result, heads, sizes, {"ours": repeats_for(args), "re-extract": reextract_repeats},
                              args.reextract_engine)}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("heads", __doc__.splitlines()[0])
    parser.add_argument("--images", type=_positive_int, help="training images (default: 1000; 60 with --quick)")
    parser.add_argument("--test", type=_positive_int, help="test images (default: 250; 30 with --quick)")
    parser.add_argument("--heads", type=lambda s: [h for h in s.split(",") if h],
                        help=f"comma-separated registered heads (default: {','.join(DEFAULT_HEADS)}; "
                             f"{','.join(QUICK_HEADS)} with --quick)")
    parser.add_argument("--reextract-repeats", type=_positive_int, default=1,
                        help="timed repeats of the (slow) re-extract loop, at most --repeats (default: 1)")
    parser.add_argument("--reextract-engine", choices=("torch", "onnxruntime"), default="torch",
                        help="what the re-extract pipeline runs: torch eager (default) or the exported graph")
    add_cache_dir(parser)
    args = parse_args(parser, argv)
    return run_and_report("heads", args, run)


if __name__ == "__main__":
    raise SystemExit(main())
