"""``bench``: the grid stores x layers x fusion x heads, scored side by side on stored features.

Each store contributes one cell per stored layer (no fusion) and, when it holds several
layers, one cell per fusion of all its layers. Evaluation uses the stores' ``test`` split
when they have one (fit on the other labelled rows), else stratified k-fold CV. Nothing is
decoded or inferred: a bench only reads features.

With ``BenchConfig(task=NAME)`` the targets are a task's (:meth:`featurestore.FeatureStore.load`
with ``task``): a classification task is benched as the labels are; a regression task with the
regression heads (:func:`heads.list_heads` ``("regression")``), scored by R², MAE and RMSE, its CV
folds stratified on the target's quantile bins, ``--select`` choosing by R².
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, log_loss,
                             mean_absolute_error, mean_squared_error, r2_score)
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from featurestore import open_store, resolve_layers, store_names
from featurestore.bench_config import DEFAULT_HEADS, DEFAULT_REGRESSION_HEADS, FUSIONS, BenchConfig
from featurestore.errors import OptionsError

from .errors import HeadDataError
from .joined import join_store_data
from .store_data import StoreData
from .registry import create_head, list_heads, method_used

__all__ = ["DEFAULT_HEADS", "FUSIONS", "BenchConfig", "Cell", "StoreData", "load_store_data", "plan_cells",
           "build_estimator", "run_cell", "run_bench", "select_cell"]

#: How many wrong predictions each cell keeps for the report (the most confident first).
WRONG_KEPT = 24
#: The metric each task type's cells are ranked and selected by (higher is better).
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2", "multilabel": "map"}


@dataclass(frozen=True)
class Cell:
    """One experiment: a store, its layers, a fusion (``none`` for one layer) and a head."""

    store: str
    layers: tuple[str, ...]
    fusion: str
    head: str

    @property
    def layer_label(self) -> str:
        return self.layers[0] if len(self.layers) == 1 else f"{self.fusion}({len(self.layers)} layers)"


@dataclass
class CellResult:
    cell: Cell
    metrics: dict[str, float]
    method: str
    fit_seconds: float
    predict_ms_per_1000: float
    n_train: int
    n_test: int
    evaluation: str
    attention: list[float] | None = None
    confusion: list[list[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the most confidently wrong held-out rows (at most :data:`WRONG_KEPT`): ``row`` (index into
    #: the store's rows), ``true``, ``predicted`` (class indices), ``confidence`` (the head's
    #: probability of its prediction; None for a head without probabilities)
    wrong: list[dict[str, Any]] | None = None

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV/JSON."""
        return {"store": self.cell.store, "layers": "+".join(self.cell.layers), "layer": self.cell.layer_label,
                "fusion": self.cell.fusion, "head": self.cell.head, "method": self.method,
                **self.metrics, "fit_seconds": self.fit_seconds, "predict_ms_per_1000": self.predict_ms_per_1000,
                "n_train": self.n_train, "n_test": self.n_test, "evaluation": self.evaluation}


def load_store_data(paths: Sequence[str | Path], layers: Sequence[str] | None = None,
                    use_views: bool = False, task: str | None = None) -> list[StoreData]:
    """Load the clean-view, labelled rows of each store (every layer, or only ``layers``), and with
    ``use_views`` their augmented views (stores extracted with ``--views``).

    ``layers`` are output or layer names, resolved as :func:`featurestore.resolve_layers`
    does (a name in none of the stores, or a store holding none of them, is an error). With
    ``task``, the rows that have a value for that task, with its targets.
    """
    return load_task_data(paths, layers, use_views, [task])[0]


def load_task_data(paths: Sequence[str | Path], layers: Sequence[str] | None = None, use_views: bool = False,
                   tasks: Sequence[str | None] = (None,)) -> list[list[StoreData]]:
    """:func:`load_store_data` for several tasks, each store's features read once for all of them.

    Returns
    -------
    list of list of StoreData
        Per task (in order; None: the labels), per store.
    """
    out: list[list[StoreData]] = [[] for _ in tasks]
    stores = [open_store(path) for path in paths]
    for name, path, store, names in zip(store_names(paths), paths, stores, resolve_layers(stores, layers or None)):
        data = store.load(names, view=0)  # the features, once for every task
        selected = store.rows(None, 0)
        for i, task in enumerate(tasks):
            if task is None:
                y, classes, task_type, present = data.y, data.classes, "classification", data.y >= 0
            else:
                targets = store.targets(task)
                y, classes, task_type = targets.y[selected], targets.classes, targets.type
                present = targets.present[selected]
            out[i].append(_task_rows(name, path, store, names, data, use_views, task, task_type, y, classes,
                                     present))
    return out


def _task_rows(name: str, path, store, names: Sequence[str], data, use_views: bool, task: str | None, task_type: str,
               y: np.ndarray, classes: tuple[str, ...], labelled: np.ndarray) -> StoreData:
    """One store's rows that have a target for ``task``, checked to be enough to fit a head on."""
    if task_type not in PRIMARY_METRIC:
        raise HeadDataError(f"task {task!r} of store {path} is {task_type}; bench knows classification, "
                            "regression and multilabel tasks: choose another --task")
    y = y[labelled]
    if labelled.sum() < 2:
        raise HeadDataError(f"store {path} has fewer than 2 labelled rows; a bench needs labels")
    if task_type == "regression" and np.ptp(y) == 0:
        raise HeadDataError(f"task {task!r} of store {path} has one value on every row; a regression needs "
                            "targets that vary: attach more values with `featurestore label`")
    if task_type == "multilabel" and not (y.min(axis=0) < y.max(axis=0)).any():
        raise HeadDataError(f"task {task!r} of store {path} gives every row the same labels; a multilabel head "
                            "needs a label present on some rows and absent on others")
    if task_type == "classification" and len(np.unique(y)) < 2:
        raise HeadDataError(f"store {path} has labelled rows of one class only; a head needs two or more: "
                            "extract images of other classes into it")
    features = data.take(labelled)
    if task is not None:
        features = features.with_targets(task, task_type, y, classes)
    features = replace(features, X={n: np.asarray(v, dtype=np.float32) for n, v in features.X.items()})
    return StoreData(
        name=name, path=str(path), backbone=store.spec.backbone, fingerprint=store.fingerprint,
        random_init=store.spec.weights.random_init, features=features, weights_source=store.spec.weights.source,
        augmented=_augmented_views(store, names, features.keys) if use_views else None,
    )


def _augmented_views(store, names: Sequence[str], keys: np.ndarray):
    """The stored augmented views (1..views) of the rows ``keys`` as one FeatureSet, view 1 of every
    row first; None when the store holds none."""
    views = int(store.config.views)
    if views == 0:
        return None
    rows = np.concatenate([store.rows_for_keys(keys.tolist(), view=v) for v in range(1, views + 1)])
    part = store.load(names, rows=rows)
    return replace(part, X={n: np.asarray(v, dtype=np.float32) for n, v in part.X.items()})


def plan_cells(stores: Sequence[StoreData], config: BenchConfig) -> list[Cell]:
    """Every cell of the grid, in report order."""
    cells = []
    for store in stores:
        groups: list[tuple[tuple[str, ...], str]] = []
        if (config.per_layer or len(store.layers) == 1) and not store.joined:  # a joined store's layers ran alone
            groups += [((name,), "none") for name in store.layers]
        if len(store.layers) > 1:  # attention fusion learns from class labels: classification only
            groups += [(tuple(store.layers), fusion) for fusion in config.fusions
                       if store.task_type == "classification" or fusion != "attention"]
        heads = _heads_for(config.heads, store.task_type)
        cells += [Cell(store.name, layers, fusion, head) for layers, fusion in groups for head in heads]
    return cells


def _heads_for(heads: tuple[str, ...], task_type: str) -> tuple[str, ...]:
    """The heads a store's cells run: every one of its task type's for ``all``, the regression defaults in
    place of the classification defaults."""
    if heads == ("all",):
        return tuple(list_heads(task_type))
    if task_type == "regression" and tuple(heads) == DEFAULT_HEADS:
        return DEFAULT_REGRESSION_HEADS
    return tuple(heads)


def build_estimator(head: str, fusion: str, blocks: Sequence[int], seed: int = 0, search: bool = False,
                    task_type: str = "classification", **head_params: Any):
    """A fresh estimator for one cell: ``[fusion ->] head`` (a head of ``task_type``), optionally in a small
    grid search."""
    from .attention import AttentionFusion
    from .fusion import ConcatFusion
    from .registry import param_grid

    estimator = create_head(head, task_type, **head_params)
    if search:
        from sklearn.model_selection import GridSearchCV

        estimator = GridSearchCV(estimator, param_grid(head, task_type), cv=3, n_jobs=1)
    if fusion == "none":
        return estimator
    if fusion == "attention":
        fuser = AttentionFusion(blocks=list(blocks), random_state=seed)
    else:  # concat, concat-l2, concat-power
        fuser = ConcatFusion(blocks=list(blocks), norm={"concat": "standardize"}.get(fusion, fusion[len("concat-"):]))
    return Pipeline([("fusion", fuser), ("head", estimator)])


def _subsample(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    index = np.arange(len(y))
    if limit is None or len(y) <= limit:
        return index
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(index, train_size=limit, stratify=_strata(y, 2), random_state=seed)
    return np.sort(keep)


def _strata(y: np.ndarray, n_splits: int) -> np.ndarray | None:
    """What folds are stratified on: the classes, or a regression target's quantile bins (at most 10, each
    with at least ``n_splits`` rows); None where no stratification is possible."""
    if y.ndim > 1:  # multilabel: no stratification (scikit-learn has none for label sets)
        return None
    if y.dtype.kind != "f":
        return y
    bins = min(10, len(y) // max(n_splits, 1))
    if bins < 2:
        return None
    edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
    strata = np.searchsorted(edges, y, side="right")
    return strata if np.bincount(strata).min() >= n_splits else None


def _folds(y: np.ndarray, config: BenchConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """``config.cv`` folds of the rows ``y``, stratified where :func:`_strata` allows."""
    strata = _strata(y, config.cv)
    if strata is None:
        return list(KFold(n_splits=config.cv, shuffle=True, random_state=config.seed).split(y))
    return list(StratifiedKFold(n_splits=config.cv, shuffle=True, random_state=config.seed)
                .split(np.zeros((len(y), 1)), strata))


def _score_regression(estimator, X_test: np.ndarray, y_test: np.ndarray,
                      views: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray, float]:
    """R², MAE and RMSE of ``estimator`` on the test rows (with ``views``, its predictions averaged over the
    clean row and its views), the predictions and the seconds they took."""
    start = time.perf_counter()
    predicted = estimator.predict(X_test) if views is None else \
        np.mean([estimator.predict(part) for part in (X_test, *views)], axis=0)
    seconds = time.perf_counter() - start
    metrics = {"r2": float(r2_score(y_test, predicted)), "mae": float(mean_absolute_error(y_test, predicted)),
               "rmse": float(np.sqrt(mean_squared_error(y_test, predicted)))}
    return metrics, np.asarray(predicted, dtype=np.float64), seconds


def _label_ap(Y: np.ndarray, P: np.ndarray) -> list[float | None]:
    """Each label's average precision (None for a label with no positive row among these)."""
    from sklearn.metrics import average_precision_score

    return [float(average_precision_score(Y[:, k], P[:, k])) if Y[:, k].any() else None for k in range(Y.shape[1])]


def _score_multilabel(estimator, X_test: np.ndarray, Y_test: np.ndarray,
                      views: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray, float, np.ndarray]:
    """Mean average precision (over the labels with a positive row), micro and macro F1 and subset accuracy;
    the predicted label sets, the seconds they took and the label probabilities."""
    from .multilabel import label_probabilities

    start = time.perf_counter()
    P = label_probabilities(estimator, X_test) if views is None else \
        np.mean([label_probabilities(estimator, part) for part in (X_test, *views)], axis=0)
    predicted = (np.round(P * 1e6) > 5e5).astype(Y_test.dtype)  # as the packaged file decides
    seconds = time.perf_counter() - start
    ap = [v for v in _label_ap(Y_test, P) if v is not None]
    metrics = {"map": float(np.mean(ap)) if ap else float("nan"),
               "micro_f1": float(f1_score(Y_test, predicted, average="micro", zero_division=0)),
               "macro_f1": float(f1_score(Y_test, predicted, average="macro", zero_division=0)),
               "subset_accuracy": float(accuracy_score(Y_test, predicted))}
    return metrics, predicted, seconds, P


def _score(estimator, X_test: np.ndarray, y_test: np.ndarray, n_classes: int,
           views: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray, float, np.ndarray | None]:
    """Metrics of ``estimator`` on the test rows; with ``views`` (``(views, rows, D)``), its
    probabilities (or decision scores) averaged over the clean row and its views. Also returns the
    predictions, the seconds they took and each prediction's probability (None without ``predict_proba``)."""
    start = time.perf_counter()
    if views is None:
        predicted = estimator.predict(X_test)
    else:
        score = estimator.predict_proba if hasattr(estimator, "predict_proba") else estimator.decision_function
        mean = np.mean([score(part) for part in (X_test, *views)], axis=0)
        predicted = estimator.classes_[np.argmax(mean, axis=1)]
    predict_seconds = time.perf_counter() - start
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
        "macro_f1": float(f1_score(y_test, predicted, average="macro")),
        "log_loss": float("nan"),
    }
    confidence = None
    if hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(X_test) if views is None else \
            np.mean([estimator.predict_proba(part) for part in (X_test, *views)], axis=0)
        if proba.shape[1] == n_classes:
            proba = np.clip(proba, 1e-15, 1.0)
            proba /= proba.sum(axis=1, keepdims=True)
            metrics["log_loss"] = float(log_loss(y_test, proba, labels=np.arange(n_classes)))
        classes = np.asarray(estimator.classes_)
        if proba.shape[1] == len(classes):
            column = np.clip(np.searchsorted(classes, predicted), 0, len(classes) - 1)
            confidence = proba[np.arange(len(predicted)), column]
    return metrics, predicted, predict_seconds, confidence


def run_cell(cell: Cell, store: StoreData, config: BenchConfig) -> CellResult:
    """Fit and score one cell: on the test split; with ``config.select`` by k-fold CV on the
    training split only; without a test split by k-fold CV on every row."""
    y = store.y
    if store.test is not None and not config.select:
        folds = [(np.flatnonzero(~store.test), np.flatnonzero(store.test))]
        evaluation = "test split"
    elif store.test is not None:
        train = np.flatnonzero(~store.test)
        folds = [(train[a], train[b]) for a, b in _folds(y[train], config)]
        evaluation = f"{config.cv}-fold CV on the training split"
    else:
        folds = _folds(y, config)
        evaluation = f"{config.cv}-fold CV"
    return _fit_and_score(cell, store, config, folds, evaluation)


def _fit_and_score(cell: Cell, store: StoreData, config: BenchConfig, folds: list[tuple[np.ndarray, np.ndarray]],
                   evaluation: str) -> CellResult:
    X = np.concatenate([store.X[name] for name in cell.layers], axis=1)
    blocks = [store.X[name].shape[1] for name in cell.layers]
    y = store.y
    n_classes = len(store.classes)
    regression = store.task_type == "regression"
    multilabel = store.task_type == "multilabel"
    scores_all = np.zeros(y.shape, dtype=np.float64) if multilabel else None
    views = None  # (views, rows, D): every augmented view of every row, when the bench uses them
    if config.views != "clean":
        views = store.augmented_views(cell.layers)
    fit_seconds = predict_seconds = 0.0
    scores: list[dict[str, float]] = []
    predicted_all = np.empty_like(y)
    confidence_all: np.ndarray | None = np.full(len(y), np.nan)
    tested = np.zeros(len(y), dtype=bool)
    estimator = None
    n_train = 0
    for train, test in folds:
        train = train[_subsample(y[train], config.max_train_rows, config.seed)]
        n_train = len(train)
        estimator = build_estimator(cell.head, cell.fusion, blocks, config.seed, config.search,
                                    task_type=store.task_type)
        X_train, y_train = X[train], y[train]
        if views is not None and config.views in ("train", "both"):  # the views as extra training rows
            X_train = np.concatenate([X_train, *views[:, train]])
            y_train = np.concatenate([y_train] * (1 + len(views)))
        n_train = len(y_train)
        start = time.perf_counter()
        estimator.fit(X_train, y_train)
        fit_seconds += time.perf_counter() - start
        test_views = views[:, test] if views is not None and config.views in ("average", "both") else None
        if regression:
            metrics, predicted, seconds = _score_regression(estimator, X[test], y[test], test_views)
            confidence = None
        elif multilabel:
            metrics, predicted, seconds, scores_all[test] = _score_multilabel(estimator, X[test], y[test], test_views)
            confidence = None
        else:
            metrics, predicted, seconds, confidence = _score(estimator, X[test], y[test], n_classes, test_views)
        predict_seconds += seconds
        scores.append(metrics)
        predicted_all[test] = predicted
        if confidence is None:
            confidence_all = None
        elif confidence_all is not None:
            confidence_all[test] = confidence
        tested[test] = True
    n_test = int(tested.sum())
    attention = None
    if cell.fusion == "attention" and estimator is not None:
        attention = [float(w) for w in estimator.named_steps["fusion"].attention_weights_]
    return CellResult(
        cell=cell,
        metrics={k: float(np.mean([s[k] for s in scores])) for k in scores[0]},
        method=method_used(estimator["head"] if cell.fusion != "none" else estimator),
        fit_seconds=fit_seconds / len(folds),
        predict_ms_per_1000=predict_seconds * 1e6 / max(n_test, 1),
        n_train=n_train,
        n_test=n_test // len(folds),
        evaluation=evaluation,
        attention=attention,
        confusion=None if store.task_type != "classification" else confusion_matrix(
            y[tested], predicted_all[tested], labels=np.arange(n_classes)).tolist(),
        wrong=None if store.task_type != "classification" else _most_confidently_wrong(
            y, predicted_all, tested, confidence_all),
        extra=_scatter(y, predicted_all, tested) if regression else
        {"label_ap": _label_ap(y[tested], scores_all[tested])} if multilabel else {},
    )


def _scatter(y: np.ndarray, predicted: np.ndarray, tested: np.ndarray, limit: int = 2000) -> dict[str, Any]:
    """At most ``limit`` held-out ``(true, predicted)`` pairs, evenly spaced over the rows, for the report."""
    rows = np.flatnonzero(tested)
    rows = rows[np.linspace(0, len(rows) - 1, min(limit, len(rows))).astype(int)] if len(rows) else rows
    return {"true": y[rows].tolist(), "predicted": predicted[rows].tolist()}


def _most_confidently_wrong(y: np.ndarray, predicted: np.ndarray, tested: np.ndarray,
                            confidence: np.ndarray | None) -> list[dict[str, Any]]:
    """The held-out rows predicted wrongly, the most confident first (in row order without probabilities)."""
    rows = np.flatnonzero(tested & (predicted != y))
    if confidence is not None:
        rows = rows[np.argsort(-confidence[rows], kind="stable")]
    return [{"row": int(i), "true": int(y[i]), "predicted": int(predicted[i]),
             "confidence": None if confidence is None else float(confidence[i])} for i in rows[:WRONG_KEPT]]


def run_bench(stores: Sequence[str | Path], output: str | Path, config: BenchConfig | None = None,
              log=print) -> dict[str, Any]:
    """Run the grid over ``stores`` and write the report into ``output``.

    ``config.task`` may name several tasks, comma-separated (``"label,angle"``): each store's features
    are then read once, each task's grid runs on them and writes its report into ``output/<task>``,
    and ``output`` gets a summary (``results.json``, ``report.md``, ``report.html``) linking them.

    Returns
    -------
    dict
        The ``results.json`` document (with several tasks: ``tasks``, each task's document by name).

    Raises
    ------
    OptionsError
        ``config.task`` names a task twice or names an empty one.
    """
    config = config or BenchConfig()
    tasks = [name.strip() for name in config.task.split(",")] if config.task else [None]
    if config.task and (not all(tasks) or len(set(tasks)) != len(tasks)):
        raise OptionsError(f"--task {config.task!r}: name each task once, separated by commas")
    started = time.perf_counter()
    loaded = load_task_data(stores, config.layers, use_views=config.views != "clean", tasks=tasks)
    load_seconds = time.perf_counter() - started
    if len(tasks) == 1:
        return _bench_task(loaded[0], Path(output), config, log, started, load_seconds)
    documents = {}
    for task, data in zip(tasks, loaded):
        log(f"bench: task {task} ({data[0].task_type})")
        documents[task] = _bench_task(data, Path(output) / task, replace(config, task=task), log, started,
                                      load_seconds)
    from .report_tasks import write_tasks_summary

    return write_tasks_summary(Path(output), documents, load_seconds=load_seconds,
                               total_seconds=time.perf_counter() - started)


def _bench_task(data: list[StoreData], output: Path, config: BenchConfig, log, started: float,
                load_seconds: float) -> dict[str, Any]:
    """Run one task's grid over its loaded stores and write its report into ``output``."""
    from joblib import Parallel, delayed

    from .report import write_report

    task_types = {d.task_type for d in data}
    if len(task_types) > 1:
        raise HeadDataError(f"task {config.task!r} has different types in the stores ({', '.join(sorted(task_types))}); "
                            "bench them separately")
    task_type = data[0].task_type
    metric = PRIMARY_METRIC[task_type]
    config = replace(config, heads=_heads_for(config.heads, task_type))
    if config.join and len(data) > 1:
        data.append(join_store_data(data))
    by_name = {d.name: d for d in data}
    cells = plan_cells(data, config)
    if config.shots:  # the few-shot protocol: every cell on seeded draws of k training rows per class
        from .fewshot import run_shots

        if task_type != "classification":
            raise OptionsError(f"--shots draws training images per class, and task {config.task!r} is {task_type}: "
                               "bench it without --shots")
        return run_shots(data, cells, config, output, log, started=started, load_seconds=load_seconds,
                         fit_and_score=_fit_and_score, make_result=CellResult)
    log(f"bench: {len(cells)} cells ({len(data)} stores, heads {', '.join(config.heads)}); "
        f"features loaded in {load_seconds:.2f} s")
    n_jobs = config.n_jobs or os.cpu_count() or 1
    results = []
    finished = Parallel(n_jobs=n_jobs, verbose=0, return_as="generator")(
        delayed(run_cell)(cell, by_name[cell.store], config) for cell in cells)
    for done, result in enumerate(finished, start=1):  # in cell order, as soon as each is ready
        results.append(result)
        cell = result.cell
        log(f"  [{done}/{len(cells)}] {cell.store} / {cell.layer_label} / {cell.head}: "
            f"{metric} {result.metrics[metric]:.4f}, fit {result.fit_seconds:.1f} s "
            f"({result.method}); {time.perf_counter() - started:.0f} s elapsed")
    selection = None
    if config.select:
        selection = select_cell(results, by_name, config, search_seconds=time.perf_counter() - started - load_seconds)
        log(f"bench --select: {selection['store']} / {selection['layer']} / {selection['head']} chosen by "
            f"{config.cv}-fold CV on the training split ({selection[f'cv_{metric}']:.4f}); "
            + (f"test {metric} {selection[f'test_{metric}']:.4f}" if selection[f"test_{metric}"] is not None
               else "no test split to score it on"))
    total = time.perf_counter() - started
    if task_type != "classification":
        from .report_tasks import write_task_report as write_report
    document = write_report(Path(output), data, config, results, load_seconds=load_seconds, total_seconds=total,
                            selection=selection)
    log(f"bench: {len(results)} cells in {total:.1f} s ({100 * load_seconds / total:.1f}% loading features); "
        f"report: {Path(output) / 'report.html'} (and report.md)")
    return document


def select_cell(results: Sequence[CellResult], stores: dict[str, StoreData], config: BenchConfig,
                search_seconds: float = 0.0) -> dict[str, Any]:
    """The cell with the best CV accuracy (R² for a regression task), refitted on every training row and
    scored once on the test split.

    Only the CV scores (training rows alone) decide; the test split is used once, for the
    chosen cell.

    Returns
    -------
    dict
        ``store``, ``layers``, ``layer``, ``fusion``, ``head``, ``method``, ``cv_accuracy``,
        ``test_accuracy`` (None without a test split; ``cv_r2`` and ``test_r2`` for a regression
        task), ``test_metrics``, ``refit_seconds``, ``search_seconds`` (the CV of every cell), ``cells``.
    """
    metric = PRIMARY_METRIC[next(iter(stores.values())).task_type]
    best = max(results, key=lambda r: r.metrics[metric])
    store = stores[best.cell.store]
    chosen = {"store": best.cell.store, "layers": list(best.cell.layers), "layer": best.cell.layer_label,
              "fusion": best.cell.fusion, "head": best.cell.head, f"cv_{metric}": best.metrics[metric],
              "cv_evaluation": best.evaluation, "search_seconds": search_seconds, "cells": len(results),
              f"test_{metric}": None, "test_metrics": None, "refit_seconds": None, "method": best.method}
    if store.test is None:
        return chosen
    final = _fit_and_score(best.cell, store, config, [(np.flatnonzero(~store.test), np.flatnonzero(store.test))],
                           "test split")
    chosen.update({f"test_{metric}": final.metrics[metric]}, test_metrics=final.metrics,
                  refit_seconds=final.fit_seconds, method=final.method, n_train=final.n_train, n_test=final.n_test,
                  confusion=final.confusion, wrong=final.wrong)
    if final.extra:  # a regression's held-out (true, predicted) pairs, a multilabel's per-label AP
        chosen["extra"] = final.extra
    return chosen
