"""Read IDX files (the MNIST / Fashion-MNIST array format), plain or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the array's values in C order, big-endian. The payload is decoded
with one ``np.frombuffer`` call and its length is checked against the declared sizes.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import SourceError

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_shape"]

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_READ_ERRORS = (OSError, EOFError, zlib.error)


def read_idx(path: str | Path, *, ndim: int | None = None, limit: int | None = None) -> np.ndarray:
    """Read an IDX file into a read-only array in native byte order.

    Parameters
    ----------
    path : str or Path
        The file; names ending ``.gz`` are decompressed.
    ndim : int, optional
        Refuse files whose array does not have this many dimensions.
    limit : int, optional
        Read only the first ``limit`` entries along the first axis (the rest of the file
        is neither decompressed nor checked).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    SourceError
        The file is missing, unreadable, not gzip (for ``.gz``), truncated, or not an IDX file.
    """
    path = Path(path)
    try:
        if limit is None:
            raw = path.read_bytes()
            data = gzip.decompress(raw) if path.suffix == ".gz" else raw
            dtype, shape, offset = _parse_header(data[: 4 + 4 * 255], path, ndim)
            payload = memoryview(data)[offset:]
        else:
            with _open(path) as fh:
                dtype, shape, _ = _parse_header(_read_header(fh), path, ndim)
                shape = (min(shape[0], max(limit, 0)),) + shape[1:]
                payload = memoryview(fh.read(_nbytes(dtype, shape)))
    except FileNotFoundError:
        raise SourceError(f"IDX file {str(path)!r} does not exist") from None
    except _READ_ERRORS as exc:
        raise SourceError(f"cannot read IDX file {str(path)!r}: {type(exc).__name__}: {exc}") from None
    expected = _nbytes(dtype, shape)
    if len(payload) != expected:
        raise SourceError(
            f"IDX file {str(path)!r} declares shape {shape} of {dtype.name} ({expected} bytes of "
            f"data) but holds {len(payload)}; the file is truncated or corrupt"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    array.flags.writeable = False
    return array


def read_idx_shape(path: str | Path, *, ndim: int | None = None) -> tuple[int, ...]:
    """Return the array shape an IDX file declares, reading only its header.

    Parameters and errors as :func:`read_idx`; the payload is not checked.
    """
    path = Path(path)
    try:
        with _open(path) as fh:
            return _parse_header(_read_header(fh), path, ndim)[1]
    except FileNotFoundError:
        raise SourceError(f"IDX file {str(path)!r} does not exist") from None
    except _READ_ERRORS as exc:
        raise SourceError(f"cannot read IDX file {str(path)!r}: {type(exc).__name__}: {exc}") from None


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def _read_header(fh: BinaryIO) -> bytes:
    magic = fh.read(4)
    dims = magic[3] if len(magic) == 4 else 0
    return magic + fh.read(4 * dims)


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _parse_header(data: bytes, path: Path, ndim: int | None) -> tuple[np.dtype, tuple[int, ...], int]:
    where = str(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise SourceError(
            f"{where!r} is not an IDX file: magic number {bytes(data[:4]).hex() or '(empty)'} is not "
            f"00 00 <type> <ndim> with type in {[hex(c) for c in IDX_DTYPES]}"
        )
    dtype, dims = IDX_DTYPES[data[2]], data[3]
    if ndim is not None and dims != ndim:
        raise SourceError(f"IDX file {where!r} holds a {dims}-d array, expected {ndim}-d")
    offset = 4 + 4 * dims
    if len(data) < offset:
        raise SourceError(f"IDX file {where!r} is truncated inside its header")
    shape = struct.unpack(f">{dims}I", bytes(data[4:offset]))
    return dtype, tuple(int(s) for s in shape), offset
