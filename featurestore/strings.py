"""String columns: how a store writes strings into HDF5 and reads them back, one codec each way.

Labels, splits and paths are stored as fixed-length utf-8 strings, as long as the longest
entry. Strings are encoded with ``surrogateescape``: a file name that is not valid UTF-8
(which Python holds with surrogate escapes, as ``os.listdir`` returns it) is stored as its
own bytes, and :func:`decode_strings` gives back the same str. Shards written by earlier
versions hold variable-length strings, which decode the same.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

__all__ = ["encode_strings", "decode_strings"]


def encode_strings(values: list[str] | tuple[str, ...]) -> tuple[np.ndarray, Any]:
    """``values`` as a fixed-length utf-8 column (data and HDF5 dtype), as long as the longest entry."""
    try:  # ASCII, the common case: numpy encodes it without a Python loop
        data = np.array(values, dtype=str).astype("S") if len(values) else np.array([], dtype="S1")
    except UnicodeEncodeError:
        data = np.array([v.encode("utf-8", "surrogateescape") for v in values], dtype="S")
    width = max(data.dtype.itemsize, 1)
    string_dtype = h5py.string_dtype("utf-8", length=width)
    return data.astype(string_dtype), string_dtype


def decode_strings(raw: Any) -> np.ndarray:
    """A string column as an object array of str, whatever it was read as.

    Fixed-length utf-8 bytes (numpy decodes ASCII without a Python loop), variable-length
    strings as h5py reads them (an object array of bytes), or str already. Bytes that are not
    valid UTF-8 (a file name stored as its own bytes) decode with ``surrogateescape``, giving
    back the str Python uses for that name (``os.fsdecode``).
    """
    raw = np.asarray(raw)
    if not len(raw):
        return np.array([], dtype=object)
    if raw.dtype.kind == "S":
        if np.frombuffer(raw.tobytes(), dtype=np.uint8).max(initial=0) < 128:
            return raw.astype(str).astype(object)
        return np.array([b.decode("utf-8", "surrogateescape") for b in raw.tolist()], dtype=object)
    if raw.dtype == object and any(isinstance(v, bytes) for v in raw.tolist()):
        return np.array([v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in raw.tolist()],
                        dtype=object)
    return raw.astype(object)
