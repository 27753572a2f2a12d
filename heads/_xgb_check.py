"""Sanity checks on a loaded XGBoost booster before it is used to predict.

XGBoost loads a hand-edited model whose split feature or child index is out of range
and then crashes the process in ``predict``. :func:`check_booster` walks the trees of
the booster's JSON form and refuses such a model with a typed error instead.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xgboost as xgb

from .errors import HeadModelFileError

__all__ = ["check_booster"]


def check_booster(booster: xgb.Booster, *, n_classes: int, where: str) -> None:
    """Raise if the booster's class count or tree indices are inconsistent.

    Parameters
    ----------
    booster : xgboost.Booster
        A freshly loaded booster.
    n_classes : int
        Number of class labels stored with it.
    where : str
        The file it came from, for messages.

    Raises
    ------
    HeadModelFileError
        If the class count, booster type or any tree index is out of range.
    """
    learner = json.loads(booster.save_raw("json"))["learner"]
    params = learner["learner_model_param"]
    n_features = int(params["num_feature"])
    expected = 0 if n_classes == 2 else n_classes
    if int(params["num_class"]) != expected:
        raise HeadModelFileError(
            f"{where!r}: booster has num_class={params['num_class']} but {n_classes} class "
            "labels are stored with it; the file was altered"
        )
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise HeadModelFileError(f"{where!r}: booster type {gbm.get('name')!r} is not gbtree")
    for i, tree in enumerate(gbm["model"]["trees"]):
        problem = _tree_problem(tree, n_features)
        if problem:
            raise HeadModelFileError(f"{where!r}: tree {i} is inconsistent ({problem})")


def _tree_problem(tree: dict[str, Any], n_features: int) -> str | None:
    n_nodes = int(tree["tree_param"]["num_nodes"])
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    split = np.asarray(tree["split_indices"], dtype=np.int64)
    if not len(left) == len(right) == len(split) == len(tree["split_conditions"]) == n_nodes:
        return "node arrays differ in length from num_nodes"
    internal = left != -1
    for name, child in (("left", left), ("right", right)):
        bad = (child < -1) | (child >= n_nodes) | (child == 0) | ((child == -1) != ~internal)
        if bad.any():
            return f"{name} child index out of range at node {int(np.argmax(bad))}"
    bad = internal & ((split < 0) | (split >= n_features))
    if bad.any():
        return f"split feature index out of range at node {int(np.argmax(bad))}"
    return None
