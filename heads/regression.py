"""The built-in regression heads, registered with ``register_head(..., task_type="regression")``.

The same conventions as the classifiers of :mod:`heads.builtin`: each builder returns a
:class:`~sklearn.pipeline.Pipeline` with its own scaling inside, every head refuses NaN and
infinite features, and the defaults are sized for 60,000 x 2,000 features on 2 cores. Step
names (for ``param_grid`` and ``set_params``): ``scale``, then ``ridge``, ``svr``, ``tree``,
``forest``, ``bayes``, ``xgb`` or ``knn``. Names are shared with the classifiers where the
method is the same (``tree``, ``forest``, ``xgb``, ``knn``); ``create_head(name, "regression")``
picks the regressor. Every head converts to ONNX (a ``prediction`` output) and saves with skops.

Sizing: ``ridge`` and ``bayes`` decompose the standardised features once (a thin SVD, linear in
the rows), ``svr`` leaves the exact solver above 10,000 rows, ``tree`` is depth-limited, the
forest samples half the rows and the square root of the features per split, ``xgb`` bins every
feature into 32 histogram bins, and ``knn`` stores the training rows and compares each query with
all of them (brute force, as the classifier's does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import BayesianRidge, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from ._knn_reg import KNNRegressor, knn_regressor_onnx
from ._scale import ColumnScale, column_scale_onnx
from ._svr import ScalableSVR, scalable_svr_onnx
from ._xgb_reg import XGBRegressorHead, xgb_regressor_onnx
from .errors import HeadParamError
from .registry import register_head

__all__ = ["DEFAULT_ALPHAS"]

#: ``np.logspace(-1, 5, 7)``: the ``ridge`` head's default sweep of the penalty (standardised features).
DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)

_REGRESSION = "regression"


@register_head(
    "ridge", task_type=_REGRESSION,
    description="StandardScaler + ridge regression, alpha picked by leave-one-out error over 7 values",
)
def ridge(alphas: Sequence[float] = DEFAULT_ALPHAS) -> Pipeline:
    """StandardScaler + :class:`~sklearn.linear_model.RidgeCV`: efficient leave-one-out over ``alphas``
    (one SVD of the features for every value), then the best one's solution."""
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not a > 0 for a in alphas):
        raise HeadParamError(f"ridge alphas={alphas!r} must be a non-empty sequence of floats > 0")
    return Pipeline([("scale", StandardScaler()), ("ridge", RidgeCV(alphas=alphas))])


@register_head(
    "svr", task_type=_REGRESSION,
    description="RBF SVR on at most 256 principal components; exact up to 10,000 rows, "
                "Nystroem + linear SVR above; target standardised inside",
    param_grid={"svr__C": [0.1, 1.0, 10.0]},
    estimator=ScalableSVR,
    converter=scalable_svr_onnx,
)
def svr(
    C: float = 1.0,
    epsilon: float = 0.1,
    gamma: Literal["scale", "auto"] | float = "scale",
    max_dims: int | None = 256,
    exact_max_samples: int = 10_000,
    n_components: int = 1000,
    random_state: int | None = 0,
) -> Pipeline:
    """StandardScaler + :class:`~heads._svr.ScalableSVR`."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("svr", ScalableSVR(C=C, epsilon=epsilon, gamma=gamma, max_dims=max_dims,
                            exact_max_samples=exact_max_samples, n_components=n_components,
                            random_state=random_state)),
    ])


@register_head(
    "tree", task_type=_REGRESSION,
    description="StandardScaler + a single regression tree, depth at most 12, leaves of 5 rows",
    param_grid={"tree__min_samples_leaf": [5, 20, 50]},
    estimator=ColumnScale,
    converter=column_scale_onnx,
)
def tree(max_depth: int | None = 12, min_samples_leaf: int = 5, random_state: int | None = 0) -> Pipeline:
    """:class:`~heads._scale.ColumnScale` + :class:`~sklearn.tree.DecisionTreeRegressor` (see the classifier
    ``tree`` for why a tree gets a scale; this one rounds as its ONNX form does)."""
    return Pipeline([
        ("scale", ColumnScale()),
        ("tree", DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                       random_state=random_state)),
    ])


@register_head(
    "forest", task_type=_REGRESSION,
    description="random forest regressor, 100 trees, sqrt features per split, bootstrap of 50% rows",
    param_grid={"forest__max_features": ["sqrt", 0.1]},
    estimator=ColumnScale,
    converter=column_scale_onnx,
)
def forest(
    n_estimators: int = 100,
    max_features: str | float = "sqrt",
    max_samples: float | None = 0.5,
    min_samples_leaf: int = 2,
    n_jobs: int | None = -1,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`~heads._scale.ColumnScale` + :class:`~sklearn.ensemble.RandomForestRegressor`."""
    return Pipeline([
        ("scale", ColumnScale()),
        ("forest", RandomForestRegressor(
            n_estimators=n_estimators, max_features=max_features, max_samples=max_samples,
            min_samples_leaf=min_samples_leaf, n_jobs=n_jobs, random_state=random_state)),
    ])


@register_head(
    "bayes", task_type=_REGRESSION,
    description="StandardScaler + Bayesian ridge regression (penalty and noise estimated from the data)",
    param_grid={},  # the head estimates its penalty itself
)
def bayes(max_iter: int = 300, tol: float = 1e-3) -> Pipeline:
    """StandardScaler + :class:`~sklearn.linear_model.BayesianRidge`."""
    return Pipeline([("scale", StandardScaler()), ("bayes", BayesianRidge(max_iter=max_iter, tol=tol))])


@register_head(
    "xgb", task_type=_REGRESSION,
    description="XGBoost hist regression trees, 200 rounds; saves to XGBoost UBJ",
    param_grid={"xgb__max_depth": [4, 6], "xgb__learning_rate": [0.05, 0.1]},
    estimator=XGBRegressorHead,
    converter=xgb_regressor_onnx,
)
def xgb(
    n_estimators: int = 200,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    max_bin: int = 32,
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`~heads._xgb_reg.XGBRegressorHead` (no scaling: trees are invariant to it)."""
    return Pipeline([
        ("xgb", XGBRegressorHead(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                 max_bin=max_bin, n_jobs=n_jobs, random_state=random_state)),
    ])


@register_head(
    "knn", task_type=_REGRESSION,
    description="k-NN regression on unit rows (cosine neighbours), k=20, mean of their targets",
    param_grid={"knn__n_neighbors": [10, 20, 50]},
    estimator=KNNRegressor,
    converter=knn_regressor_onnx,
)
def knn(n_neighbors: int = 20, weights: Literal["uniform", "distance"] = "uniform") -> Pipeline:
    """:class:`~sklearn.preprocessing.Normalizer` + :class:`~heads._knn_reg.KNNRegressor` (brute force):
    Euclidean neighbours of unit rows are the cosine neighbours."""
    if weights not in ("uniform", "distance"):
        raise HeadParamError(f"knn weights={weights!r}; valid: uniform, distance")
    return Pipeline([
        ("unit", Normalizer()),
        ("knn", KNNRegressor(n_neighbors=n_neighbors, weights=weights)),
    ])
