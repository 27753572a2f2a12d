"""The built-in multilabel heads, registered with ``register_head(..., task_type="multilabel")``.

A multilabel task gives each row a set of labels; the heads learn ``Y``, a ``(rows, labels)`` 0/1
matrix, and ``predict_proba`` gives each label's probability, ``(rows, labels)``. The classifiers
that learn several outputs natively are used as they are (``tree``, ``forest``: one tree predicts
every label); the others with probabilities are wrapped one-vs-rest, one binary head per label
(``logreg``, ``nb``, ``xgb``, ``knn``). ``svm``, ``linear-svm`` and ``ensemble`` have no multilabel
form: the SVMs give no probabilities, which per-label scores and the packaged file need.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from ._scale import ColumnScale, column_scale_onnx
from .registry import create_head, register_head

__all__ = ["OVR_HEADS", "label_probabilities"]

#: The classifiers a multilabel head wraps one-vs-rest.
OVR_HEADS = ("logreg", "nb", "xgb", "knn")

_MULTILABEL = "multilabel"


def label_probabilities(estimator, X: np.ndarray) -> np.ndarray:
    """Each label's probability, ``(rows, labels)``, from a fitted multilabel head (a native multi-output
    classifier's list of per-label ``(rows, 2)`` arrays becomes its column of 1s)."""
    proba = estimator.predict_proba(X)
    if isinstance(proba, list):
        return np.stack([p[:, 1] if p.shape[1] > 1 else np.zeros(len(p)) for p in proba], axis=1)
    return np.asarray(proba)


@register_head(
    "tree", task_type=_MULTILABEL,
    description="a single decision tree predicting every label (native multi-output)",
    param_grid={"tree__min_samples_leaf": [1, 5, 20]},
    estimator=ColumnScale,
    converter=column_scale_onnx,
)
def tree(max_depth: int | None = None, min_samples_leaf: int = 1, random_state: int | None = 0) -> Pipeline:
    """:class:`~heads._scale.ColumnScale` + :class:`~sklearn.tree.DecisionTreeClassifier` (the classifier
    ``tree``'s defaults; the scale rounds as the packaged file does, so no value crosses a threshold there)."""
    return Pipeline([
        ("scale", ColumnScale()),
        ("tree", DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                        random_state=random_state)),
    ])


@register_head(
    "forest", task_type=_MULTILABEL,
    description="random forest, 100 trees each predicting every label (native multi-output)",
    param_grid={"forest__max_features": ["sqrt", "log2"]},
    estimator=ColumnScale,
    converter=column_scale_onnx,
)
def forest(
    n_estimators: int = 100,
    max_features: str | float = "sqrt",
    max_samples: float | None = 0.5,
    min_samples_leaf: int = 1,
    n_jobs: int | None = -1,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`~heads._scale.ColumnScale` + :class:`~sklearn.ensemble.RandomForestClassifier`."""
    return Pipeline([
        ("scale", ColumnScale()),
        ("forest", RandomForestClassifier(
            n_estimators=n_estimators, max_features=max_features, max_samples=max_samples,
            min_samples_leaf=min_samples_leaf, n_jobs=n_jobs, random_state=random_state)),
    ])


def _one_vs_rest(name: str) -> Callable[[], OneVsRestClassifier]:
    def build() -> OneVsRestClassifier:
        return OneVsRestClassifier(create_head(name))

    build.__name__ = build.__qualname__ = f"{name.replace('-', '_')}_one_vs_rest"
    build.__doc__ = f":class:`~sklearn.multiclass.OneVsRestClassifier` over the classifier ``{name}``, one per label."
    return build


for _name in OVR_HEADS:
    register_head(_name, task_type=_MULTILABEL,
                  description=f"one-vs-rest: the classifier {_name}, one per label")(_one_vs_rest(_name))
