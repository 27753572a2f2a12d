"""Rows waiting to become a shard, and the statistics a shard's entry records for each layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .columns import RowColumns

__all__ = ["ShardBuffer", "layer_stats"]


@dataclass
class ShardBuffer:
    """Rows waiting to be written as one shard."""

    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    aliases: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def add_rows(self, keys: list[str], labels: list[str], splits: list[str], views: list[int],
                 paths: list[str], features: dict[str, np.ndarray]) -> None:
        """Append rows; ``features`` maps each output to an array of ``len(keys)`` rows."""
        self.keys += keys
        self.labels += labels
        self.splits += splits
        self.views += views
        self.paths += paths
        for name, values in features.items():
            self.features.setdefault(name, []).append(values)

    def columns(self) -> RowColumns:
        """The buffered rows' metadata and aliases, as the shard stores them."""
        aliases = list(zip(*self.aliases)) if self.aliases else [(), (), (), ()]
        return RowColumns.from_strings(self.keys, self.labels, self.splits, self.views, self.paths,
                                       dict(zip(("keys", "paths", "labels", "split"), aliases)))


def layer_stats(values: np.ndarray) -> dict[str, float]:
    """Aggregatable statistics of one layer's rows: count, sum, sum of squares, min, max, norms.

    Totals accumulate in float64 without a float64 copy of the rows; non-finite values are
    counted and left out of every statistic.
    """
    v = values if values.dtype == np.float32 else values.astype(np.float32)
    nonfinite = 0
    if v.size and not (np.isfinite(v.min()) and np.isfinite(v.max())):
        finite = np.isfinite(v)
        nonfinite = int(v.size - finite.sum())
        kept = v[finite]
        v = np.where(finite, v, np.float32(0.0))
    else:
        kept = v
    low, high = (float(kept.min()), float(kept.max())) if kept.size else (float("nan"), float("nan"))
    flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:]))) if v.ndim else v.reshape(1, 1)
    squares = np.einsum("ij,ij->i", flat, flat).astype(np.float64)  # per-row sums stay short in float32
    return {
        "count": int(v.size),
        "sum": float(flat.sum(axis=1).sum(dtype=np.float64)),  # row sums in float32 (pairwise), total in float64
        "sumsq": float(squares.sum()),
        "min": low,
        "max": high,
        "nonfinite": nonfinite,
        "norm_sum": float(np.sqrt(squares).sum()) if v.ndim == 2 else 0.0,
    }
