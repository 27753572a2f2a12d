"""Private helpers of the torch-trained heads (:mod:`heads.mlp`, :mod:`heads.siamese`).

Seeded, deterministic training on CPU: a fixed number of OpenMP threads (set with
``threadpoolctl`` for the calling thread and restored afterwards), torch's deterministic
algorithms switched on for the duration of the fit, and torch's global random state forked
and seeded (dropout draws from it), so a fit changes nothing outside itself. AdamW on
mini-batches, early stopping on a held-out split, the best epoch's parameters kept.

torch is imported inside the functions, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from .errors import HeadParamError

__all__ = ["TORCH_THREADS", "batch_rows", "check_hidden", "check_positive_int", "check_real", "deterministic_torch",
           "holdout_split", "standardized", "train_adamw"]

#: OpenMP threads torch runs on inside fit and predict: fixed, so that a seeded fit gives the same
#: parameters on every machine (a matrix product's sums can be split differently across threads).
#: One: the networks are small, and on a busy 2-core machine a second worker waiting for a core made a
#: 1,000-row fit 3 times slower (a 256 x 3,000 x 512 product with its gradient: 8.4 ms on 1 thread).
TORCH_THREADS = 1
_TOL = 1e-4  # smallest decrease of the monitored loss that counts as progress
_MIN_STEPS_PER_EPOCH = 4  # small data: batches shrink so that an epoch still makes a few steps


def check_positive_int(owner: str, name: str, value: Any) -> None:
    """Raise :class:`HeadParamError` unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise HeadParamError(f"{owner}: {name} must be a positive int; got {value!r}")


def check_real(owner: str, name: str, value: Any, low: float, high: float, *, closed_low: bool = True,
               closed_high: bool = False) -> None:
    """Raise :class:`HeadParamError` unless ``value`` is a real number in the given interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)
    if not ok:
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise HeadParamError(f"{owner}: {name} must be a number in {interval}; got {value!r}")


def check_hidden(owner: str, hidden: Any, *, allow_empty: bool) -> tuple[int, ...]:
    """Widths of the hidden layers: a sequence of at most two positive ints (an int is one layer)."""
    widths = (hidden,) if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool) else hidden
    if widths is None:
        widths = ()
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise HeadParamError(f"{owner}: hidden must be a tuple of at most two positive ints; got {hidden!r}")
    widths = tuple(widths)
    if len(widths) > 2 or (not widths and not allow_empty):
        raise HeadParamError(f"{owner}: hidden must hold {'0' if allow_empty else '1'} to 2 layer widths; "
                             f"got {hidden!r}")
    for width in widths:
        check_positive_int(owner, "every hidden width", width)
    return tuple(int(w) for w in widths)


def holdout_split(codes: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Stratified train / validation row indices, or all rows and ``None`` when no such split fits.

    No split is made when ``fraction`` is 0, when the held-out part could not hold every class
    once, or when a class has a single row.
    """
    n = codes.shape[0]
    everything = np.arange(n, dtype=np.int64)
    if fraction == 0:
        return everything, None
    n_classes = int(codes.max()) + 1
    n_val = math.ceil(fraction * n)
    if n_val < n_classes or n - n_val < n_classes or np.bincount(codes).min() < 2:
        return everything, None
    train_idx, val_idx = train_test_split(everything, test_size=n_val, stratify=codes, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


@contextlib.contextmanager
def deterministic_torch(seed: int | None = None) -> Iterator[None]:
    """Run the block on :data:`TORCH_THREADS` threads with deterministic algorithms, torch's global
    random state forked and (when ``seed`` is given) seeded; everything is restored on exit."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with threadpool_limits(limits=TORCH_THREADS, user_api="openmp"), torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=warn_only)


def batch_rows(n_train: int, batch_size: int, min_steps: int = _MIN_STEPS_PER_EPOCH) -> int:
    """Rows per optimiser step: ``batch_size``, or fewer so that an epoch makes at least ``min_steps`` steps."""
    return max(1, min(batch_size, math.ceil(n_train / min_steps)))


def train_adamw(net: Any, batch_loss: Callable[[Any], Any], monitor: Callable[[], float] | None,
                train_idx: np.ndarray, *, seed: int, lr: float, weight_decay: float, batch_size: int,
                max_epochs: int, patience: int, min_steps: int = _MIN_STEPS_PER_EPOCH) -> tuple[int, float]:
    """AdamW on shuffled mini-batches of ``train_idx`` with early stopping; keeps the best parameters.

    ``batch_loss(rows)`` is the loss of a batch (a tensor of row indices); ``monitor()`` the
    held-out loss after an epoch, or None to monitor the epoch's mean training loss. Batches shrink
    below ``batch_size`` when needed for ``min_steps`` steps per epoch. Training stops
    after ``patience`` epochs without a decrease of at least 1e-4. Returns the epochs run and the
    best monitored loss.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rows_per_step = batch_rows(len(train_idx), batch_size, min_steps)
    order_of = torch.from_numpy(np.asarray(train_idx, dtype=np.int64))
    best_loss, best_state, waited, epoch = math.inf, None, 0, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = order_of[torch.randperm(order_of.shape[0], generator=generator)]
        total = 0.0
        for start in range(0, order.shape[0], rows_per_step):
            rows = order[start : start + rows_per_step]
            loss = batch_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * rows.shape[0]
        net.eval()
        with torch.no_grad():
            monitored = total / order.shape[0] if monitor is None else float(monitor())
        if not math.isfinite(monitored):
            break
        if monitored < best_loss - _TOL:
            best_loss, waited = monitored, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            continue
        waited += 1
        if waited >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return epoch, best_loss


def standardized(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` as C-contiguous float32, computed in float64."""
    return np.ascontiguousarray((np.asarray(X, dtype=np.float64) - mean) / scale, dtype=np.float32)
