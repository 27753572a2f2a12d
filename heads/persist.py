"""Save and load fitted heads safely: skops files with an explicit type allowlist, plus a JSON sidecar.

Pickles are never loaded: a ``.pkl``/``.joblib`` file, or any file that is not a skops
archive, is refused before it is opened for unpickling. XGBoost boosters travel inside the
skops file in XGBoost's own UBJ format. The sidecar records the head file's sha256, and a
file whose bytes changed since it was saved is refused before its content is parsed (a
damaged booster can crash XGBoost itself).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from featurestore._atomic import file_sha256, write_bytes_atomic

from .errors import HeadFileNotFoundError, HeadModelFileError, UnsafeHeadError

__all__ = ["HEAD_SUFFIX", "TRUSTED_PREFIXES", "UnsafeHeadError", "save_head", "load_head", "read_sidecar",
           "sidecar_path"]

HEAD_SUFFIX = ".skops"
#: Module prefixes whose types a head file may contain.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "heads.")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav")


def sidecar_path(path: str | Path) -> Path:
    """``head.skops`` -> ``head.skops.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_head(estimator: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``estimator`` with skops and ``metadata`` as the JSON sidecar; return the head's path."""
    import skops.io as sio

    path = Path(path)
    if path.suffix != HEAD_SUFFIX:
        raise HeadModelFileError(f"head files are skops archives; name it with {HEAD_SUFFIX} (got {path.name})")
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, path)
    metadata = {**metadata, "head_sha256": file_sha256(path)}
    write_bytes_atomic(sidecar_path(path), json.dumps(metadata, indent=1, sort_keys=True, default=str).encode())
    return path


def _check_archive(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsafeHeadError(f"{path} looks like a pickle ({path.suffix}); pickles are never loaded. "
                              f"Re-save the head with `featurestore fit ... -o NAME{HEAD_SUFFIX}`")
    if not path.is_file():
        raise HeadFileNotFoundError(f"head file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafeHeadError(f"{path} is not a skops archive; refusing to load it")
    with zipfile.ZipFile(path) as archive:
        if "schema.json" not in archive.namelist():
            raise UnsafeHeadError(f"{path} is a zip file but not a skops archive (no schema.json)")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON metadata saved beside a head, after checking the head file against it.

    Raises
    ------
    UnsafeHeadError
        A pickle, or not a skops archive.
    HeadModelFileError
        The sidecar is missing or unreadable, or the head file's sha256 differs from the
        one the sidecar recorded when it was saved (sidecars written before the hash was
        recorded are not checked).
    """
    path = Path(path)
    _check_archive(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise HeadModelFileError(f"{side} is missing: a head needs its sidecar (store fingerprint, layers, classes)")
    try:
        metadata = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeadModelFileError(f"head sidecar {side} is not valid JSON ({exc}); refit the head") from None
    recorded = metadata.get("head_sha256")
    if recorded is not None and recorded != file_sha256(path):
        raise HeadModelFileError(
            f"head file {path} has changed since it was saved (its sha256 is not the one in {side.name}); "
            "it is damaged or was replaced: restore the original or refit the head")
    return metadata


def load_head(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a head saved by :func:`save_head`, refusing pickles, untrusted types and changed files.

    Returns
    -------
    (estimator, metadata)

    Raises
    ------
    UnsafeHeadError
        Not a skops archive, a pickle, or a type outside :data:`TRUSTED_PREFIXES`.
    HeadModelFileError
        The file changed since it was saved, its sidecar is missing, or loading it failed
        (whatever the loader raised).
    """
    import skops.io as sio

    path = Path(path)
    metadata = read_sidecar(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise HeadModelFileError(f"cannot read head file {path}: {type(exc).__name__}: {exc}; refit the head") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UnsafeHeadError(f"{path} holds types outside the allowlist: {', '.join(refused)}; not loading it")
    try:
        return sio.load(path, trusted=untrusted), metadata
    except Exception as exc:
        raise HeadModelFileError(f"cannot load head file {path}: {type(exc).__name__}: {exc}; refit the head") from None
