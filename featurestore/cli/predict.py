"""Classify new images with an exported model and a fitted head: decode, extract, fuse, predict."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from heads.checks import check_head_model, check_head_width
from heads.package import CLASSES_KEY, HEAD_KEY
from heads.persist import load_head, read_sidecar

from ..decode import decode_or_error
from ..errors import MissingOutputError
from ..session import FeatureModel
from ..sources import content_key, open_source

__all__ = ["predict_source", "predict_packaged"]


def _decode(item, prep):
    try:
        data = item.read()
    except OSError as exc:  # one unreadable file never stops a batch job
        return None, None, f"{type(exc).__name__}: {exc}"
    image, error = decode_or_error(data, prep)
    if error is not None:
        return None, None, f"{error.cause}: {error.message}"
    return content_key(data), image, None


def predict_source(model_path: str | Path, head_path: str | Path, source: Any, output: str | Path, *,
                   device: str = "auto", batch_size: int = 32) -> dict[str, int]:
    """Write ``path,key,label,confidence,error,prob_<class>...`` for every image of ``source``
    (``path,key,prediction,error`` for a regression head).

    The head's sidecar must name this model's sha256 (the store the head was fitted on was
    extracted with it); pickles and non-skops files are refused before loading.

    Returns
    -------
    dict
        Counts: ``predicted`` and ``failed``.
    """
    head_path = Path(head_path)
    metadata = read_sidecar(head_path)
    model = FeatureModel(model_path, device=device)
    check_head_model(model.path, model.outputs, metadata, head_path)
    estimator, metadata = load_head(head_path)
    layers = list(metadata["layers"])
    check_head_width(estimator, [model.spec.layer(name).dim for name in layers], metadata, head_path, model.path)

    if metadata.get("task_type") == "regression":
        def regress(images: np.ndarray) -> np.ndarray:
            feats = model.run(images, layers)
            return estimator.predict(np.concatenate([feats[name].reshape(len(images), -1) for name in layers], axis=1))

        return _write_values(model, regress, source, output, batch_size)
    if metadata.get("task_type") == "multilabel":
        from heads.multilabel import label_probabilities

        def label_sets(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            feats = model.run(images, layers)
            X = np.concatenate([feats[name].reshape(len(images), -1) for name in layers], axis=1)
            return estimator.predict(X), label_probabilities(estimator, X)

        return _write_predictions(model, label_sets, list(metadata["classes"]), source, output, batch_size,
                                  multilabel=True)

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        feats = model.run(images, layers)
        X = np.concatenate([feats[name].reshape(len(images), -1) for name in layers], axis=1)
        return estimator.predict(X), estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None

    return _write_predictions(model, classify, list(metadata["classes"]), source, output, batch_size)


def predict_packaged(classifier_path: str | Path, source: Any, output: str | Path, *, device: str = "auto",
                     batch_size: int = 32) -> dict[str, int]:
    """:func:`predict_source` with a file from ``featurestore package`` (backbone and head in one graph).

    Raises
    ------
    MissingOutputError
        The file is an exported backbone without a packaged head.
    """
    model = FeatureModel(classifier_path, device=device)
    meta = model.session.get_modelmeta().custom_metadata_map
    if CLASSES_KEY not in meta:
        raise MissingOutputError(f"{classifier_path} has no packaged head (no {CLASSES_KEY} metadata); give "
                                 "MODEL HEAD SOURCE, or package the head with `featurestore package`")
    has_probabilities = json.loads(meta[HEAD_KEY]).get("probabilities", True)
    multilabel = json.loads(meta[HEAD_KEY]).get("task_type") == "multilabel"
    if [output.name for output in model.session.get_outputs()] == ["prediction"]:  # a regression head
        return _write_values(model, lambda images: model.run(images, ["prediction"])["prediction"].reshape(-1),
                             source, output, batch_size)

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        label, probabilities = model.run(images, ["label", "probabilities"]).values()
        return label, probabilities if has_probabilities else None

    return _write_predictions(model, classify, json.loads(meta[CLASSES_KEY]), source, output, batch_size,
                              multilabel=multilabel)


def _write_predictions(model: FeatureModel, classify: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
                       classes: list[str], source: Any, output: str | Path, batch_size: int,
                       multilabel: bool = False) -> dict[str, int]:
    """Decode ``source`` in batches, classify each batch, write one CSV row per image (failures too).

    With ``multilabel`` the ``label`` column is the predicted label set (``a|b``, empty for none),
    ``confidence`` is empty and ``prob_<label>`` is each label's probability."""
    items = list(open_source(source))
    counts = {"predicted": 0, "failed": 0}
    with open(output, "w", newline="") as fh, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        writer = csv.writer(fh)
        writer.writerow(["path", "key", "label", "confidence", "error"] + [f"prob_{c}" for c in classes])
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            decoded = list(pool.map(lambda it: _decode(it, model.spec.preprocessing), chunk))
            good = [i for i, (_, image, _) in enumerate(decoded) if image is not None]
            probs = labels = None
            if good:
                labels, probs = classify(np.stack([decoded[i][1] for i in good]))
            row_of = {i: r for r, i in enumerate(good)}
            for i, (item, (key, _, error)) in enumerate(zip(chunk, decoded)):
                if error is not None:
                    writer.writerow([item.path, "", "", "", error] + [""] * len(classes))
                    counts["failed"] += 1
                    continue
                r = row_of[i]
                p = probs[r] if probs is not None else None
                if multilabel:
                    writer.writerow([item.path, key, "|".join(c for c, on in zip(classes, labels[r]) if on), "", ""]
                                    + [f"{v:.6f}" for v in p])
                    counts["predicted"] += 1
                    continue
                writer.writerow([item.path, key, classes[int(labels[r])],
                                 f"{float(p.max()):.6f}" if p is not None else "", ""]
                                + ([f"{v:.6f}" for v in p] if p is not None else [""] * len(classes)))
                counts["predicted"] += 1
    return counts


def _write_values(model: FeatureModel, regress: Callable[[np.ndarray], np.ndarray], source: Any, output: str | Path,
                  batch_size: int) -> dict[str, int]:
    """As :func:`_write_predictions`, for a regression head: ``path,key,prediction,error``."""
    items = list(open_source(source))
    counts = {"predicted": 0, "failed": 0}
    with open(output, "w", newline="") as fh, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        writer = csv.writer(fh)
        writer.writerow(["path", "key", "prediction", "error"])
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            decoded = list(pool.map(lambda it: _decode(it, model.spec.preprocessing), chunk))
            good = [i for i, (_, image, _) in enumerate(decoded) if image is not None]
            values = regress(np.stack([decoded[i][1] for i in good])) if good else None
            row_of = {i: r for r, i in enumerate(good)}
            for i, (item, (key, _, error)) in enumerate(zip(chunk, decoded)):
                if error is not None:
                    writer.writerow([item.path, "", "", error])
                    counts["failed"] += 1
                    continue
                writer.writerow([item.path, key, repr(float(values[row_of[i]])), ""])
                counts["predicted"] += 1
    return counts
