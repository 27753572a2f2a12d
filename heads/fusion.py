"""Concatenation fusion: normalise and weight blocks of stored layer features.

A feature store holds several layers (blocks) per image. A user lays them side by
side in one matrix ``X`` of shape ``(n_samples, sum(widths))`` and tells
:class:`ConcatFusion` the block widths; it normalises each block with statistics
learned in :meth:`~ConcatFusion.fit` and returns the concatenation, ready for any
scikit-learn head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from heads._blocks import block_slices, check_block_weights, check_blocks, standardize_stats
from heads.errors import HeadParamError
from heads.onnx_graph import Context, Converter, Graph, GraphBuilder, Piece, Skl2onnx

__all__ = ["ConcatFusion", "ONNX_CONVERTERS"]

_NORMS = ("none", "standardize", "l2", "power")


class ConcatFusion(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Normalise, weight and concatenate blocks of features.

    Parameters
    ----------
    blocks : sequence of int or None, default=None
        Widths of the blocks laid side by side in ``X`` (they must sum to
        ``X.shape[1]``). ``None`` treats the whole of ``X`` as one block.
    norm : {"none", "standardize", "l2", "power"}, default="standardize"
        ``"standardize"`` z-scores every feature with the mean and standard
        deviation of the training data; ``"l2"`` scales each block of each row to
        unit Euclidean norm (rows that are zero in a block stay zero); ``"power"``
        takes the signed square root of every value, then does what ``"l2"`` does
        (the "improved" normalisation of Fisher vectors, Perronnin et al. 2010);
        ``"none"`` leaves values unchanged.
    weights : sequence of float or None, default=None
        One non-negative weight per block, multiplying the block after
        normalisation, so a user can up- or down-weight layers. ``None`` means 1
        for every block.

    Attributes
    ----------
    blocks_ : tuple of int
        Validated block widths.
    weights_ : ndarray of shape (n_blocks,)
        Per-block weights applied in :meth:`transform` (ones when ``weights=None``).
    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean subtracted in :meth:`transform` (zeros unless
        ``norm="standardize"``).
    scale_ : ndarray of shape (n_features_in_,)
        Per-feature divisor used in :meth:`transform` (ones unless
        ``norm="standardize"``).
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, when ``X`` has string column names.

    See Also
    --------
    heads.attention.AttentionFusion : Supervised, learned weighting of the blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from heads.fusion import ConcatFusion
    >>> X = np.arange(12.0).reshape(3, 4)
    >>> fuse = ConcatFusion(blocks=[1, 3], norm="l2", weights=[1.0, 0.5]).fit(X)
    >>> np.round(np.linalg.norm(fuse.transform(X)[:, 1:], axis=1), 6)
    array([0.5, 0.5, 0.5])
    """

    def __init__(
        self,
        blocks: Sequence[int] | None = None,
        norm: str = "standardize",
        weights: Sequence[float] | None = None,
    ) -> None:
        self.blocks = blocks
        self.norm = norm
        self.weights = weights

    def fit(self, X, y=None) -> ConcatFusion:
        """Learn the block layout and, for ``norm="standardize"``, feature statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features, blocks side by side.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : ConcatFusion
            The fitted transformer.

        Raises
        ------
        HeadParamError
            (a ``ValueError``) if ``norm`` is unknown, the block widths do not sum to
            ``n_features``, or ``weights`` is malformed.
        """
        if self.norm not in _NORMS:
            raise HeadParamError(
                f"ConcatFusion: norm must be one of {list(_NORMS)}; got {self.norm!r}."
            )
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.blocks_ = check_blocks(self.blocks, X.shape[1], "ConcatFusion")
        weights = check_block_weights(self.weights, len(self.blocks_), "ConcatFusion")
        self.weights_ = np.ones(len(self.blocks_)) if weights is None else weights
        if self.norm == "standardize":
            self.mean_, self.scale_ = standardize_stats(X)
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        return self

    def transform(self, X) -> np.ndarray:
        """Normalise and weight each block, and return their concatenation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Features laid out as in :meth:`fit`.

        Returns
        -------
        X_fused : ndarray of shape (n_samples, n_features_in_)
            The fused features, float32 if ``X`` is float32 and float64 otherwise.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before :meth:`fit`.
        ValueError
            If ``X`` has a different number of features than in :meth:`fit`.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=True)
        dtype = X.dtype
        if self.norm == "standardize":
            X -= self.mean_.astype(dtype)
            X /= self.scale_.astype(dtype)
        if self.norm == "power":
            X[:] = np.sign(X) * np.sqrt(np.abs(X))
        for sl, w in zip(block_slices(self.blocks_), self.weights_):
            block = X[:, sl]
            if self.norm in ("l2", "power"):
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                norms[norms == 0] = 1.0
                block /= norms
            if w != 1.0:
                block *= dtype.type(w)
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _as_scaler(fusion: ConcatFusion) -> Any:
    """The fitted fusion's per-column affine map (``standardize`` or ``none``) as the equivalent StandardScaler."""
    from sklearn.preprocessing import StandardScaler

    scale = np.array(fusion.scale_, dtype=np.float64, copy=True)
    for block, weight in zip(block_slices(fusion.blocks_), fusion.weights_):
        scale[block] /= weight
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = np.asarray(fusion.mean_, np.float64), scale, scale ** 2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(scale), 1
    return scaler


def _normalised_piece(fusion: ConcatFusion, context: Context) -> Piece:
    """Signed square roots (``power``) and/or per-block L2 normalisation (a zero block stays zero), then
    each block weighted."""
    from onnx import TensorProto

    width = context.width
    b = GraphBuilder("fusion.")
    x = "x"
    if fusion.norm == "power":  # signed square root, then as "l2"
        x = b.op("Mul", [b.op("Sign", [x]), b.op("Sqrt", [b.op("Abs", [x])])])
    parts = []
    for block, weight in zip(block_slices(fusion.blocks_), fusion.weights_):
        part = b.op("Slice", [x, b.const(np.array([block.start], np.int64), "start"),
                              b.const(np.array([block.stop], np.int64), "stop"),
                              b.const(np.array([1], np.int64), "axis")])
        part = b.unit_rows(part, block.stop - block.start)
        if weight != 1.0:
            part = b.op("Mul", [part, b.const(np.array([weight], np.float32), "weight")])
        parts.append(part)
    y = b.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    return Piece(b.model(width, {"y": (TensorProto.FLOAT, ["N", width])}, {"y": y}, context.opset), width)


def _concat_fusion_steps(fusion: ConcatFusion) -> list[Any]:
    if fusion.norm in ("l2", "power"):
        return [Graph(lambda context: _normalised_piece(fusion, context))]
    return [Skl2onnx(_as_scaler(fusion))]


#: How a fitted :class:`ConcatFusion` converts to ONNX (see :mod:`heads.onnx`).
ONNX_CONVERTERS: dict[type, Converter] = {ConcatFusion: _concat_fusion_steps}
