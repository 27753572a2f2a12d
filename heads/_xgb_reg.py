"""XGBoost gradient-boosted regression trees as a plain scikit-learn regressor: :class:`XGBRegressorHead`.

The regression twin of :class:`heads._xgb.XGBHead`: a booster trained with ``xgboost.train`` on a
``QuantileDMatrix`` (``hist``), travelling in pickles and skops files as XGBoost's own UBJSON bytes
(checked for out-of-range tree indices when read), so no xgboost object is ever unpickled.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import HeadParamError
from .onnx_graph import Skl2onnx

__all__ = ["XGBRegressorHead", "xgb_regressor_onnx"]


class XGBRegressorHead(RegressorMixin, BaseEstimator):
    """Gradient-boosted regression trees (XGBoost ``hist``, squared error).

    Parameters
    ----------
    n_estimators : int, default=200
        Boosting rounds (one tree each).
    max_depth : int, default=6
        Maximum tree depth.
    learning_rate : float, default=0.1
        Shrinkage (XGBoost ``eta``).
    max_bin : int, default=32
        Histogram bins per feature.
    subsample : float, default=1.0
        Fraction of rows sampled per tree.
    colsample_bytree : float, default=1.0
        Fraction of features sampled per tree.
    n_jobs : int or None, default=None
        Threads; ``None`` lets XGBoost use all cores.
    random_state : int or None, default=0
        Seed of the row and column sampling.

    Attributes
    ----------
    booster_ : xgboost.Booster
    method_ : str
        E.g. ``"xgboost hist, 200 rounds, depth 6, eta 0.1"``.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> X, y = load_diabetes(return_X_y=True)
    >>> XGBRegressorHead(n_estimators=10, n_jobs=1).fit(X, y).predict(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        n_estimators: int = 200,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        max_bin: int = 32,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        checks = [
            ("n_estimators", isinstance(self.n_estimators, Integral) and self.n_estimators >= 1),
            ("max_depth", isinstance(self.max_depth, Integral) and self.max_depth >= 0),
            ("learning_rate", isinstance(self.learning_rate, Real) and self.learning_rate > 0),
            ("max_bin", isinstance(self.max_bin, Integral) and self.max_bin >= 2),
            ("subsample", isinstance(self.subsample, Real) and 0 < self.subsample <= 1),
            ("colsample_bytree", isinstance(self.colsample_bytree, Real) and 0 < self.colsample_bytree <= 1),
            ("n_jobs", self.n_jobs is None or isinstance(self.n_jobs, Integral)),
        ]
        for name, ok in checks:
            if not ok:
                raise HeadParamError(f"XGBRegressorHead parameter {name}={getattr(self, name)!r} is out of range; "
                                     "see XGBRegressorHead's docstring for valid values")

    def fit(self, X: np.ndarray, y: np.ndarray) -> XGBRegressorHead:
        """Train the booster.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        XGBRegressorHead
            The fitted estimator.

        Raises
        ------
        HeadParamError
            If a parameter is out of range.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        nthread = self.n_jobs if self.n_jobs is not None and self.n_jobs > 0 else None
        params: dict[str, Any] = {
            "objective": "reg:squarederror", "tree_method": "hist", "max_depth": self.max_depth,
            "eta": self.learning_rate, "max_bin": self.max_bin, "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree, "verbosity": 0,
            "seed": 0 if self.random_state is None else self.random_state,
        }
        if nthread is not None:
            params["nthread"] = nthread
        dtrain = xgb.QuantileDMatrix(X, label=np.asarray(y, dtype=np.float64), max_bin=self.max_bin, nthread=nthread)
        self.booster_ = xgb.train(params, dtrain, num_boost_round=self.n_estimators, verbose_eval=False)
        self.method_ = (f"xgboost hist, {self.n_estimators} rounds, depth {self.max_depth}, "
                        f"eta {self.learning_rate:g}")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return np.asarray(self.booster_.inplace_predict(X), dtype=np.float64).reshape(-1)

    def __getstate__(self) -> dict[str, Any]:
        # as XGBHead: the booster travels as XGBoost's UBJSON bytes, never as an xgboost object
        state = dict(super().__getstate__())
        if isinstance(state.get("booster_"), xgb.Booster):
            state["booster_"] = bytes(state["booster_"].save_raw("ubj"))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.get("booster_")
        if isinstance(raw, (bytes, bytearray)):
            booster = xgb.Booster()
            booster.load_model(bytearray(raw))
            from ._xgb_check import check_booster

            # one output per row, as a binary classifier's booster has (num_class 0)
            check_booster(booster, n_classes=2, where="<unpickled XGBRegressorHead>")
            state = {**state, "booster_": booster}
        super().__setstate__(state)


def xgb_regressor_onnx(head: XGBRegressorHead) -> list[Skl2onnx]:
    """The ONNX converter of a fitted :class:`XGBRegressorHead`: its booster as an XGBRegressor, which
    onnxmltools converts (registered with skl2onnx on first use, as for :class:`heads._xgb.XGBHead`)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    update_registered_converter(xgb.XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)
    regressor = xgb.XGBRegressor()
    regressor.load_model(bytearray(head.booster_.save_raw("ubj")))
    return [Skl2onnx(regressor)]
