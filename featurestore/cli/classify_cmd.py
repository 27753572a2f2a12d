"""``featurestore classify MODEL.onnx IMAGE...``: top-k classes from a model's ``logits`` output.

A quick check that an export carries the right weights and preprocessing.
"""

from __future__ import annotations

import argparse

import numpy as np

from .._config import add_arguments, from_arguments
from ..decode import decode_image
from ..errors import MissingOutputError
from ..head_config import ClassifyConfig
from ..session import FeatureModel


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="print the top classes of images from a model exported with logits")
    p.add_argument("model", help="ONNX file exported with `--layers logits`")
    p.add_argument("images", nargs="+", help="image files")
    add_arguments(p, ClassifyConfig)
    return p


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run(args: argparse.Namespace) -> int:
    config = from_arguments(ClassifyConfig, args)
    model = FeatureModel(args.model, device=config.device)
    if not any(layer.name == "logits" for layer in model.spec.layers):
        raise MissingOutputError(f"{args.model} has no `logits` output; re-export it with `--layers logits`")
    names = model.spec.class_names
    batch = np.stack([decode_image(path, model.spec.preprocessing) for path in args.images])
    probs = softmax(model.run(batch, ["logits"])["logits"])
    for path, p in zip(args.images, probs):
        print(path)
        for index in np.argsort(-p)[: config.top]:
            label = names[index] if names else str(index)
            print(f"  {index:>5}  {p[index]:6.3f}  {label}")
    return 0
