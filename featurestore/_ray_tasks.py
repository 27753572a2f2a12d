"""What runs on Ray workers for :mod:`featurestore.distributed`: decode blocks, infer and write shards.

Nothing here imports Ray: these are the plain callables that ``Dataset.map_batches`` ships
to tasks (:func:`decode_block`) and actors (:class:`InferenceWorker`). Batches are dicts
of numpy arrays (``batch_format="numpy"``).

Columns between the stages: ``key``, ``path``, ``label``, ``split`` (str), ``error`` and
``message`` (str, empty when the image decoded) and ``pixels`` (uint8, ``(n, views + 1,
H, W, C)``; zeros on rows that failed).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import file_sha256
from .augment import augment_view
from .decode import decode_or_error
from .errors import FeatureStoreError, SourceChangedError, StoreMismatchError
from .session import FeatureModel
from .shard_buffer import ShardBuffer
from .shard_write import write_shard
from .sources import SourceItem, content_key
from .spec import Preprocessing

__all__ = ["CRASH_ENV", "decode_block", "array_to_bytes", "InferenceWorker"]

#: Test hook: ``"K:TOKEN_FILE"`` makes the first worker that creates TOKEN_FILE exit
#: abruptly (``os._exit(1)``) right after writing its K-th shard, before the driver hears of it.
CRASH_ENV = "FEATURESTORE_RAY_CRASH_AFTER"


def array_to_bytes(array: np.ndarray) -> bytes:
    """An in-memory image as ``.npy`` bytes (so it travels in an Arrow binary column)."""
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _read(path: str, key: str, array: bytes, data: bytes = b"") -> bytes | np.ndarray:
    """The item's content: the shipped array or member bytes, else the file re-read and checked against its key."""
    if array:
        return np.load(io.BytesIO(array), allow_pickle=False)
    if data:  # an archive member or table cell, after its marker byte
        return data[1:]
    data = SourceItem(path).read()  # regular files only, at most the default MAX_FILE_BYTES
    if content_key(data) != key:
        raise SourceChangedError("the file changed after it was listed; rerun to extract its new content")
    return data


def _decode_one(path: str, key: str, array: bytes, prep: Preprocessing, views: int,
                augment: tuple[str, ...], member: bytes = b"") -> tuple[list[np.ndarray] | None, str, str, str]:
    """(images, key to record, error, message); the key is '' when the content could not be read."""
    try:
        data = _read(path, key, array, member)
    except OSError as exc:
        return None, "", type(exc).__name__, str(exc)
    image, error = decode_or_error(data, prep)
    if error is not None:
        return None, key, error.cause, error.message
    return [image] + [augment_view(image, key, v, augment) for v in range(1, views + 1)], key, "", ""


def decode_block(batch: dict[str, np.ndarray], *, preprocessing: Preprocessing, views: int,
                 augment: tuple[str, ...], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Decode, resize and augment a block of listed items (a Ray Data task).

    Bad inputs become rows with ``error`` set and zero pixels; they never raise.
    """
    n = len(batch["key"])
    pixels = np.zeros((n, views + 1, *shape), np.uint8)
    keys, errors, messages = [], [], []
    for i in range(n):
        images, key, error, message = _decode_one(str(batch["path"][i]), str(batch["key"][i]),
                                                  bytes(batch["array"][i]), preprocessing, views, augment,
                                                  bytes(batch["data"][i]) if "data" in batch else b"")
        if images is not None:
            pixels[i] = np.stack(images)
        keys.append(key)
        errors.append(error)
        messages.append(message)
    return {
        "key": np.array(keys, dtype=object), "path": batch["path"], "label": batch["label"],
        "split": batch["split"], "error": np.array(errors, dtype=object),
        "message": np.array(messages, dtype=object), "pixels": pixels,
    }


class InferenceWorker:
    """A Ray Data actor: one onnxruntime session, each batch written as one complete shard.

    Every batch becomes ``STORE/shards/<run_id>-<worker>-<seq>.h5`` (temporary name,
    fsync, rename: :func:`featurestore.shard_write.write_shard`); the worker returns its shard
    entry, the rows' keys/views/paths/labels, the batch's failures and its own timing. The
    driver alone commits the shard (one journal record). A restarted actor gets a new worker
    name, so a retried batch never overwrites a file.

    Errors of this package (the model file this worker sees is not the one the driver
    hashed, no CUDA, a float16 overflow) are returned in the metadata as ``error`` for the
    driver to raise: across processes Ray would keep only their text.
    """

    def __init__(self, model_path: str, model_sha256: str, store: str, run_id: str, *, device: str,
                 intra_op_threads: int | None, batch_size: int, dtype: str, layers: dict[str, tuple[int, ...]],
                 attrs: dict[str, Any], crash: str = "") -> None:
        self.store, self.run_id, self.batch_size = Path(store), run_id, batch_size
        self.dtype, self.layers, self.attrs = dtype, {k: tuple(v) for k, v in layers.items()}, attrs
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.token = secrets.token_hex(3)
        self.seq = 0
        after, _, self.crash_token = crash.partition(":")
        self.crash_after = int(after or 0)
        self.error: FeatureStoreError | None = None
        try:  # reported with the first batch: Ray would only pass the driver a string
            if file_sha256(model_path) != model_sha256:
                raise StoreMismatchError(
                    f"model {model_path} on worker {socket.gethostname()} differs from the driver's (sha256 "
                    f"{model_sha256[:12]}...); put the model on a filesystem every node shares"
                )
            self.model = FeatureModel(model_path, device=device, intra_op_threads=intra_op_threads)
        except FeatureStoreError as exc:
            self.error = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        failures = [
            {"path": str(batch["path"][i]), "key": str(batch["key"][i]), "error": str(batch["error"][i]),
             "message": str(batch["message"][i])}
            for i in np.flatnonzero(~ok)
        ]
        meta: dict[str, Any] = {"worker": self.name, "failures": failures, "images": int(ok.sum()), "shard": None,
                                "error": None}
        try:
            if self.error is not None:
                raise self.error
            if ok.any():
                meta["shard"] = self._write(batch, np.flatnonzero(ok))
        except FeatureStoreError as exc:  # e.g. float16 overflow: the driver raises it as the local engine would
            meta.update(error={"type": type(exc).__name__, "message": str(exc)}, images=0, failures=[])
        self._maybe_crash()
        meta["seconds"] = time.perf_counter() - started
        return {"meta": np.array([json.dumps(meta)], dtype=object)}

    def _write(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, Any]:
        pixels = batch["pixels"][rows]
        per_image = pixels.shape[1]
        images = pixels.reshape(-1, *pixels.shape[2:])
        parts = [self.model.run(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        features = {out: np.concatenate([p[out] for p in parts]) for out in self.model.outputs}

        def repeat(column: str) -> list[str]:
            return [str(v) for v in batch[column][rows] for _ in range(per_image)]

        keys, paths, labels, splits = repeat("key"), repeat("path"), repeat("label"), repeat("split")
        views = list(range(per_image)) * len(rows)
        buffer = ShardBuffer()
        buffer.add_rows(keys, labels, splits, views, paths, features)
        name = f"{self.run_id}-{self.token}-{self.seq:05d}.h5"
        self.seq += 1
        entry = write_shard(self.store, name, buffer, dtype=self.dtype, layers=self.layers, attrs=self.attrs)
        return {"entry": entry.to_dict(), "keys": keys, "views": views, "paths": paths, "labels": labels, "splits": splits}

    def _maybe_crash(self) -> None:
        if self.crash_after and self.seq == self.crash_after:
            try:
                os.close(os.open(self.crash_token, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)
