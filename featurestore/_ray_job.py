"""The Ray side of :mod:`featurestore.distributed`: its options (:class:`RayOptions`, re-exported
there), the Ray session and the Ray Data pipeline.

Ray is imported here only, and only when a function runs (:func:`import_ray`), so the rest of
the package works without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator
import os
from dataclasses import dataclass
from typing import Any

from ._ray_tasks import InferenceWorker, decode_block
from ._ray_units import decode_unit, key_unit
from .errors import BackendUnavailableError, OptionsError
from .extract import ExtractConfig
from .spec import ModelSpec

__all__ = ["RayOptions", "DECODE_IMAGES", "import_ray", "ray_session", "check_resources", "run_key_pass",
           "run_ray_job"]

#: Images per decoding task, roughly (aligned with the shard size when it can be).
DECODE_IMAGES = 32


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run a distributed extraction.

    Parameters
    ----------
    address : str, optional
        Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:10001``). None starts a
        local Ray instance for the run and stops it afterwards; a Ray already initialised
        in this process is used as it is.
    workers : int, default=2
        Inference actors, each with its own onnxruntime session (``extract --ray-workers``).
    gpus_per_worker : float, default=0
        GPUs per actor; with any, actors run on CUDA (unless ``device='cpu'``).
    cpus_per_worker : float, default=1
        CPUs reserved per actor (also its onnxruntime threads, rounded up, unless set).
    num_cpus : int, optional
        Logical CPUs of a local instance (default: this machine's cores for decoding plus
        the workers' CPUs, so reserving actors never starves decoding).
    max_restarts : int, default=3
        How often Ray restarts a dead actor and retries its batch.
    """

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    num_cpus: int | None = None
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise OptionsError(f"workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise OptionsError(f"gpus_per_worker must be >= 0 and cpus_per_worker > 0, got "
                                    f"{self.gpus_per_worker} and {self.cpus_per_worker}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise OptionsError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.max_restarts < 0:
            raise OptionsError(f"max_restarts must be >= 0, got {self.max_restarts}")

    def local_cpus(self) -> int:
        """Logical CPUs to give a local instance (see ``num_cpus``)."""
        return self.num_cpus or (os.cpu_count() or 1) + math.ceil(self.workers * self.cpus_per_worker)


def import_ray() -> Any:
    """``ray`` with Ray Data, or a :class:`FeatureStoreError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "--engine ray needs Ray Data, which is not installed: pip install 'featurestore[distributed]'"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(opts: RayOptions) -> Iterator[tuple[Any, bool]]:
    """(ray, started here) for the run: this process's Ray, the cluster at ``address``, or a new local one.

    A local instance started here is shut down afterwards; a joined cluster is only left.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray, False
        return
    if opts.address:
        ray.init(address=opts.address, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=opts.local_cpus(), include_dashboard=False, logging_level="WARNING")
    try:
        yield ray, not opts.address
    finally:
        ray.shutdown()


def check_resources(ray: Any, opts: RayOptions, fixed: bool) -> None:
    """Refuse (``fixed``: a local instance started here) or warn about a cluster too small for the workers."""
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    need_cpus, need_gpus = opts.workers * opts.cpus_per_worker + 1, opts.workers * opts.gpus_per_worker
    if cpus >= need_cpus and gpus >= need_gpus:
        return
    message = (f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs; {opts.workers} workers x "
               f"({opts.cpus_per_worker:g} CPU, {opts.gpus_per_worker:g} GPU) plus one CPU for decoding need "
               f"{need_cpus:g} CPUs and {need_gpus:g} GPUs; lower --ray-workers or --cpus-per-worker, or add nodes")
    if fixed:
        raise BackendUnavailableError(message)
    warnings.warn(message + " (waiting for an autoscaler, if the cluster has one)", RuntimeWarning, stacklevel=3)


def decode_rows(images_per_shard: int) -> int:
    """Images per decoding block: a divisor or multiple of a shard's images near :data:`DECODE_IMAGES`.

    Aligned blocks let each actor batch (one shard) be made of whole blocks.
    """
    if images_per_shard <= DECODE_IMAGES:
        return images_per_shard * (DECODE_IMAGES // images_per_shard)
    divisor = max(d for d in range(1, DECODE_IMAGES + 1) if images_per_shard % d == 0)
    return divisor if divisor >= DECODE_IMAGES // 4 else DECODE_IMAGES


def run_key_pass(ray: Any, units: list[Any], source: Any, max_file_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Key the units on Ray tasks (:func:`~featurestore._ray_units.key_unit`); yield each unit's rows, in unit order."""
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, False
    order, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        ds = ray.data.from_items([{"unit": json.dumps(u)} for u in units], override_num_blocks=len(units))
        ds = ds.map_batches(key_unit, batch_size=1, batch_format="numpy", num_cpus=1,
                            fn_kwargs={"source": source, "max_file_bytes": max_file_bytes})
        for row in ds.iter_rows():
            yield json.loads(row["rows"])
    finally:
        context.enable_progress_bars, context.execution_options.preserve_order = bars, order


def run_ray_job(ray: Any, todo: list[dict[str, Any]], spec: ModelSpec, options: ExtractConfig,
                opts: RayOptions, worker_args: dict[str, Any], units: tuple[Any, int] | None = None
                ) -> Iterator[dict[str, Any]]:
    """Run the Ray Data job over ``todo``; yield each shard's metadata as it completes (in no fixed order).

    ``todo`` holds listed items (:func:`~featurestore._ray_tasks.decode_block` reads them), or,
    with ``units`` = (source, items), units with their wanted items, read by the workers
    (:func:`~featurestore._ray_units.decode_unit`).
    """
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, False  # the driver's tqdm is the bar
    try:
        for row in _dataset(ray, todo, spec, options, opts, worker_args, units).iter_rows():
            yield json.loads(row["meta"])
    finally:
        context.enable_progress_bars = bars


def _dataset(ray: Any, todo: list[dict[str, Any]], spec: ModelSpec, options: ExtractConfig, opts: RayOptions,
             worker_args: dict[str, Any], units: tuple[Any, int] | None = None) -> Any:
    """Listed items (or units) -> decode tasks -> inference actors (one shard per batch) -> a metadata row per batch."""
    images_per_shard = max(1, options.shard_rows // (options.views + 1))
    rows = decode_rows(images_per_shard)
    kwargs = {"preprocessing": spec.preprocessing, "views": options.views, "augment": options.augment,
              "shape": spec.input_shape}
    if units is None:
        blocks = math.ceil(len(todo) / rows)
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(decode_block, batch_size=None, batch_format="numpy", num_cpus=1, fn_kwargs=kwargs)
    else:
        source, items = units
        blocks = math.ceil(items / rows)
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map_batches(decode_unit, batch_size=1, batch_format="numpy", num_cpus=1, fn_kwargs={
            **kwargs, "source": source, "max_file_bytes": options.max_file_bytes, "rows": rows})
    with warnings.catch_warnings():
        # Ray 2.60 deprecates max_restarts / max_task_retries as map_batches keywords (gone in 2.64,
        # where Ray Data's defaults, unlimited restarts and retries, would apply).
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            InferenceWorker, batch_size=images_per_shard, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(opts.workers, blocks)), fn_constructor_kwargs=worker_args,
            num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker or None,
            max_restarts=opts.max_restarts, max_task_retries=opts.max_restarts,
        )
