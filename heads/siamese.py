"""The ``siamese`` head: a projection of the frozen features learned with a metric loss, then the
nearest class prototype by cosine similarity.

:class:`SiameseHead` standardises its input and learns a linear map (or a small ReLU network)
whose unit-length outputs put rows of one class close together and rows of different classes
apart, with one of three metric losses computed over every pair in a mini-batch:

- ``"supcon"``: supervised contrastive (Khosla et al., 2020), a softmax over cosine similarities
  divided by ``temperature`` in which every other row of the anchor's class is a positive;
- ``"triplet"``: batch-hard triplet (Hermans et al., 2017): each anchor's farthest positive
  must be ``margin`` closer (in cosine distance) than its nearest negative;
- ``"contrastive"``: pairwise contrastive (Hadsell et al., 2006) on cosine similarity: positive
  pairs pulled to 1, negative pairs pushed below ``margin``.

After training, each class's prototype is the normalised mean of its training rows' unit
embeddings; a row is classified by the prototype of largest cosine similarity, and its
probabilities are the softmax of those similarities divided by ``temperature``. Built for few
rows per class: with the whole training set in one batch, every pair of rows is compared at
every step. Trained with AdamW (see :mod:`heads._torch`: seeded, deterministic on CPU, torch
imported only by :meth:`SiameseHead.fit`); the fitted head keeps numpy arrays only and predicts
with numpy. Its ONNX converter builds the same map from Sub, Div, MatMul, Add, Relu, the
normalisation, a MatMul with the prototypes and a Softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
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
from .errors import HeadParamError
from .mlp import fit_data, softmax_rows
from .onnx_graph import Context, Graph, GraphBuilder, Piece, classifier_outputs
from .registry import register_head

__all__ = ["LOSSES", "SiameseHead", "siamese_head_onnx"]

LOSSES = ("supcon", "triplet", "contrastive")
_CHUNK = 8192  # rows per forward pass outside training
_PROTOTYPE_ROWS = 10_000  # training rows whose class means are the prototypes while monitoring


def _unit_rows(Z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.where(norms > 0, norms, 1)


class SiameseHead(ClassifierMixin, BaseEstimator):
    """Metric learning on frozen features, classified by the nearest class prototype (cosine).

    Parameters
    ----------
    loss : {"supcon", "triplet", "contrastive"}, default="supcon"
        The metric loss (see the module's description). Supervised contrastive was chosen as
        the default by measurement: see ``docs/heads.md``.
    dim : int, default=128
        Width of the learned embedding.
    hidden : tuple of int, default=()
        Hidden ReLU layers before the embedding: ``()`` learns a linear projection, ``(h,)`` or
        ``(h1, h2)`` a small network.
    standardize : bool, default=False
        Z-score each feature (statistics from :meth:`fit`) before the projection. By default each
        row is divided by its Euclidean norm instead, which keeps the cosine geometry of the
        frozen features (the ``knn`` head's) and needs no statistics from the few rows a
        few-shot fit has: on 5 and 10 digits per class it classified 2-3 points better.
    temperature : float, default=0.1
        Divides cosine similarities in the supervised contrastive loss and in the probabilities.
    margin : float, default=0.2
        The triplet loss's margin in cosine distance, or the contrastive loss's: negative pairs
        are pushed below this cosine similarity. Unused by ``"supcon"``.
    lr : float, default=1e-2
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW's decoupled weight decay.
    batch_size : int, default=256
        Rows per optimiser step (all of them when fewer).
    max_epochs : int, default=40
        Most passes over the training part of the data (all 40 on 60,000 x 3,000 rows: 111 s).
    patience : int, default=8
        Epochs without a decrease of the monitored loss before training stops.
    validation_fraction : float, default=0.2
        Share of the rows held out (stratified) to monitor: after each epoch, the cross-entropy of
        their prototype probabilities (prototypes from at most 10,000 training rows). When it is
        0, or too few rows per class allow a stratified split (a few-shot training set), the
        training loss is monitored instead.
    random_state : int, RandomState instance or None, default=0
        Seeds the initialisation, the split and the shuffling; an int makes :meth:`fit`
        deterministic.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features_in_,)
        Standardisation statistics (float64); zeros and ones without ``standardize``.
    coefs_, intercepts_ : list of ndarray
        The projection's weights ``(in, out)`` and biases, float32, one per layer.
    prototypes_ : ndarray of shape (n_classes, dim)
        Unit-length class prototypes in the learned space.
    n_epochs_ : int
    best_loss_ : float
    method_ : str
        E.g. ``"siamese supcon, linear 3000-128, nearest prototype, 31 epochs"``.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> head = SiameseHead(dim=8).fit(X, y)
    >>> head.prototypes_.shape
    (3, 8)
    """

    def __init__(
        self,
        loss: str = "supcon",
        dim: int = 128,
        hidden: Sequence[int] = (),
        standardize: bool = False,
        temperature: float = 0.1,
        margin: float = 0.2,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        batch_size: int = 256,
        max_epochs: int = 40,
        patience: int = 8,
        validation_fraction: float = 0.2,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.loss = loss
        self.dim = dim
        self.hidden = hidden
        self.standardize = standardize
        self.temperature = temperature
        self.margin = margin
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _checked_params(self) -> tuple[int, ...]:
        owner = "SiameseHead"
        if self.loss not in LOSSES:
            raise HeadParamError(f"{owner}: loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        hidden = check_hidden(owner, self.hidden, allow_empty=True)
        for name in ("dim", "batch_size", "max_epochs", "patience"):
            check_positive_int(owner, name, getattr(self, name))
        check_real(owner, "temperature", self.temperature, 0.0, np.inf, closed_low=False)
        check_real(owner, "margin", self.margin, -1.0, 2.0, closed_high=True)
        check_real(owner, "lr", self.lr, 0.0, np.inf, closed_low=False)
        check_real(owner, "weight_decay", self.weight_decay, 0.0, np.inf)
        check_real(owner, "validation_fraction", self.validation_fraction, 0.0, 1.0)
        return hidden

    def fit(self, X, y) -> SiameseHead:
        """Learn the projection on ``(X, y)``, then the class prototypes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels, at least two classes.

        Returns
        -------
        SiameseHead
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
        if self.standardize:
            self.mean_, self.scale_ = standardize_stats(X)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        with deterministic_torch(seed):
            self._train(self._input(X), codes, hidden, seed)
        embedded = self._embed(X)
        prototypes = np.stack([embedded[codes == k].mean(axis=0) for k in range(len(self.classes_))])
        self.prototypes_ = _unit_rows(prototypes)
        shape = "-".join(str(w) for w in (self.n_features_in_, *hidden, self.dim))
        self.method_ = (f"siamese {self.loss}, {'linear' if not hidden else 'mlp'} {shape}, nearest prototype, "
                        f"{self.n_epochs_} epochs")
        return self

    def _train(self, Z: np.ndarray, codes: np.ndarray, hidden: tuple[int, ...], seed: int) -> None:
        import torch
        from torch import nn

        layers: list[nn.Module] = []
        width = Z.shape[1]
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers.append(nn.Linear(width, int(self.dim)))
        net = nn.Sequential(*layers)
        Zt, yt = torch.from_numpy(Z), torch.from_numpy(codes.astype(np.int64))
        train_idx, val_idx = holdout_split(codes, float(self.validation_fraction), seed)
        loss_of = _LOSS_FUNCTIONS[self.loss]
        how = {"temperature": float(self.temperature), "margin": float(self.margin)}

        def batch_loss(rows):
            return loss_of(nn.functional.normalize(net(Zt[rows]), dim=1), yt[rows], **how)

        prototype_rows = torch.from_numpy(train_idx if len(train_idx) <= _PROTOTYPE_ROWS else np.sort(
            np.random.default_rng(seed).choice(train_idx, _PROTOTYPE_ROWS, replace=False)))
        n_classes = len(self.classes_)

        def monitor() -> float:  # what predictions use: cross-entropy of the held-out rows' prototype softmax
            sums = torch.zeros(n_classes, int(self.dim))
            for s in range(0, prototype_rows.shape[0], _CHUNK):
                rows = prototype_rows[s : s + _CHUNK]
                sums.index_add_(0, yt[rows], nn.functional.normalize(net(Zt[rows]), dim=1))
            prototypes = nn.functional.normalize(sums, dim=1)
            rows = torch.from_numpy(val_idx)
            total = 0.0
            for s in range(0, rows.shape[0], _CHUNK):
                chunk = rows[s : s + _CHUNK]
                logits = nn.functional.normalize(net(Zt[chunk]), dim=1) @ prototypes.T / how["temperature"]
                total += float(nn.functional.cross_entropy(logits, yt[chunk], reduction="sum"))
            return total / rows.shape[0]

        self.n_epochs_, self.best_loss_ = train_adamw(
            net, batch_loss, None if val_idx is None else monitor, train_idx, seed=seed, lr=float(self.lr),
            weight_decay=float(self.weight_decay), batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs), patience=int(self.patience), min_steps=1)
        linears = [layer for layer in net if isinstance(layer, nn.Linear)]
        self.coefs_ = [layer.weight.detach().numpy().T.copy() for layer in linears]
        self.intercepts_ = [layer.bias.detach().numpy().copy() for layer in linears]

    def _input(self, X: np.ndarray) -> np.ndarray:
        """What the projection sees: z-scores, or (without ``standardize``) unit rows; float32."""
        if self.standardize:
            return standardized(X, self.mean_, self.scale_)
        return np.ascontiguousarray(_unit_rows(np.asarray(X, dtype=np.float64)), dtype=np.float32)

    def _embed(self, X: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of the rows of ``X`` (float64)."""
        out = np.empty((X.shape[0], int(self.coefs_[-1].shape[1])))
        for start in range(0, X.shape[0], _CHUNK):
            h = np.asarray(X[start : start + _CHUNK], dtype=np.float64)
            h = (h - self.mean_) / self.scale_ if self.standardize else _unit_rows(h)
            for i, (coef, intercept) in enumerate(zip(self.coefs_, self.intercepts_)):
                h = h @ coef.astype(np.float64) + intercept
                if i < len(self.coefs_) - 1:
                    h = np.maximum(h, 0.0)
            out[start : start + _CHUNK] = _unit_rows(h)
        return out

    def embed(self, X) -> np.ndarray:
        """The learned embedding of each row (unit length).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, dim)
        """
        check_is_fitted(self)
        return self._embed(validate_data(self, X, reset=False, dtype=[np.float64, np.float32]))

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the cosine similarities to the class prototypes divided by ``temperature``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns ordered as ``classes_``.
        """
        return softmax_rows(self.embed(X) @ self.prototypes_.T / float(self.temperature))

    def predict(self, X) -> np.ndarray:
        """The class of the nearest prototype.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        cosine = self.embed(X) @ self.prototypes_.T
        return self.classes_[np.argmax(cosine, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


# ---------------------------------------------------------------------------
# metric losses on a batch of unit embeddings ``e`` (B, d) with labels ``c`` (B,)
# ---------------------------------------------------------------------------
def _pairs(c):
    import torch

    same = c[:, None] == c[None, :]
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    return same & ~eye, ~same


def _supcon_loss(e, c, *, temperature: float, margin: float):
    """Supervised contrastive loss (Khosla et al., 2020, L_out), anchors without a positive skipped."""
    import torch

    positive, _ = _pairs(c)
    logits = e @ e.T / temperature
    logits = logits.masked_fill(torch.eye(c.shape[0], dtype=torch.bool), float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = positive.sum(dim=1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return (e * 0).sum()
    per_anchor = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(per_anchor[anchors] / n_pos[anchors]).mean()


def _triplet_loss(e, c, *, temperature: float, margin: float):
    """Batch-hard triplet loss (Hermans et al., 2017) on cosine distance."""
    import torch

    positive, negative = _pairs(c)
    distance = 1.0 - e @ e.T
    anchors = positive.any(dim=1) & negative.any(dim=1)
    if not bool(anchors.any()):
        return (e * 0).sum()
    hardest_positive = torch.where(positive, distance, torch.full_like(distance, -4.0)).amax(dim=1)
    hardest_negative = torch.where(negative, distance, torch.full_like(distance, 4.0)).amin(dim=1)
    return torch.relu(hardest_positive - hardest_negative + margin)[anchors].mean()


def _contrastive_loss(e, c, *, temperature: float, margin: float):
    """Pairwise contrastive loss (Hadsell et al., 2006) on cosine similarity, positive and negative
    pairs averaged separately."""
    positive, negative = _pairs(c)
    similarity = e @ e.T
    loss = (e * 0).sum()
    if bool(positive.any()):
        loss = loss + ((1.0 - similarity[positive]) ** 2).mean()
    if bool(negative.any()):
        loss = loss + (similarity[negative] - margin).clamp(min=0).pow(2).mean()
    return loss


_LOSS_FUNCTIONS = {"supcon": _supcon_loss, "triplet": _triplet_loss, "contrastive": _contrastive_loss}


def _siamese_piece(head: SiameseHead, context: Context) -> Piece:
    """Standardise (or unit rows), the projection, unit rows, cosine to the prototypes, Softmax of them / temperature."""
    check_is_fitted(head)
    b = GraphBuilder("siamese.")
    if head.standardize:
        h = b.op("Div", [b.op("Sub", ["x", b.const(np.asarray(head.mean_, np.float32), "mean")]),
                         b.const(np.asarray(head.scale_, np.float32), "scale")])
    else:
        h = b.unit_rows("x", context.width)
    for i, (coef, intercept) in enumerate(zip(head.coefs_, head.intercepts_)):
        h = b.op("Add", [b.op("MatMul", [h, b.const(np.asarray(coef, np.float32), "w")]),
                         b.const(np.asarray(intercept, np.float32), "b")])
        if i < len(head.coefs_) - 1:
            h = b.op("Relu", [h])
    unit = b.unit_rows(h, int(head.coefs_[-1].shape[1]))
    cosine = b.op("MatMul", [unit, b.const(np.asarray(head.prototypes_.T, np.float32), "prototypes")])
    logits = b.op("Div", [cosine, b.const(np.array([head.temperature], np.float32), "t")])
    probabilities = b.op("Softmax", [logits], axis=1)
    return Piece(classifier_outputs(b, probabilities, head.classes_, context.width, context.opset), None)


def siamese_head_onnx(head: SiameseHead) -> list[Graph]:
    """The ONNX converter of a fitted :class:`SiameseHead` (registered with the ``siamese`` head)."""
    return [Graph(lambda context: _siamese_piece(head, context))]


@register_head(
    "siamese",
    description="metric-learned projection (supervised contrastive), nearest class prototype by cosine",
    param_grid={"siamese__loss": ["supcon", "triplet"], "siamese__dim": [64, 256]},
    estimator=SiameseHead,
    converter=siamese_head_onnx,
)
def siamese(
    loss: str = "supcon",
    dim: int = 128,
    hidden: Sequence[int] = (),
    standardize: bool = False,
    temperature: float = 0.1,
    margin: float = 0.2,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
    batch_size: int = 256,
    max_epochs: int = 40,
    patience: int = 8,
    validation_fraction: float = 0.2,
    random_state: int | None = 0,
) -> Pipeline:
    """:class:`SiameseHead` (it standardises its input itself)."""
    hidden = tuple(hidden) if isinstance(hidden, list) else hidden
    return Pipeline([("siamese", SiameseHead(
        loss=loss, dim=dim, hidden=hidden, standardize=standardize, temperature=temperature, margin=margin, lr=lr,
        weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
        validation_fraction=validation_fraction, random_state=random_state))])
