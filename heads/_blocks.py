"""Private helpers shared by the fusion transformers: block widths and standardisation."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from heads.errors import HeadParamError

__all__ = ["check_blocks", "block_slices", "check_block_weights", "standardize_stats"]


def check_blocks(blocks: Sequence[int] | None, n_features: int, owner: str) -> tuple[int, ...]:
    """Validate block widths against the number of columns of ``X``.

    Parameters
    ----------
    blocks : sequence of int or None
        Widths of the blocks laid side by side in ``X``; ``None`` means the whole
        of ``X`` is one block.
    n_features : int
        Number of columns of ``X``.
    owner : str
        Name of the estimator, used in error messages.

    Returns
    -------
    blocks : tuple of int
        The validated widths, summing to ``n_features``.

    Raises
    ------
    HeadParamError
        If a width is not a positive integer or the widths do not sum to
        ``n_features``. It subclasses ``ValueError``.
    """
    if blocks is None:
        return (int(n_features),)
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence | np.ndarray):
        raise HeadParamError(
            f"{owner}: blocks must be None or a sequence of positive ints (the width of "
            f"each block of columns in X); got {blocks!r}."
        )
    widths = list(blocks)
    if len(widths) == 0:
        raise HeadParamError(f"{owner}: blocks is empty; pass None to treat X as one block.")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise HeadParamError(
                f"{owner}: every block width must be a positive int; got {w!r} in "
                f"blocks={widths!r}."
            )
    total = int(sum(int(w) for w in widths))
    if total != n_features:
        raise HeadParamError(
            f"{owner}: block widths {[int(w) for w in widths]} sum to {total}, but X has "
            f"{n_features} features; give one width per block so that they add up to "
            f"X.shape[1]."
        )
    return tuple(int(w) for w in widths)


def block_slices(blocks: Sequence[int]) -> list[slice]:
    """Column slices of consecutive blocks of the given widths.

    Parameters
    ----------
    blocks : sequence of int
        Validated block widths.

    Returns
    -------
    slices : list of slice
        One slice per block, in order.
    """
    edges = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def check_block_weights(
    weights: Sequence[float] | None, n_blocks: int, owner: str
) -> np.ndarray | None:
    """Validate per-block weights.

    Parameters
    ----------
    weights : sequence of float or None
        One non-negative finite weight per block, or ``None`` (all ones).
    n_blocks : int
        Number of blocks.
    owner : str
        Name of the estimator, used in error messages.

    Returns
    -------
    weights : ndarray of shape (n_blocks,) or None
        The weights as float64, or ``None`` when none were given.

    Raises
    ------
    HeadParamError
        If the number of weights differs from the number of blocks, or a weight
        is negative or not finite. It subclasses ``ValueError``.
    """
    if weights is None:
        return None
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HeadParamError(
            f"{owner}: weights must be a sequence of floats; got {weights!r}."
        ) from exc
    if w.ndim != 1 or w.shape[0] != n_blocks:
        raise HeadParamError(
            f"{owner}: got {w.size} weight(s) for {n_blocks} block(s); give one weight per "
            f"block (blocks_={n_blocks} widths)."
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise HeadParamError(
            f"{owner}: weights must be finite and non-negative; got {w.tolist()}."
        )
    return w


def standardize_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and scale (standard deviation, 1 where it is 0).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training data.

    Returns
    -------
    mean : ndarray of shape (n_features,)
        Column means, float64.
    scale : ndarray of shape (n_features,)
        Column standard deviations, float64, with near-zero values replaced by 1.
    """
    X64 = np.asarray(X, dtype=np.float64)
    mean = X64.mean(axis=0)
    scale = X64.std(axis=0)
    # a constant column (or a single sample) keeps its values centred, not blown up
    tiny = scale <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    scale[tiny] = 1.0
    return mean, scale
