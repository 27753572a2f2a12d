"""The one timestamp format of every record the package writes (manifests, sidecars, reports)."""

from __future__ import annotations

import time

__all__ = ["utc_timestamp"]


def utc_timestamp() -> str:
    """Now, in UTC, as ``2026-12-01T09:41:05Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
