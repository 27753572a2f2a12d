"""Extract features of an image source into a store: read, key, decode, infer, write.

Items are read and keyed (sha256 of content) on the calling thread; content already in
the store (or known to fail) is skipped before any decoding. Decoding runs in a thread
pool that overlaps inference and writing (Pillow and onnxruntime release the GIL).
Results are consumed in source order, so a store's row order does not depend on timing.
With ``decode="device"`` whole batches of JPEG bytes are decoded on the session's device
instead (:mod:`featurestore.device_decode`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._atomic import file_sha256
from ._config import option
from .augment import AUGMENTATIONS, augment_view, check_augmentations
from .cpu import Int8KernelWarning, int8_kernel_warning, isa_flags, mixed_int8_kernels_warning
from .decode import decode_or_error
from .device_decode import DECODERS, DeviceDecoder
from .errors import ImageDecodeError, OptionsError
from .manifest import StoreConfig
from .session import DEVICES, FeatureModel
from .sources import MAX_FILE_BYTES, CsvSource, ImageSource, SourceItem, TableSource, content_key, open_source
from .spec import Preprocessing
from .tasks import (LabelReport, attach_source_columns, attach_table_columns, check_source_task_types,
                    check_task_types, parse_task_types)
from .writer import StoreWriter, check_shard_rows

__all__ = ["ExtractConfig", "ExtractReport", "extract", "skip_known", "source_options"]

#: Names kept importable for code written before a rename: former name -> present name.
RENAMED = {"ExtractOptions": "ExtractConfig"}


def __getattr__(name: str) -> Any:
    """A former name (:data:`RENAMED`), with a DeprecationWarning naming the present one."""
    if name in RENAMED:
        warnings.warn(f"featurestore.{name} is renamed {RENAMED[name]}; import {RENAMED[name]} instead",
                      DeprecationWarning, stacklevel=2)
        return globals()[RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ExtractConfig:
    """How to run an extraction (the store's fingerprint covers ``views``, ``augment``, ``dtype``).

    Parameters
    ----------
    batch_size : int, default=32
        Images per onnxruntime call.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
    intra_op_threads : int, optional
        onnxruntime threads (default: all cores).
    decode_workers : int, optional
        Decoding threads of the local engine (default: number of cores); ``--decode-workers``,
        formerly ``--workers`` (still accepted, as is the TOML key ``workers``). The Ray engine
        schedules decoding itself and takes its inference actors from ``--ray-workers``
        (:class:`featurestore.distributed.RayOptions` ``workers``).
    shard_rows : int, default=2048
        Rows per shard, the most work a kill can lose.
    views : int, default=0
        Augmented views stored per image besides the clean view 0.
    augment : tuple of str, default=()
        Augmentations for the views (see :data:`featurestore.augment.AUGMENTATIONS`).
    dtype : {'float32', 'float16'}, default='float32'
    strict : bool, default=False
        Stop at the first bad input instead of recording it and carrying on.
    max_file_bytes : int, default=268435456 (256 MiB)
        Image files larger than this are recorded as failures without being read
        (:data:`~featurestore.sources.MAX_FILE_BYTES`). Only regular files are read: devices,
        FIFOs and sockets are recorded as failures without being opened.
    progress : bool, default=True
        Show a progress bar (images/s and ETA) on stderr.
    io_binding : bool or None, default=None
        Use onnxruntime IO binding (default: when running on CUDA).
    inflight : int, default=2
        Batches handed to the inference thread before the host waits for the oldest: the
        next batch is assembled (and, with IO binding, uploaded) while the current one runs.
    decode : {'host', 'device'}, default='host'
        ``host``: Pillow on ``decode_workers`` threads. ``device``: JPEG batches decoded by
        TorchCodec on the session's device (nvJPEG on CUDA), resized there and bound to
        onnxruntime where they lie; needs the ``gpu-decode`` extra, takes no augmented
        views, and its pixels are close to but not always equal to the host's (see
        :mod:`featurestore.device_decode`).
    label_from : str, optional
        WebDataset shards: the member that gives the label, ``cls`` (default), ``txt``,
        ``json:FIELD`` or ``none``. Tables: the label column, or ``none`` (default: the
        ``ClassLabel`` feature, else a column named ``label``).
    image_from : str, optional
        WebDataset shards: the image member's suffix (default: the first image member).
        Tables: the image column (default: the ``Image`` feature, else one named ``image``...).
    task_types : tuple of str, default=()
        A CSV/TSV image list's columns other than ``path``, ``label`` and ``split`` become tasks
        (:mod:`featurestore.tasks`), attached once the features are stored, and so do a
        Parquet/Arrow table's other columns; ``NAME=TYPE`` items set a column's type instead of
        inferring it (CSV: numbers regression, a value holding ``task_sep`` multilabel, else
        classification; tables: from the column's type).
    task_sep : str, default='|'
        Separator of a multilabel cell's labels.
    """

    batch_size: int = option(32, "images per onnxruntime call (default 32)")
    device: str = option("auto", "where the model runs (default auto: CUDA when present)", choices=DEVICES)
    intra_op_threads: int | None = option(
        None, "onnxruntime intra-op threads (default: all cores; ray engine: per actor, its CPUs)", flag="--threads")
    decode_workers: int | None = option(
        None, "decoding threads (default: all cores); --engine ray schedules decoding itself and takes "
              "--ray-workers inference actors", aliases=("--workers",))
    shard_rows: int = option(2048, "rows per shard, the most a kill can lose (default 2048)")
    views: int = option(0, "augmented views per image besides the clean one")
    augment: tuple[str, ...] = option((), f"comma-separated augmentations: {', '.join(AUGMENTATIONS)}", kind="list")
    dtype: str = option("float32", "stored feature dtype", choices=("float32", "float16"))
    strict: bool = option(False, "stop at the first bad input", kind="switch")
    max_file_bytes: int = option(
        MAX_FILE_BYTES, "image files larger than this many bytes are recorded as failures without being read "
                        "(default 268435456 = 256 MiB, an uncompressed RGB image of the largest size decoded)")
    progress: bool = option(True, "no progress bar", kind="negated", toml=False)
    io_binding: bool | None = option(None, "onnxruntime IO binding (auto: on with CUDA)", kind="tristate", toml=False)
    inflight: int = option(2, "batches in flight on the inference thread", cli=False, toml=False)
    decode: str = option(
        "host", "host: Pillow on --decode-workers threads (default); device: JPEG batches decoded by TorchCodec on the "
                "inference device (nvJPEG with --device cuda) and bound to onnxruntime there "
                "(pip install 'featurestore[gpu-decode]'; no --views)", choices=DECODERS)
    label_from: str | None = option(
        None, "WebDataset shards: the member giving the label: cls (default), txt, json:FIELD or none; "
              "Parquet/Arrow tables: the label column or none (default: the ClassLabel feature, else 'label')")
    image_from: str | None = option(
        None, "WebDataset shards: the image member's suffix, e.g. png (default: the first image member); "
              "Parquet/Arrow tables: the image column (default: the Image feature, else 'image', ...)")
    task_types: tuple[str, ...] = option(
        (), "CSV/TSV image lists and Parquet/Arrow tables: extra columns become tasks; NAME=TYPE (classification, "
            "regression, multilabel) sets a column's type instead of inferring it", kind="list", flag="--task-type")
    task_sep: str = option("|", "separator of a multilabel task's labels in a CSV cell, and for a table's list "
                                "column (default |)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionsError(f"batch_size must be >= 1, got {self.batch_size}")
        for name, flag in (("decode_workers", "--decode-workers/--workers"), ("intra_op_threads", "--threads")):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise OptionsError(f"{flag} must be >= 1 (or left out for the default), got {getattr(self, name)}")
        if self.views < 0 or self.inflight < 1:
            raise OptionsError(f"views must be >= 0 and inflight >= 1, got {self.views} and {self.inflight}")
        check_shard_rows(self.shard_rows)
        if isinstance(self.max_file_bytes, bool) or not isinstance(self.max_file_bytes, int) \
                or self.max_file_bytes < 1:
            raise OptionsError(f"max_file_bytes must be an integer >= 1, got {self.max_file_bytes!r}")
        if self.decode not in DECODERS:
            raise OptionsError(f"decode must be one of {', '.join(DECODERS)}, got {self.decode!r}")
        if self.decode == "device" and self.views:
            raise OptionsError("decode='device' takes no augmented views (they are made on the host); "
                                    "use decode='host' with views")
        object.__setattr__(self, "augment", check_augmentations(self.augment))
        parse_task_types(self.task_types)
        if not self.task_sep:
            raise OptionsError("task_sep must not be empty")


@dataclass
class ExtractReport:
    """What an extraction did."""

    store: str
    listed: int = 0
    skipped: int = 0
    duplicates: int = 0
    decoded: int = 0
    rows_added: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tasks: list[LabelReport] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for the end of a run."""
        lines = [
            f"store {self.store}: {self.listed} images listed, {self.skipped} already stored or known bad "
            f"(skipped), {self.duplicates} duplicate content, {self.decoded} decoded and inferred, "
            f"{self.rows_added} rows added, {len(self.failures)} failed",
            f"{self.seconds:.1f} s, {self.images_per_s:.1f} images/s",
        ]
        for failure in self.failures:
            lines.append(f"  FAILED {failure['path']}: {failure['error']}: {failure['message']}")
        for task in self.tasks:
            lines.extend(task.lines())
        return "\n".join(lines)


@dataclass
class _Decoded:
    item: SourceItem
    key: str
    images: list[Any] | None  # numpy (H, W, C) arrays; device tensors with decode="device"
    error: tuple[str, str] | None = None


def _decode_host(item: SourceItem, key: str, data: bytes | np.ndarray, prep: Preprocessing,
                 views: int, augment: tuple[str, ...]) -> list[_Decoded]:
    image, error = decode_or_error(data, prep)
    if error is not None:
        return [_Decoded(item, key, None, (error.cause, error.message))]
    return [_Decoded(item, key, [image] + [augment_view(image, key, v, augment) for v in range(1, views + 1)])]


def _decode_on_device(decoder: DeviceDecoder, chunk: list[tuple[SourceItem, str, bytes | np.ndarray]]
                      ) -> list[_Decoded]:
    images, errors = decoder.decode([data for _, _, data in chunk])
    return [_Decoded(item, key, None, (error.cause, error.message)) if error is not None
            else _Decoded(item, key, [image])
            for (item, key, _), image, error in zip(chunk, images, errors)]


class _BatchRunner:
    """Consumes decoded items in order, batches them through the model, hands rows to the writer.

    Inference runs on its own thread with up to ``inflight`` batches queued, so the host
    keeps reading, hashing and assembling while the model runs; rows reach the writer in
    source order.
    """

    def __init__(self, model: FeatureModel, writer: StoreWriter, report: ExtractReport, options: ExtractConfig,
                 decoder: DeviceDecoder | None = None):
        self.model, self.writer, self.report, self.options = model, writer, report, options
        self.stack, self.run = (np.stack, model.run) if decoder is None else (decoder.stack, model.run_tensor)
        self.batch: list[_Decoded] = []
        self.rows = 0
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.running: deque[tuple[list[_Decoded], Future[dict[str, np.ndarray]]]] = deque()

    def take(self, decoded: _Decoded) -> None:
        if decoded.images is None:
            error, message = decoded.error  # type: ignore[misc]
            self.writer.add_failure(decoded.item.path, decoded.key, error, message)
            self.report.failures.append({"path": decoded.item.path, "key": decoded.key, "error": error,
                                         "message": message})
            if self.options.strict:
                raise ImageDecodeError(decoded.item.path, error, message)
            return
        self.batch.append(decoded)
        self.rows += len(decoded.images)
        if self.rows >= self.options.batch_size:
            self.submit()

    def submit(self) -> None:
        """Hand the assembled batch to the inference thread; write the oldest finished batch if too many wait."""
        if self.batch:
            images = self.stack([image for d in self.batch for image in d.images])  # type: ignore[union-attr]
            for d in self.batch:  # free the pixels (device memory with decode="device"): the batch holds them
                d.images = [None] * len(d.images)  # type: ignore[arg-type]
            self.running.append((self.batch, self.inference.submit(self.run, images)))
            self.batch, self.rows = [], 0
        while len(self.running) > max(0, self.options.inflight - 1):
            self._write_oldest()

    def flush(self) -> None:
        """Run what is assembled and write every batch still in flight."""
        self.submit()
        while self.running:
            self._write_oldest()

    def close(self) -> None:
        self.inference.shutdown(wait=True, cancel_futures=True)

    def _write_oldest(self) -> None:
        batch, future = self.running.popleft()
        features = future.result()
        keys, views, labels, splits, paths = [], [], [], [], []
        for d in batch:
            for view in range(len(d.images)):  # type: ignore[arg-type]
                keys.append(d.key)
                views.append(view)
                labels.append(d.item.label)
                splits.append(d.item.split)
                paths.append(d.item.path)
        self.writer.add_rows(keys, views, labels, splits, paths, features)
        self.report.decoded += len(batch)


def source_options(options: ExtractConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`~featurestore.sources.open_source` that ``options`` sets."""
    return {"label_from": options.label_from, "image_from": options.image_from,
            "max_file_bytes": options.max_file_bytes}


def skip_known(writer: StoreWriter, report: ExtractReport, item: SourceItem, key: str, in_flight: set[str]) -> bool:
    """Skip content already stored, known to be bad, or already queued in this run.

    Counts it (``skipped`` or ``duplicates``) and records the item's path as an alias of the
    stored content. Returns True when the item needs no decoding.
    """
    if key not in writer.stored_keys and key not in writer.failed_keys and key not in in_flight:
        return False
    if key in in_flight:
        report.duplicates += 1
    else:
        report.skipped += 1
    writer.add_alias(key, item.path, item.label, item.split)
    return True


def extract(
    model: str | Path | FeatureModel,
    source: str | os.PathLike[str] | ImageSource,
    store: str | Path,
    options: ExtractConfig | None = None,
) -> ExtractReport:
    """Extract the features of ``source`` with ``model`` into the store at ``store``.

    Content already in the store is skipped without decoding; new content becomes new
    shards. Bad inputs are recorded in the manifest and listed in the report; they never
    stop the job (unless ``options.strict``) and never shift a row.

    Parameters
    ----------
    model : str, Path or FeatureModel
        ONNX file from ``featurestore export``.
    source : str, PathLike or ImageSource
        Anything :func:`featurestore.sources.open_source` accepts.
    store : str or Path
        Store directory (created if missing).
    options : ExtractConfig, optional

    Returns
    -------
    ExtractReport

    Raises
    ------
    StoreMismatchError
        The store was built with another model, layers, preprocessing, views or dtype.
    """
    options = options or ExtractConfig()
    if not isinstance(model, FeatureModel):
        model = FeatureModel(model, device=options.device, intra_op_threads=options.intra_op_threads,
                             io_binding=options.io_binding)
    decoder = None
    if options.decode == "device":
        decoder = DeviceDecoder(model.spec.preprocessing, f"cuda:{model.device_id}" if model.on_cuda else "cpu")
    config = StoreConfig.from_spec(model.spec, file_sha256(model.path), views=options.views,
                                   augment=options.augment, dtype=options.dtype)
    src = open_source(source, **source_options(options))
    task_types = parse_task_types(options.task_types)
    if isinstance(src, CsvSource):
        check_task_types(src.path, task_types)  # before any work
    elif isinstance(src, TableSource):
        check_source_task_types(src, task_types)
    elif task_types:
        raise OptionsError("--task-type applies to the extra columns of a CSV/TSV image list or a Parquet/Arrow "
                           "table; this source has none")
    writer = StoreWriter(store, config, model.spec, shard_rows=options.shard_rows)
    q = model.spec.quantization
    if model.spec.precision == "int8" and q is not None and not model.on_cuda:  # both before any work
        here = isa_flags()
        for message in (int8_kernel_warning(q.cpu_flags, here, model=Path(model.path).name),
                        mixed_int8_kernels_warning(writer.manifest.runs, here, store=str(store))):
            if message:
                warnings.warn(message, Int8KernelWarning, stacklevel=2)
    report = ExtractReport(store=str(store), listed=len(src))
    runner = _BatchRunner(model, writer, report, options, decoder)
    workers = options.decode_workers or os.cpu_count() or 1
    if decoder is not None:  # pending entries are whole batches, decoded on the device
        workers, window = min(2, workers), 3
    else:
        window = max(2 * options.batch_size, 4 * workers)
    chunk: list[tuple[SourceItem, str, bytes | np.ndarray]] = []
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[list[_Decoded]]] = deque()
            in_flight: set[str] = set()
            bar = tqdm(total=len(src), unit="img", desc="extract", disable=not options.progress, smoothing=0.1)
            for item in src:
                bar.update(1)
                try:
                    data = item.read(options.max_file_bytes)
                except OSError as exc:
                    runner.take(_Decoded(item, "", None, (type(exc).__name__, str(exc))))
                    continue
                key = content_key(data)
                if skip_known(writer, report, item, key, in_flight):
                    continue
                in_flight.add(key)
                if decoder is None:
                    pending.append(pool.submit(_decode_host, item, key, data, model.spec.preprocessing,
                                               options.views, options.augment))
                else:
                    chunk.append((item, key, data))
                    if len(chunk) >= options.batch_size:
                        pending.append(pool.submit(_decode_on_device, decoder, chunk))
                        chunk = []
                while pending and (len(pending) >= window or pending[0].done()):
                    for decoded in pending.popleft().result():
                        runner.take(decoded)
                bar.set_postfix(decoded=report.decoded, skipped=report.skipped, failed=len(report.failures),
                                refresh=False)
            if chunk:
                pending.append(pool.submit(_decode_on_device, decoder, chunk))
            while pending:
                for decoded in pending.popleft().result():
                    runner.take(decoded)
            runner.flush()
            bar.close()
    finally:
        runner.close()
        report.seconds = time.perf_counter() - started
        writer.close(run={
            "source": getattr(src, "name", str(source)), "listed": report.listed, "skipped": report.skipped,
            "decoded": report.decoded, "failed": len(report.failures), "seconds": round(report.seconds, 3),
            "decode": options.decode, "cpu_flags": list(isa_flags()),
            **({"device_decode_host_fallbacks": decoder.host_fallbacks} if decoder is not None else {}),
        })
        report.rows_added = writer.rows_added
    if isinstance(src, CsvSource):  # its extra columns, by path: a rerun commits only what changed
        report.tasks = attach_table_columns(store, src.path, task_types, options.task_sep)
    elif isinstance(src, TableSource):  # a table's extra columns, the same way
        report.tasks = attach_source_columns(store, src, task_types, options.task_sep)
    return report
