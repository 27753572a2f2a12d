"""Distributed extraction on Ray Data: one store, many workers, the local engine's guarantees.

The driver (the process calling :func:`extract_distributed`) keys every item by content and
drops what the store already has or knows to be bad, exactly as :func:`featurestore.extract`
does. For WebDataset shards, Parquet/Arrow tables, folders and CSV lists it reads no image:
workers read and hash the units it plans (shards, row groups, chunks of its listing; see
:mod:`featurestore._ray_units`) and return only keys. For other sources (zip archives, arrays)
it reads and hashes every item itself and ships the bytes. The rest flows through a Ray Data
pipeline: decoding in CPU tasks, then an actor pool where each actor holds one onnxruntime session and writes
each batch as one complete shard straight into the store (temporary name, fsync, rename).
Only the driver commits shards, one fsynced journal record each, as they arrive (the
journal is folded into a checkpoint now and then, as by the local engine); a
shard that repeats a stored row is never committed as it is (see
:mod:`featurestore._ray_commit`). A killed actor is restarted by Ray and its batch retried;
what it wrote before dying was never committed: the driver deletes it at the end of the
run (or the next open of the store does, if the driver died too).

Ray is an optional dependency (``pip install 'featurestore[distributed]'``), imported only
by :mod:`featurestore._ray_job` when :func:`extract_distributed` has work for it.
Worker code lives in :mod:`featurestore._ray_tasks`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._atomic import file_sha256
from ._ray_commit import DistributedReport, ShardCommitter
from ._ray_job import RayOptions, check_resources, ray_session, run_key_pass, run_ray_job
from ._ray_tasks import CRASH_ENV, array_to_bytes
from ._ray_units import plan_units
from .errors import OptionsError
from .extract import ExtractConfig, skip_known, source_options
from .manifest import STORE_SCHEMA_VERSION, StoreConfig
from .session import FeatureModel
from .sources import ImageSource, SourceItem, WebDatasetSource, content_key, open_source
from .spec import ModelSpec, read_spec
from .writer import StoreWriter

__all__ = ["RayOptions", "DistributedReport", "extract_distributed"]


def _worker_device(device: str, gpus: float) -> str:
    if device == "cuda" and not gpus:
        raise OptionsError("device 'cuda' needs GPUs on the workers: pass --gpus-per-worker 1 (or a fraction)")
    return "cuda" if gpus and device != "cpu" else "cpu"


def _worker_args(model_path: Path, spec: ModelSpec, config: StoreConfig, writer: StoreWriter,
                 options: ExtractConfig, opts: RayOptions) -> dict[str, Any]:
    """Constructor arguments of every :class:`~featurestore._ray_tasks.InferenceWorker`."""
    return {
        "model_path": str(model_path.absolute()), "model_sha256": config.model_sha256,
        "store": str(writer.path.absolute()), "run_id": writer.run_id,
        "device": _worker_device(options.device, opts.gpus_per_worker),
        "intra_op_threads": options.intra_op_threads or math.ceil(opts.cpus_per_worker),
        "batch_size": options.batch_size, "dtype": config.dtype,
        "layers": {layer.output: (layer.dim,) for layer in spec.layers},
        "attrs": {"featurestore_store_schema": STORE_SCHEMA_VERSION, "fingerprint": config.fingerprint,
                  "model_sha256": config.model_sha256},
        "crash": os.environ.get(CRASH_ENV, ""),
    }


def _list(src: ImageSource, writer: StoreWriter, committer: ShardCommitter, bar: Any,
          max_file_bytes: int) -> list[dict[str, Any]]:
    """Key every item; skip, alias or fail it as the local engine does; return the items left to do."""
    report, todo, in_flight = committer.report, [], set()
    for item in src:
        try:
            data = item.read(max_file_bytes)
        except OSError as exc:
            bar.update(1)
            committer.failure(item.path, "", type(exc).__name__, str(exc))
            continue
        key = content_key(data)
        if skip_known(writer, report, item, key, in_flight):
            bar.update(1)
            continue
        in_flight.add(key)
        # Archive members and table cells have no file a worker could read: their bytes travel,
        # after a marker byte (so an empty member stays apart from "read the file").
        member = item.reader is not None and not isinstance(data, np.ndarray)
        todo.append({"key": key, "path": item.path, "label": item.label or "", "split": item.split or "",
                     "array": array_to_bytes(data) if isinstance(data, np.ndarray) else b"",
                     "data": b"M" + bytes(data) if member else b""})
    return todo


def _key_units(keyed: Iterable[tuple[Any, list[dict[str, Any]]]], writer: StoreWriter, committer: ShardCommitter,
               bar: Any) -> tuple[list[dict[str, str]], int]:
    """Skip, alias or fail each keyed item in source order as the local engine does.

    ``keyed`` holds (unit, its rows from :func:`~featurestore._ray_units.key_unit`), in unit
    order. Returns the units that hold new content, each with its wanted items, and how many
    items those are. The driver sees paths, labels and keys only, never image bytes.
    """
    report, todo, in_flight, wanted, listed = committer.report, [], set(), 0, 0
    for unit, rows in keyed:
        want = []
        for i, row in enumerate(rows):
            listed += 1
            if row["error"]:
                bar.update(1)
                committer.failure(row["path"], "", row["error"], row["message"])
                continue
            key = row["key"]
            if skip_known(writer, report, SourceItem(row["path"], row["label"], row["split"]), key, in_flight):
                bar.update(1)
                continue
            in_flight.add(key)
            want.append([i, key, row["path"]])
        if want:
            todo.append({"unit": json.dumps(unit), "want": json.dumps(want)})
            wanted += len(want)
    report.listed = listed
    if bar.total is None:
        bar.total = listed
        bar.refresh()
    return todo, wanted


def extract_distributed(
    model: str | Path | FeatureModel,
    source: str | os.PathLike[str] | ImageSource,
    store: str | Path,
    options: ExtractConfig | None = None,
    ray_options: RayOptions | None = None,
) -> DistributedReport:
    """Extract ``source`` with ``model`` into ``store`` on a Ray cluster (or a local Ray instance).

    Same keys, skips, aliases, failures and store format as :func:`featurestore.extract`;
    only the row order within the store differs (shards commit as workers finish). The
    store directory and the model file must be on a filesystem every node shares.

    Parameters
    ----------
    model : str, Path or FeatureModel
        ONNX file from ``featurestore export`` (a FeatureModel is used for its path only).
    source : str, PathLike or ImageSource
        Anything :func:`featurestore.sources.open_source` accepts.
    store : str or Path
        Store directory (created if missing).
    options : ExtractConfig, optional
        As for the local engine; ``decode_workers`` is unused (Ray schedules decoding) and
        ``intra_op_threads`` applies per worker.
    ray_options : RayOptions, optional
        Cluster address and worker resources.

    Returns
    -------
    DistributedReport

    Raises
    ------
    StoreMismatchError
        The store was built with another configuration.
    FeatureStoreError
        Ray is not installed, or the cluster cannot hold the workers asked for.
    ImageDecodeError
        A bad input with ``options.strict``.

    Examples
    --------
    >>> report = extract_distributed("tiny.onnx", "images/", "store",
    ...                              ray_options=RayOptions(workers=2))  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    options = options or ExtractConfig()
    opts = ray_options or RayOptions()
    model_path = Path(model.path if isinstance(model, FeatureModel) else model)
    if not isinstance(model, FeatureModel):
        FeatureModel(model_path, device="cpu", intra_op_threads=1)  # the graph checked against its spec, before the store is made
    spec = read_spec(model_path)
    _worker_device(options.device, opts.gpus_per_worker)
    config = StoreConfig.from_spec(spec, file_sha256(model_path), views=options.views, augment=options.augment,
                                   dtype=options.dtype)
    src = open_source(source, **source_options(options))
    writer = StoreWriter(store, config, spec, shard_rows=options.shard_rows)
    plan = plan_units(src)
    # Counting WebDataset samples means reading every shard: its workers count them instead.
    listed = None if plan is not None and isinstance(src, WebDatasetSource) else len(src)
    report = DistributedReport(store=str(store), listed=listed or 0)
    started = time.perf_counter()
    bar = tqdm(total=listed, unit="img", desc="extract", disable=not options.progress, smoothing=0.1)
    committer = ShardCommitter(writer, report, options.strict, progress=bar.update)

    def commit_all(ray: Any, todo: list[dict[str, Any]], units: tuple[Any, int] | None = None) -> None:
        for meta in run_ray_job(ray, todo, spec, options, opts, args, units):
            committer.take(meta)
            bar.set_postfix(decoded=report.decoded, skipped=report.skipped, failed=len(report.failures),
                            workers=len(report.workers), refresh=False)

    try:
        args = _worker_args(model_path, spec, config, writer, options, opts)
        if plan is None:  # items only the driver can read (in-memory arrays, zip members): it ships them
            todo = _list(src, writer, committer, bar, options.max_file_bytes)
            if todo:
                with ray_session(opts) as (ray, local):
                    check_resources(ray, opts, fixed=local)
                    commit_all(ray, todo)
                writer.remove_uncommitted()
        elif plan[0]:  # units the workers read, key and decode themselves
            units, shipped = plan
            with ray_session(opts) as (ray, local):
                check_resources(ray, opts, fixed=local)
                keyed = zip(units, run_key_pass(ray, units, shipped, options.max_file_bytes))
                todo, wanted = _key_units(keyed, writer, committer, bar)
                if todo:
                    commit_all(ray, todo, (shipped, wanted))
            writer.remove_uncommitted()
        bar.close()
    finally:
        report.seconds = time.perf_counter() - started
        writer.close(run={
            "source": getattr(src, "name", str(source)), "listed": report.listed, "skipped": report.skipped,
            "decoded": report.decoded, "failed": len(report.failures), "seconds": round(report.seconds, 3),
            "engine": "ray", "workers": {name: {k: round(v, 3) for k, v in w.items()}
                                         for name, w in report.workers.items()},
        })
        report.rows_added = writer.rows_added
    return report
