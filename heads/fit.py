"""Fit one head on a store and save it (skops + sidecar) for ``featurestore predict``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import cross_val_score, cross_validate
from sklearn.utils._param_validation import InvalidParameterError

from featurestore import open_store
from featurestore.utils import utc_timestamp
from featurestore import __version__

from .bench import BenchConfig, _folds, build_estimator
from .errors import HeadDataError, HeadParamError
from .persist import save_head
from .registry import method_used

__all__ = ["fit_head"]


def fit_head(store_path: str | Path, head: str, output: str | Path, *, layers: list[str] | None = None,
             fusion: str = "concat", params: dict[str, Any] | None = None, seed: int = 0,
             search: bool = False, cv: int = 5, task: str | None = None) -> dict[str, Any]:
    """Fit ``head`` on the store's training rows and save it with its sidecar.

    Parameters
    ----------
    store_path : str or Path
    head : str
        Registered head name.
    output : str or Path
        ``.skops`` file to write (the sidecar goes to ``<output>.json``).
    layers : list of str, optional
        Layers (output or layer names); default the store's last layer.
    fusion : {'concat', 'concat-l2', 'concat-power', 'attention'}, default='concat'
        How several layers are fused.
    params : dict, optional
        Head parameters (``create_head(head, **params)``).
    seed, search, cv
        Seed, small grid search, folds for the score when the store has no test split.
    task : str, optional
        The store task to learn (default: the labels). For a regression task ``head`` names a
        regression head (:func:`heads.list_heads` ``("regression")``) and the scores are R², MAE
        and RMSE; the sidecar records ``task`` and ``task_type`` and names no classes. For a
        multilabel task, a multilabel head, scored by mean average precision, micro and macro F1
        and subset accuracy; the sidecar's ``classes`` are the label names.

    Returns
    -------
    dict
        The sidecar metadata (includes ``scores``).

    Raises
    ------
    HeadDataError
        Too few rows, classes or distinct targets to fit on, or a task of a type no head fits yet.
    """
    store = open_store(store_path)
    names = [store.output_name(n) for n in (layers or [store.layers[-1]])]
    data = store.load(names, view=0, task=task)
    regression = data.task_type == "regression"
    multilabel = data.task_type == "multilabel"
    labelled = np.ones(len(data), dtype=bool) if regression or multilabel else data.y >= 0
    if labelled.sum() < 2:
        raise HeadDataError(f"store {store_path} has no labelled rows to fit on")
    test = labelled & (data.splits == "test")
    train = labelled & ~test
    if regression and (train.sum() < 2 or np.ptp(data.y[train]) == 0):
        raise HeadDataError(f"task {task!r} of store {store_path} has fewer than 2 distinct training targets; "
                            "attach more values with `featurestore label`")
    if multilabel and not (data.y[train].min(axis=0) < data.y[train].max(axis=0)).any():
        raise HeadDataError(f"task {task!r} of store {store_path} gives every training row the same labels; "
                            "attach label sets that differ with `featurestore label`")
    present = np.unique(data.y[train]) if data.task_type == "classification" else np.arange(2)
    if len(present) < 2:
        raise HeadDataError(f"store {store_path} has training rows of {len(present)} class(es) "
                            f"({', '.join(str(data.classes[c]) for c in present) or 'none'}); a head needs two or "
                            "more: extract images of other classes into it")
    X = data.matrix(names).astype(np.float32, copy=False)
    blocks = [data.X[n].reshape(len(data), -1).shape[1] for n in names]
    estimator = build_estimator(head, fusion if len(names) > 1 else "none", blocks, seed, search,
                                task_type=data.task_type, **(params or {}))
    start = time.perf_counter()
    try:
        estimator.fit(X[train], data.y[train])
    except InvalidParameterError as exc:  # scikit-learn checks its estimators' parameters when fitting
        raise HeadParamError(f"head {head}: {str(exc).splitlines()[0]} (check --param)") from None
    fit_seconds = time.perf_counter() - start
    if multilabel:
        scores = _multilabel_scores(estimator, X, data.y, train, test, cv, seed, lambda: build_estimator(
            head, fusion if len(names) > 1 else "none", blocks, seed, search, task_type="multilabel", **(params or {})))
    elif regression:
        scores = _regression_scores(estimator, X, data.y, train, test, cv, seed, lambda: build_estimator(
            head, fusion if len(names) > 1 else "none", blocks, seed, search, task_type="regression", **(params or {})))
    elif test.any():
        scores = {"evaluation": "test split", "accuracy": float(accuracy_score(data.y[test], estimator.predict(X[test])))}
    else:
        folds = cross_val_score(build_estimator(head, fusion if len(names) > 1 else "none", blocks, seed, search,
                                                **(params or {})), X[train], data.y[train], cv=cv)
        scores = {"evaluation": f"{cv}-fold CV", "accuracy": float(folds.mean())}
    final = estimator["head"] if len(names) > 1 else estimator
    metadata = {
        "featurestore": __version__,
        "store": str(store_path),
        "store_fingerprint": store.fingerprint,
        "model_sha256": store.config.model_sha256,
        "backbone": store.spec.backbone,
        "layers": names,
        "blocks": blocks,
        "fusion": fusion if len(names) > 1 else "none",
        "head": head,
        "params": params or {},
        "method": method_used(final),
        **({} if regression else {"classes": [str(name) for name in data.classes]}),
        **({} if task is None else {"task": task, "task_type": data.task_type}),
        "trained_rows": int(train.sum()),
        "fit_seconds": fit_seconds,
        "scores": scores,
        "created": utc_timestamp(),
    }
    save_head(estimator, output, metadata)
    return metadata


def _multilabel_scores(estimator, X: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray, cv: int,
                       seed: int, fresh) -> dict[str, Any]:
    """Mean average precision, micro/macro F1 and subset accuracy on the test split, else by ``cv``-fold CV."""
    from .bench import _score_multilabel

    if test.any():
        return {"evaluation": "test split", **_score_multilabel(estimator, X[test], Y[test])[0]}
    folds = _folds(Y[train], BenchConfig(cv=cv, seed=seed))
    rows = np.flatnonzero(train)
    scores = [_score_multilabel(fresh().fit(X[rows[a]], Y[rows[a]]), X[rows[b]], Y[rows[b]])[0] for a, b in folds]
    return {"evaluation": f"{cv}-fold CV", **{k: float(np.mean([s[k] for s in scores])) for k in scores[0]}}


def _regression_scores(estimator, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, cv: int,
                       seed: int, fresh) -> dict[str, Any]:
    """R², MAE and RMSE on the test split, else by ``cv``-fold CV (folds stratified on the target's bins)."""
    if test.any():
        predicted = estimator.predict(X[test])
        return {"evaluation": "test split", "r2": float(r2_score(y[test], predicted)),
                "mae": float(mean_absolute_error(y[test], predicted)),
                "rmse": float(np.sqrt(mean_squared_error(y[test], predicted)))}
    folds = _folds(y[train], BenchConfig(cv=cv, seed=seed))
    result = cross_validate(fresh(), X[train], y[train], cv=folds,
                            scoring=("r2", "neg_mean_absolute_error", "neg_root_mean_squared_error"))
    return {"evaluation": f"{cv}-fold CV", "r2": float(result["test_r2"].mean()),
            "mae": float(-result["test_neg_mean_absolute_error"].mean()),
            "rmse": float(-result["test_neg_root_mean_squared_error"].mean())}
