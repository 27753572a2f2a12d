"""Cosine k-nearest-neighbour classifier in the style of DINO's k-NN probe.

DINO (Caron et al., 2021) evaluates frozen features with a k = 20 nearest-neighbour vote
on cosine similarity, each neighbour weighted ``exp(similarity / 0.07)``.
:class:`CosineKNN` does the same with brute-force search, and clips ``k`` to the number
of training rows so few-shot training sets still work. Search and vote are done here
(unit-normalised rows, one matrix product per block of queries in the input dtype,
``argpartition`` for the top k) rather than by ``KNeighborsClassifier(weights=callable)``:
that keeps float32 data in float32 and leaves no callables in a fitted head, so it saves
with skops under a plain type allowlist.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import HeadParamError
from .onnx_graph import Context, Graph, GraphBuilder, Piece, classifier_outputs

__all__ = ["CosineKNN", "cosine_knn_onnx", "temperature_weights"]

_WEIGHTS = ("temperature", "uniform", "distance")
_QUERY_BLOCK_BYTES = 128 * 2**20  # similarity block held at once while predicting


def check_neighbors(owner: str, n_neighbors: object, weights: object, valid: tuple[str, ...]) -> None:
    """The checks :class:`CosineKNN` and :class:`heads._knn_reg.KNNRegressor` make of their ``k`` and
    vote weights.

    Raises
    ------
    HeadParamError
        ``n_neighbors`` is not an int >= 1, or ``weights`` is not one of ``valid``.
    """
    if not isinstance(n_neighbors, Integral) or n_neighbors < 1:
        raise HeadParamError(f"{owner} n_neighbors={n_neighbors!r} must be an int >= 1")
    if weights not in valid:
        raise HeadParamError(f"{owner} weights={weights!r}; valid: {', '.join(valid)}")


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1).astype(X.dtype)


def temperature_weights(distances: np.ndarray, temperature: float = 0.07) -> np.ndarray:
    """Vote weights ``exp(cosine_similarity / temperature)`` from cosine distances.

    Parameters
    ----------
    distances : ndarray
        Cosine distances ``1 - cos`` of the neighbours, in ``[0, 2]``.
    temperature : float, default=0.07
        Softmax temperature; smaller values trust the nearest neighbours more.

    Returns
    -------
    ndarray
        Positive weights of the same shape. Each row is divided by its largest weight
        (the vote is normalised per row anyway), so small temperatures cannot overflow.
    """
    logits = (1.0 - np.asarray(distances, dtype=np.float64)) / temperature
    return np.exp(logits - logits.max(axis=-1, keepdims=True))


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k-NN vote on cosine distance (brute force), k clipped to the training size.

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours that vote (at most the number of training rows).
    weights : {"temperature", "uniform", "distance"}, default="temperature"
        ``"temperature"`` weights each vote ``exp(cos / temperature)`` as DINO does;
        the others are :class:`~sklearn.neighbors.KNeighborsClassifier`'s.
    temperature : float, default=0.07
        Temperature of the ``"temperature"`` weights.

    Attributes
    ----------
    n_neighbors_ : int
        The ``k`` actually used.
    method_ : str
        E.g. ``"cosine k=20, temperature 0.07"``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> CosineKNN().fit(X[:10], y[:10]).n_neighbors_
    10
    """

    def __init__(
        self,
        n_neighbors: int = 20,
        weights: Literal["temperature", "uniform", "distance"] = "temperature",
        temperature: float = 0.07,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.temperature = temperature

    def fit(self, X: np.ndarray, y: np.ndarray) -> CosineKNN:
        """Index the training rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        CosineKNN
            The fitted estimator.

        Raises
        ------
        HeadParamError
            If a parameter has an invalid value.
        """
        check_neighbors("CosineKNN", self.n_neighbors, self.weights, _WEIGHTS)
        if not isinstance(self.temperature, Real) or not self.temperature > 0:
            raise HeadParamError(f"CosineKNN temperature={self.temperature!r} must be > 0")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.n_neighbors_ = min(self.n_neighbors, X.shape[0])
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        self._y_encoded = encoder.transform(y)
        self._unit_train = _unit_rows(X)
        vote = (f"temperature {self.temperature:g}" if self.weights == "temperature"
                else f"{self.weights} weights")
        self.method_ = f"cosine k={self.n_neighbors_}, {vote}"
        return self

    def _checked(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _weights(self, distances: np.ndarray) -> np.ndarray:
        if self.weights == "temperature":
            return temperature_weights(distances, float(self.temperature))
        if self.weights == "uniform":
            return np.ones_like(distances)
        with np.errstate(divide="ignore"):  # as KNeighborsClassifier: exact matches win
            inverse = 1.0 / distances
        exact = np.isinf(inverse)
        return np.where(exact.any(axis=1, keepdims=True), exact.astype(float), inverse)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Weighted vote shares, columns ordered as ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = self._checked(X)
        proba = np.zeros((X.shape[0], len(self.classes_)))
        train = self._unit_train
        block = max(1, _QUERY_BLOCK_BYTES // (train.shape[0] * train.itemsize))
        for start in range(0, X.shape[0], block):
            rows = slice(start, start + block)
            proba[rows] = self._vote(_unit_rows(X[rows]).astype(train.dtype, copy=False))
        return proba / proba.sum(axis=1, keepdims=True)

    def _vote(self, unit_queries: np.ndarray) -> np.ndarray:
        k = self.n_neighbors_
        similarity = unit_queries @ self._unit_train.T
        if k < similarity.shape[1]:
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(k), (len(similarity), k))
        cos = np.take_along_axis(similarity, nearest, axis=1).astype(np.float64)
        weights = self._weights(np.clip(1.0 - cos, 0.0, 2.0))
        votes = self._y_encoded[nearest]
        out = np.empty((len(unit_queries), len(self.classes_)))
        for c in range(len(self.classes_)):
            out[:, c] = np.where(votes == c, weights, 0.0).sum(axis=1)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class with the largest weighted vote.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _cosine_knn_piece(knn: CosineKNN, context: Context) -> Piece:
    """Cosine similarity to every training row, top k, weighted vote.

    The training rows are stored (unit-normalised, float32) in the graph, so its size grows
    with the training set (4 bytes per value).
    """
    width, opset = context.width, context.opset
    b = GraphBuilder("knn.")
    train = np.asarray(knn._unit_train, np.float32)
    k, n_classes = int(knn.n_neighbors_), len(knn.classes_)
    unit = b.unit_rows("x", width)
    similarity = b.op("MatMul", [unit, b.const(train.T.copy(), "train")])                  # (N, M)
    cos, nearest = b.op("TopK", [similarity, b.const(np.array([k], np.int64), "k")], n_out=2, axis=1,
                        largest=1, sorted=1)
    distance = b.op("Clip", [b.op("Sub", [b.const(np.ones(1, np.float32), "one"), cos]),
                             b.const(np.array(0.0, np.float32), "lo"), b.const(np.array(2.0, np.float32), "hi")])
    if knn.weights == "temperature":
        logits = b.op("Div", [b.op("Sub", [b.const(np.ones(1, np.float32), "one"), distance]),
                              b.const(np.array([knn.temperature], np.float32), "t")])
        first = b.op("Slice", [logits, b.const(np.array([0], np.int64), "s"), b.const(np.array([1], np.int64), "e"),
                               b.const(np.array([1], np.int64), "a")])  # sorted: the largest logit
        weights = b.op("Exp", [b.op("Sub", [logits, first])])
    elif knn.weights == "uniform":
        weights = b.op("Mul", [distance, b.const(np.zeros(1, np.float32), "zero")])
        weights = b.op("Add", [weights, b.const(np.ones(1, np.float32), "one")])
    else:  # "distance": 1/d, or only the exact matches where there are any
        exact = b.op("Cast", [b.op("Equal", [distance, b.const(np.zeros(1, np.float32), "zero")])], to=1)
        any_exact = b.op("Greater", [b.row_sum(exact, k), b.const(np.zeros(1, np.float32), "zero")])
        weights = b.op("Where", [any_exact, exact, b.op("Reciprocal", [distance])])
    votes = b.op("Gather", [b.const(np.asarray(knn._y_encoded, np.int64), "labels"), nearest], axis=0)  # (N, k)
    one_hot = b.op("OneHot", [votes, b.const(np.array(n_classes, np.int64), "depth"),
                              b.const(np.array([0.0, 1.0], np.float32), "values")], axis=-1)   # (N, k, C)
    tally = b.op("MatMul", [b.op("Unsqueeze", [weights, b.const(np.array([1], np.int64), "ax")]), one_hot])
    tally = b.op("Reshape", [tally, b.const(np.array([-1, n_classes], np.int64), "shape")])    # (N, C)
    probabilities = b.op("Div", [tally, b.row_sum(tally, n_classes)])
    return Piece(classifier_outputs(b, probabilities, knn.classes_, width, opset), None)


def cosine_knn_onnx(knn: CosineKNN) -> list[Graph]:
    """The ONNX converter of a fitted :class:`CosineKNN` (registered with the ``knn`` head)."""
    return [Graph(lambda context: _cosine_knn_piece(knn, context))]
