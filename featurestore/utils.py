"""What featurestore's core shares with ``export`` and ``heads``: files written atomically, their
sha256, "did you mean" hints and the timestamps every record carries.

The implementations live in private modules of the core; this is the one public door to them, so
no other package imports a private module of ``featurestore``.
"""

from __future__ import annotations

from ._atomic import file_sha256, write_bytes_atomic
from ._hints import close_matches_hint
from ._time import utc_timestamp

__all__ = ["file_sha256", "write_bytes_atomic", "close_matches_hint", "utc_timestamp"]
