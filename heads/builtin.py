"""The built-in heads, registered with :func:`heads.registry.register_head`.

Each builder returns a :class:`~sklearn.pipeline.Pipeline` whose scaling (if any) is a
step inside it, so ``clone``, ``get_params``/``set_params`` and cross-validation work and
nothing learned on one fold leaks into another. Step names (used by ``param_grid`` and
``set_params``): ``scale`` for the scaler, then ``svc`` (``svm`` and ``linear-svm``),
``logreg``, ``tree``, ``forest``, ``nb``, ``xgb``, ``knn`` or ``ensemble``. A head built on an
estimator class of this package registers the class with its ONNX converter (defined beside
the class); the scikit-learn steps' converters are in :mod:`heads._sklearn_onnx`.

Defaults are sized for this project's machines (2 cores). Fit CPU seconds on 60,000 x 1,280
float32 rows, 10 classes (``make_classification``, 64 informative features), measured on a
shared, overloaded 2-core machine (wall clock was 1.5-4x these): nb 6, knn 1 (predict
10,000 rows: 43), linear-svm 66, logreg 122 (sweep on 20,000 rows), svm 108
(Nystroem path), tree 171, forest 216 (2 threads), xgb 273 (2 threads), ensemble 122.
Wall-clock fit seconds on the real thing (Fashion-MNIST train, 60,000 x 1,280 MobileNetV2
``pre_logits``, ``featurestore bench --jobs 1`` on a quiet machine): knn 1, nb 4, forest 87,
svm 98, xgb 154, logreg 181, ensemble 186, tree 246, linear-svm 255 (with ``C=0.01``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.ensemble import RandomForestClassifier, StackingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from ._knn import CosineKNN, cosine_knn_onnx
from ._logreg import DEFAULT_CS, SweptLogisticRegression, swept_logreg_onnx
from ._svm import ScalableSVC, scalable_svc_onnx
from ._xgb import XGBHead, xgb_head_onnx
from .errors import HeadParamError
from .registry import create_head, list_heads, register_head

__all__: list[str] = []  # the builders are reached through heads.registry


def _as_float64(X: np.ndarray) -> np.ndarray:
    # GaussianNB computes in the input dtype; in float32 the joint log-likelihoods of a
    # row with a value in a dead (zero-variance) feature are ~1e10 and tie across classes.
    return np.asarray(X, dtype=np.float64)


def _finite() -> FunctionTransformer:
    # Trees accept NaN as "missing"; features never should hold it, and a Pipeline's tags
    # cannot say allow_nan, so tree heads refuse NaN/inf like every other head.
    return FunctionTransformer(validate=True, accept_sparse=True)


@register_head(
    "svm",
    description="RBF SVM on at most 256 principal components; exact up to 60,000 rows, "
                "Nystroem + linear SVM above",
    param_grid={"svc__C": [1.0, 10.0, 100.0]},
    estimator=ScalableSVC,
    converter=scalable_svc_onnx,
)
def svm(
    C: float = 10.0,
    gamma: Literal["scale", "auto"] | float = "scale",
    max_dims: int | None = 256,
    exact_max_samples: int = 60_000,
    n_components: int = 1000,
    random_state: int | None = 0,
) -> Pipeline:
    """StandardScaler + :class:`~heads._svm.ScalableSVC` (no ``predict_proba``)."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("svc", ScalableSVC(C=C, gamma=gamma, max_dims=max_dims,
                            exact_max_samples=exact_max_samples,
                            n_components=n_components, random_state=random_state)),
    ])


@register_head(
    "linear-svm",
    description="StandardScaler + linear SVM (liblinear, squared hinge)",
    param_grid={"svc__C": [0.01, 0.1, 1.0]},
)
def linear_svm(C: float = 0.01, max_iter: int = 5000, random_state: int | None = 0) -> Pipeline:
    """StandardScaler + :class:`~sklearn.svm.LinearSVC` (``dual="auto"``).

    ``C=0.01``: on standardised backbone features (hundreds to thousands of dimensions) the
    stronger regularisation converges several times faster and scored higher on held-out
    data: Fashion-MNIST, MobileNetV2 ``pre_logits``, 60,000 training rows: C=0.01 fits in
    255 s with test accuracy 0.9021; C=1 took 630 s for 0.8928.
    """
    return Pipeline([
        ("scale", StandardScaler()),
        ("svc", LinearSVC(C=C, dual="auto", max_iter=max_iter, random_state=random_state)),
    ])


@register_head(
    "logreg",
    description="StandardScaler + L2 logistic regression, C picked by a 3-fold sweep",
    param_grid={},  # the head already selects C itself
    estimator=SweptLogisticRegression,
    converter=swept_logreg_onnx,
)
def logreg(
    Cs: Sequence[float] = DEFAULT_CS,
    cv: int = 3,
    max_search_samples: int | None = 20_000,
    max_iter: int = 1000,
    random_state: int | None = 0,
    patience: int | None = 2,
    search_max_iter: int = 100,
) -> Pipeline:
    """StandardScaler + :class:`~heads._logreg.SweptLogisticRegression`."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("logreg", SweptLogisticRegression(Cs=tuple(Cs), cv=cv,
                                           max_search_samples=max_search_samples,
                                           max_iter=max_iter, random_state=random_state,
                                           patience=patience,
                                           search_max_iter=search_max_iter)),
    ])


@register_head(
    "tree",
    description="StandardScaler + a single decision tree",
    param_grid={"tree__min_samples_leaf": [1, 5, 20]},
)
def tree(
    max_depth: int | None = None, min_samples_leaf: int = 1, random_state: int | None = 0
) -> Pipeline:
    """StandardScaler + :class:`~sklearn.tree.DecisionTreeClassifier`.

    Trees are invariant to scaling in exact arithmetic, not in scikit-learn's: its splitter
    treats values closer than ``FEATURE_THRESHOLD = 1e-7`` (absolute) as ties, so a column
    whose whole range is below 1e-7 (untrained backbones: |x| ~ 1e-9) is "constant" and the
    tree never splits. Dividing by each column's std first puts every column on a unit scale.
    """
    return Pipeline([
        ("finite", _finite()),
        ("scale", StandardScaler(with_mean=False)),  # keeps sparse input and zeros
        ("tree", DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                        random_state=random_state)),
    ])


@register_head(
    "forest",
    description="random forest, 100 trees, sqrt features per split, bootstrap of 50% rows",
    param_grid={"forest__max_features": ["sqrt", "log2"]},
)
def forest(
    n_estimators: int = 100,
    max_features: str | float = "sqrt",
    max_samples: float | None = 0.5,
    min_samples_leaf: int = 1,
    n_jobs: int | None = -1,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`~sklearn.ensemble.RandomForestClassifier`."""
    return Pipeline([
        ("finite", _finite()),
        ("scale", StandardScaler(with_mean=False)),  # keeps sparse input and zeros
        ("forest", RandomForestClassifier(
            n_estimators=n_estimators, max_features=max_features, max_samples=max_samples,
            min_samples_leaf=min_samples_leaf, n_jobs=n_jobs, random_state=random_state)),
    ])


@register_head(
    "nb",
    description="StandardScaler + Gaussian naive Bayes",
    param_grid={"nb__var_smoothing": [1e-9, 1e-6, 1e-3]},
)
def nb(var_smoothing: float = 1e-9) -> Pipeline:
    """StandardScaler + :class:`~sklearn.naive_bayes.GaussianNB`."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("float64", FunctionTransformer(_as_float64)),
        ("nb", GaussianNB(var_smoothing=var_smoothing)),
    ])


@register_head(
    "xgb",
    description="XGBoost hist trees, labels encoded internally; saves to XGBoost JSON/UBJ",
    param_grid={"xgb__max_depth": [4, 6], "xgb__learning_rate": [0.1, 0.3]},
    estimator=XGBHead,
    converter=xgb_head_onnx,
)
def xgb(
    n_estimators: int = 80,
    max_depth: int = 6,
    learning_rate: float = 0.3,
    max_bin: int = 32,
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`~heads._xgb.XGBHead` (no scaling: trees are invariant to it)."""
    return Pipeline([
        ("xgb", XGBHead(n_estimators=n_estimators, max_depth=max_depth,
                        learning_rate=learning_rate, max_bin=max_bin, n_jobs=n_jobs,
                        random_state=random_state)),
    ])


@register_head(
    "knn",
    description="k-NN, cosine distance, k=20, votes weighted exp(cos/0.07) as in DINO",
    param_grid={"knn__n_neighbors": [10, 20, 50]},
    estimator=CosineKNN,
    converter=cosine_knn_onnx,
)
def knn(
    n_neighbors: int = 20,
    weights: Literal["temperature", "uniform", "distance"] = "temperature",
    temperature: float = 0.07,
) -> Pipeline:
    """:class:`~heads._knn.CosineKNN` (no scaling: cosine ignores each row's norm)."""
    if weights not in ("temperature", "uniform", "distance"):
        raise HeadParamError(f"knn weights={weights!r}; valid: temperature, uniform, distance")
    return Pipeline([
        ("knn", CosineKNN(n_neighbors=n_neighbors, weights=weights, temperature=temperature)),
    ])


def _ensemble_grid(
    members: Sequence[str] = ("logreg", "nb", "knn"), method: str = "voting"
) -> dict[str, list[object]]:
    if method == "stacking":
        return {"ensemble__final_estimator__C": [0.1, 1.0, 10.0]}
    n = len(members)
    doubled = [[2 if j == i else 1 for j in range(n)] for i in range(n)]
    return {"ensemble__weights": [None, *doubled]}


@register_head(
    "ensemble",
    description="soft voting (or stacking) over other heads, default logreg + nb + knn",
    param_grid=_ensemble_grid,
)
def ensemble(
    members: Sequence[str] = ("logreg", "nb", "knn"),
    method: Literal["voting", "stacking"] = "voting",
) -> Pipeline:
    """Soft :class:`~sklearn.ensemble.VotingClassifier` or a
    :class:`~sklearn.ensemble.StackingClassifier` (logistic regression on 3-fold
    out-of-fold outputs) over heads built by :func:`heads.registry.create_head`."""
    members = tuple(members)
    valid = [name for name in list_heads() if name != "ensemble"]
    bad = [m for m in members if m not in valid]
    if not members or bad or len(set(members)) != len(members):
        raise HeadParamError(
            f"ensemble members={members!r} must be distinct names among {', '.join(valid)}"
        )
    estimators = [(m, create_head(m)) for m in members]
    if method == "voting":
        no_proba = [m for m, est in estimators if not hasattr(est, "predict_proba")]
        if no_proba:
            raise HeadParamError(
                f"soft voting needs predict_proba, which {', '.join(no_proba)} lacks; "
                "use method='stacking' or other members"
            )
        clf = VotingClassifier(estimators, voting="soft")
    elif method == "stacking":
        clf = StackingClassifier(estimators, final_estimator=LogisticRegression(max_iter=1000),
                                 cv=3)
    else:
        raise HeadParamError(f"ensemble method={method!r}; valid: 'voting', 'stacking'")
    return Pipeline([("ensemble", clf)])
