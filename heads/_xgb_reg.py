"""XGBoost gradient-boosted regression trees as a plain scikit-learn regressor: :class:`XGBRegressorHead`.

The regression twin of :class:`heads._xgb.XGBHead`, through the same code
(:class:`heads._xgb.BoosterHead`): a booster trained with ``xgboost.train`` on a ``QuantileDMatrix``
(``hist``), travelling in pickles and skops files as XGBoost's own UBJSON bytes (checked for
out-of-range tree indices when read; one output per row, as a binary classifier's booster has), so
no xgboost object is ever unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._xgb import BoosterHead
from .onnx_graph import Skl2onnx

__all__ = ["XGBRegressorHead", "xgb_regressor_onnx"]


class XGBRegressorHead(RegressorMixin, BoosterHead):
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
        nthread = self._nthread()
        params: dict[str, Any] = {
            "objective": "reg:squarederror", "tree_method": "hist", "max_depth": self.max_depth,
            "eta": self.learning_rate, "max_bin": self.max_bin, "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree, "verbosity": 0,
            "seed": 0 if self.random_state is None else self.random_state,
        }
        if nthread is not None:
            params["nthread"] = nthread
        self.booster_ = self._train(X, np.asarray(y, dtype=np.float64), params)
        self.method_ = self._describe()
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
