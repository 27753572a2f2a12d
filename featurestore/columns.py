"""Per-row metadata of a run of committed rows: keys, labels, splits, views, paths and aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .strings import decode_strings

__all__ = ["RowColumns", "encode_categories"]


def encode_categories(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (strings) as codes into their sorted distinct values: ``(uint32 codes, object names)``."""
    names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.uint32).reshape(-1), names.astype(object)


@dataclass
class RowColumns:
    """Per-row metadata of a run of shards, and the aliases they hold.

    Labels and splits are held as codes into their distinct values (a store has few), paths
    as stored (fixed-length utf-8 bytes, or str) and decoded on first use.

    Attributes
    ----------
    keys : numpy.ndarray of S64
    label_codes, split_codes : numpy.ndarray of uint32
    label_names, split_names : numpy.ndarray of object (str)
    views : numpy.ndarray of uint16
    raw_paths : numpy.ndarray of bytes (S) or object (str)
    aliases : dict of str to numpy.ndarray
        ``keys`` (S64), ``paths``, ``labels``, ``split`` (object arrays of str).
    """

    keys: np.ndarray
    label_codes: np.ndarray
    label_names: np.ndarray
    split_codes: np.ndarray
    split_names: np.ndarray
    views: np.ndarray
    raw_paths: np.ndarray
    aliases: dict[str, np.ndarray]

    @classmethod
    def from_strings(cls, keys: Any, labels: Any, splits: Any, views: Any, paths: Any,
                     aliases: dict[str, Any] | None = None) -> "RowColumns":
        """Columns from per-row values (labels and splits as str, "" for none)."""
        label_codes, label_names = encode_categories(labels)
        split_codes, split_names = encode_categories(splits)
        obj = lambda values: np.array(list(values), dtype=object)  # noqa: E731
        aliases = aliases or {"keys": [], "paths": [], "labels": [], "split": []}
        return cls(np.array(list(keys), dtype="S64"), label_codes, label_names, split_codes, split_names,
                   np.array(list(views), dtype=np.uint16), obj(paths),
                   {"keys": np.array(list(aliases["keys"]), dtype="S64"), "paths": obj(aliases["paths"]),
                    "labels": obj(aliases["labels"]), "split": obj(aliases["split"])})

    @classmethod
    def empty(cls) -> "RowColumns":
        return cls.from_strings([], [], [], [], [])

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labels(self) -> np.ndarray:
        return self.label_names[self.label_codes] if len(self.label_names) else np.array([], dtype=object)

    @property
    def splits(self) -> np.ndarray:
        return self.split_names[self.split_codes] if len(self.split_names) else np.array([], dtype=object)

    @property
    def paths(self) -> np.ndarray:
        """Paths as an object array of str (decoded once)."""
        if self.raw_paths.dtype != object:
            self.raw_paths = decode_strings(self.raw_paths)
        return self.raw_paths

    @classmethod
    def concatenate(cls, parts: list["RowColumns"]) -> "RowColumns":
        """The rows of ``parts`` one after the other (codes re-based on the union of their names)."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        join = np.concatenate

        def recode(codes: str, names: str) -> tuple[np.ndarray, np.ndarray]:
            union = np.unique(join([getattr(p, names).astype(str) for p in parts])).astype(object)
            where = [np.searchsorted(union.astype(str), getattr(p, names).astype(str)).astype(np.uint32)
                     for p in parts]
            return join([w[getattr(p, codes)] if len(w) else getattr(p, codes) for w, p in zip(where, parts)]), union

        label_codes, label_names = recode("label_codes", "label_names")
        split_codes, split_names = recode("split_codes", "split_names")
        raw = [p.raw_paths for p in parts]
        paths = join(raw) if all(r.dtype.kind == "S" for r in raw) else join([p.paths for p in parts])
        return cls(join([p.keys for p in parts]), label_codes.astype(np.uint32), label_names,
                   split_codes.astype(np.uint32), split_names, join([p.views for p in parts]), paths,
                   {name: join([p.aliases[name] for p in parts]) for name in parts[0].aliases})
