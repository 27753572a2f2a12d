"""k-nearest-neighbour regression whose ``k`` is clipped to the training rows: :class:`KNNRegressor`.

The ``knn`` regression head runs it on unit rows (cosine neighbours), brute force, as the
classifier :class:`heads._knn.CosineKNN` compares each query with every training row.
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

from ._knn import check_neighbors

__all__ = ["KNNRegressor", "knn_regressor_onnx"]


class KNNRegressor(RegressorMixin, BaseEstimator):
    """The mean (or inverse-distance weighted mean) target of the ``k`` nearest training rows.

    Parameters
    ----------
    n_neighbors : int, default=20
        ``k``; fewer training rows than this use them all.
    weights : {'uniform', 'distance'}, default='uniform'

    Attributes
    ----------
    estimator_ : sklearn.neighbors.KNeighborsRegressor
        Brute force, with ``k`` clipped.
    method_ : str
        E.g. ``"k=20, uniform"``.
    n_features_in_ : int

    Examples
    --------
    >>> KNNRegressor(n_neighbors=5).fit([[0.0], [1.0]], [0.0, 2.0]).predict([[0.2]]).tolist()
    [1.0]
    """

    def __init__(self, n_neighbors: int = 20, weights: str = "uniform") -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: np.ndarray, y: np.ndarray) -> KNNRegressor:
        """Keep the training rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        KNNRegressor

        Raises
        ------
        HeadParamError
            If a parameter has an invalid value.
        """
        check_neighbors("KNNRegressor", self.n_neighbors, self.weights, ("uniform", "distance"))
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        k = min(int(self.n_neighbors), X.shape[0])
        self.estimator_ = KNeighborsRegressor(n_neighbors=k, weights=self.weights, algorithm="brute").fit(X, y)
        self.method_ = f"k={k}, {self.weights}"
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
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X)


def knn_regressor_onnx(head: KNNRegressor) -> list[KNeighborsRegressor]:
    """The ONNX converter of a fitted :class:`KNNRegressor`: its k-NN regressor (skl2onnx converts it)."""
    return [copy.deepcopy(head.estimator_)]
