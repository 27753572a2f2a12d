"""The "did you mean" phrase of every unknown-name error (backbones, layers, heads, TOML keys)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches_hint"]


def close_matches_hint(name: str, valid: Iterable[str], limit: int = 5, quote: bool = False) -> str:
    """A "did you mean" phrase naming the closest valid names (or a few valid names), each
    ``repr``-quoted with ``quote``."""
    valid = list(valid)
    show = repr if quote else str
    close = difflib.get_close_matches(name, valid, n=limit, cutoff=0.5)
    if close:
        return "did you mean: " + ", ".join(map(show, close))
    shown = valid[: limit * 2]
    more = f" (and {len(valid) - len(shown)} more)" if len(valid) > len(shown) else ""
    return "valid names: " + ", ".join(map(show, shown)) + more
