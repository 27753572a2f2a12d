"""Divide each column by its standard deviation, exactly as the packaged ONNX file does: :class:`ColumnScale`.

Trees need their features on a unit scale (see the classifier ``tree`` head), and a regression
tree's prediction jumps where a feature crosses a threshold, so the packaged division must round
exactly as scikit-learn's: both divide in float64 and round the quotient to the input's float32
(``StandardScaler``'s ONNX form multiplies by a rounded reciprocal, one ulp off now and then).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .onnx_graph import Context, Graph, GraphBuilder, Piece

__all__ = ["ColumnScale", "column_scale_onnx"]


class ColumnScale(TransformerMixin, BaseEstimator):
    """``X / std(X, axis=0)`` (1 for a constant column), computed in float64, returned in the input's dtype.

    Refuses NaN and infinite values, as every head does.

    Attributes
    ----------
    scale_ : ndarray of shape (n_features,)
    n_features_in_ : int

    Examples
    --------
    >>> ColumnScale().fit_transform(np.array([[0.0], [2.0]])).ravel().tolist()
    [0.0, 2.0]
    """

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ColumnScale:
        """Record each column's standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        ColumnScale
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        std = np.asarray(X, dtype=np.float64).std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Each column divided by its standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features), of ``X``'s float dtype
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return (np.asarray(X, dtype=np.float64) / self.scale_).astype(X.dtype, copy=False)


def column_scale_onnx(scale: ColumnScale) -> list[Graph]:
    """The ONNX converter of a fitted :class:`ColumnScale`: cast to double, divide, cast back to float."""
    from onnx import TensorProto

    def build(context: Context) -> Piece:
        b = GraphBuilder("colscale.")
        wide = b.op("Cast", ["x"], to=TensorProto.DOUBLE)
        y = b.op("Cast", [b.op("Div", [wide, b.const(scale.scale_.astype(np.float64), "scale")])],
                 to=TensorProto.FLOAT)
        return Piece(b.model(context.width, {"y": (TensorProto.FLOAT, ["N", context.width])}, {"y": y},
                             context.opset), context.width)

    return [Graph(build)]
