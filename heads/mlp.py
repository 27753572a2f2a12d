"""The ``mlp`` head: a small torch network on the (fused) features, saved as numpy arrays.

:class:`MLPHead` standardises its input, runs one or two ReLU hidden layers with dropout and a
softmax output, and trains with AdamW and early stopping on a seeded, stratified split of the
training data. It is seeded and deterministic on CPU (see :mod:`heads._torch`). torch is
imported only by :meth:`MLPHead.fit`: the fitted head holds its weights as numpy arrays and
predicts with numpy, so a saved head needs no torch type on the allowlist, and loading and
predicting need no torch at all. Its ONNX converter (:func:`mlp_head_onnx`, declared with the
head) builds the same network from plain operators: Sub, Div, MatMul, Add, Relu, Softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._blocks import standardize_stats
from ._torch import (
    check_hidden,
    check_positive_int,
    check_real,
    deterministic_torch,
    holdout_split,
    standardized,
    train_adamw,
)
from .errors import HeadDataError
from .onnx_graph import Context, Graph, GraphBuilder, Piece, classifier_outputs
from .registry import register_head

__all__ = ["MLPHead", "mlp_head_onnx"]

_CHUNK = 8192  # rows per forward pass outside training, bounds peak memory


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def at_least_two_classes(owner: str, classes: np.ndarray) -> None:
    """Raise :class:`HeadDataError` when ``y`` held a single class."""
    if len(classes) < 2:
        raise HeadDataError(f"{owner} needs at least 2 classes in y; got 1 class ({classes[0]!r}): "
                            "give it labelled rows of several classes")


def fit_data(head: BaseEstimator, X, y) -> tuple[np.ndarray, np.ndarray, int]:
    """What a torch-trained classifier head fits on: ``X`` validated as scikit-learn does, ``y`` as
    class codes (``head.classes_`` set; two classes at least) and the training seed drawn from
    ``head.random_state``."""
    X, y = validate_data(head, X, y, dtype=[np.float64, np.float32])
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    at_least_two_classes(type(head).__name__, encoder.classes_)
    head.classes_ = encoder.classes_
    seed = int(check_random_state(head.random_state).randint(np.iinfo(np.int32).max))
    return X, encoder.transform(y), seed


class MLPHead(ClassifierMixin, BaseEstimator):
    """A small neural network classifier trained with AdamW and early stopping.

    The input is standardised (statistics from :meth:`fit`), then passes one or two hidden
    layers (linear, ReLU, dropout while training) and a linear layer to the class logits;
    probabilities are their softmax. Training minimises cross-entropy with AdamW on shuffled
    mini-batches and stops after ``patience`` epochs without progress of the loss on a
    stratified held-out part of the training data, keeping the best epoch's weights.

    Parameters
    ----------
    hidden : tuple of int, default=(256,)
        Widths of the one or two hidden layers.
    dropout : float, default=0.2
        Dropout probability after each hidden layer, in [0, 1).
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW's decoupled weight decay.
    batch_size : int, default=256
        Rows per optimiser step (fewer on small data, so that an epoch makes at least 4 steps).
    max_epochs : int, default=40
        Most passes over the training part of the data. All 40 epochs on 60,000 x 3,000 rows took
        223 s on a busy 2-core machine (one torch thread).
    patience : int, default=5
        Epochs without a decrease of the monitored loss before training stops.
    validation_fraction : float, default=0.1
        Share of the rows held out (stratified) to monitor. When it is 0, or too few rows per
        class allow no stratified split, the training loss is monitored instead.
    random_state : int, RandomState instance or None, default=0
        Seeds the initialisation, dropout, the split and the shuffling; an int makes :meth:`fit`
        deterministic. torch's global random state is left as it was.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features_in_,)
        Standardisation statistics (float64).
    coefs_ : list of ndarray
        Weight matrices, ``(in, out)`` float32, one per layer (the last gives the logits).
    intercepts_ : list of ndarray
        Biases, float32, one per layer.
    n_epochs_ : int
        Epochs run.
    best_loss_ : float
        Best monitored loss (validation cross-entropy, or training loss without a split).
    method_ : str
        E.g. ``"mlp 3000-256-10, dropout 0.2, 14 epochs"``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> head = MLPHead(hidden=(16,)).fit(X, y)
    >>> head.predict_proba(X[:2]).shape
    (2, 3)
    """

    def __init__(
        self,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        batch_size: int = 256,
        max_epochs: int = 40,
        patience: int = 5,
        validation_fraction: float = 0.1,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _checked_params(self) -> tuple[int, ...]:
        owner = "MLPHead"
        hidden = check_hidden(owner, self.hidden, allow_empty=False)
        for name in ("batch_size", "max_epochs", "patience"):
            check_positive_int(owner, name, getattr(self, name))
        check_real(owner, "dropout", self.dropout, 0.0, 1.0)
        check_real(owner, "lr", self.lr, 0.0, np.inf, closed_low=False)
        check_real(owner, "weight_decay", self.weight_decay, 0.0, np.inf)
        check_real(owner, "validation_fraction", self.validation_fraction, 0.0, 1.0)
        return hidden

    def fit(self, X, y) -> MLPHead:
        """Standardise ``X`` and train the network on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels, at least two classes.

        Returns
        -------
        MLPHead
            The fitted head.

        Raises
        ------
        HeadParamError
            A parameter has an invalid value.
        HeadDataError
            ``y`` holds a single class.
        """
        hidden = self._checked_params()
        X, codes, seed = fit_data(self, X, y)
        self.mean_, self.scale_ = standardize_stats(X)
        with deterministic_torch(seed):
            self._train(standardized(X, self.mean_, self.scale_), codes, hidden, seed)
        widths = "-".join(str(w) for w in (self.n_features_in_, *hidden, len(self.classes_)))
        self.method_ = f"mlp {widths}, dropout {self.dropout:g}, {self.n_epochs_} epochs"
        return self

    def _train(self, Z: np.ndarray, codes: np.ndarray, hidden: tuple[int, ...], seed: int) -> None:
        import torch
        from torch import nn
        from torch.nn.functional import cross_entropy

        layers: list[nn.Module] = []
        width = Z.shape[1]
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(float(self.dropout))]
            width = out
        layers.append(nn.Linear(width, len(self.classes_)))
        net = nn.Sequential(*layers)
        Zt, yt = torch.from_numpy(Z), torch.from_numpy(codes.astype(np.int64))
        train_idx, val_idx = holdout_split(codes, float(self.validation_fraction), seed)

        def batch_loss(rows):
            return cross_entropy(net(Zt[rows]), yt[rows])

        def monitor() -> float:
            rows = torch.from_numpy(val_idx)
            total = sum(float(cross_entropy(net(Zt[rows[s : s + _CHUNK]]), yt[rows[s : s + _CHUNK]], reduction="sum"))
                        for s in range(0, rows.shape[0], _CHUNK))
            return total / rows.shape[0]

        self.n_epochs_, self.best_loss_ = train_adamw(
            net, batch_loss, None if val_idx is None else monitor, train_idx, seed=seed, lr=float(self.lr),
            weight_decay=float(self.weight_decay), batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs), patience=int(self.patience))
        linears = [layer for layer in net if isinstance(layer, nn.Linear)]
        self.coefs_ = [layer.weight.detach().numpy().T.copy() for layer in linears]
        self.intercepts_ = [layer.bias.detach().numpy().copy() for layer in linears]

    def _logits(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], len(self.classes_)))
        for start in range(0, X.shape[0], _CHUNK):
            h = (np.asarray(X[start : start + _CHUNK], dtype=np.float64) - self.mean_) / self.scale_
            for i, (coef, intercept) in enumerate(zip(self.coefs_, self.intercepts_)):
                h = h @ coef.astype(np.float64) + intercept
                if i < len(self.coefs_) - 1:
                    h = np.maximum(h, 0.0)
            out[start : start + _CHUNK] = h
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, the softmax of the network's logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns ordered as ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return softmax_rows(self._logits(X))

    def predict(self, X) -> np.ndarray:
        """The class of largest probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _mlp_piece(head: MLPHead, context: Context) -> Piece:
    """Standardise, the layers (MatMul, Add, Relu between them), Softmax."""
    check_is_fitted(head)
    b = GraphBuilder("mlp.")
    h = b.op("Div", [b.op("Sub", ["x", b.const(np.asarray(head.mean_, np.float32), "mean")]),
                     b.const(np.asarray(head.scale_, np.float32), "scale")])
    for i, (coef, intercept) in enumerate(zip(head.coefs_, head.intercepts_)):
        h = b.op("Add", [b.op("MatMul", [h, b.const(np.asarray(coef, np.float32), "w")]),
                         b.const(np.asarray(intercept, np.float32), "b")])
        if i < len(head.coefs_) - 1:
            h = b.op("Relu", [h])
    probabilities = b.op("Softmax", [h], axis=1)
    return Piece(classifier_outputs(b, probabilities, head.classes_, context.width, context.opset), None)


def mlp_head_onnx(head: MLPHead) -> list[Graph]:
    """The ONNX converter of a fitted :class:`MLPHead` (registered with the ``mlp`` head)."""
    return [Graph(lambda context: _mlp_piece(head, context))]


@register_head(
    "mlp",
    description="small neural network (standardise, 1-2 ReLU layers, dropout), AdamW, early stopping",
    param_grid={"mlp__dropout": [0.1, 0.3], "mlp__weight_decay": [1e-3, 1e-1]},
    estimator=MLPHead,
    converter=mlp_head_onnx,
)
def mlp(
    hidden: Sequence[int] = (256,),
    dropout: float = 0.2,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 256,
    max_epochs: int = 40,
    patience: int = 5,
    validation_fraction: float = 0.1,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`MLPHead` (it standardises its input itself)."""
    hidden = tuple(hidden) if isinstance(hidden, list) else hidden
    return Pipeline([("mlp", MLPHead(hidden=hidden, dropout=dropout, lr=lr, weight_decay=weight_decay,
                                     batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                                     validation_fraction=validation_fraction, random_state=random_state))])
