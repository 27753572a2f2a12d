"""``featurestore extract MODEL.onnx SOURCE -o STORE``: features of a source into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import add_arguments, from_arguments
from ..errors import OptionsError
from ..extract import ExtractConfig

if TYPE_CHECKING:
    from ..distributed import RayOptions
    from ..extract import ExtractReport

ENGINES = ("local", "ray")
_RAY_ONLY = ("address", "ray_workers", "gpus_per_worker", "cpus_per_worker")


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="extract features of an image source into a crash-safe store",
        description="Run an exported model over SOURCE (a folder or a .zip of one, WebDataset shards "
                    "(wds:shard-{000..099}.tar or a .tar), a .parquet/.arrow file or folder or a "
                    "datasets.save_to_disk folder, a CSV/TSV of path[,label][,split], or "
                    "fashion-mnist:train / fashion-mnist:test) and append the features to STORE. Content "
                    "already stored is skipped without decoding; bad files are recorded, never fatal "
                    "(unless --strict).",
    )
    p.add_argument("model", type=Path, help="ONNX file from `featurestore export`")
    p.add_argument("source", help="image folder, .zip, wds:PATTERN or .tar, .parquet/.arrow file or folder, "
                                  "CSV/TSV file, or fashion-mnist[:train|:test]")
    p.add_argument("-o", "--output", required=True, type=Path, help="store directory")
    add_arguments(p, ExtractConfig)
    ray = p.add_argument_group("distributed extraction (--engine ray; pip install 'featurestore[distributed]')")
    ray.add_argument("--engine", default="local", choices=ENGINES,
                     help="local: this process (default); ray: a Ray Data pipeline on a cluster or a local Ray")
    ray.add_argument("--address", help="Ray cluster to join, e.g. 'auto' (default: start a local Ray instance)")
    ray.add_argument("--ray-workers", type=int, help="inference actors, each with its own onnxruntime session "
                                                     "(default 2; --workers, its former spelling under --engine "
                                                     "ray, still sets it when --ray-workers is not given)")
    ray.add_argument("--gpus-per-worker", type=float, help="GPUs per inference actor (default 0: CPU)")
    ray.add_argument("--cpus-per-worker", type=float, help="CPUs per inference actor (default 1)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..extract import extract

    options = from_arguments(ExtractConfig, args, progress=args.progress and sys.stderr.isatty())
    if args.engine == "ray":
        if args.decode != "host":
            raise OptionsError("--engine ray decodes on the host; --decode device runs with --engine local")
        report = _extract_on_ray(args, options)
    else:
        given = [f"--{name.replace('_', '-')}" for name in _RAY_ONLY if getattr(args, name) is not None]
        if given:
            raise OptionsError(f"only --engine ray takes {', '.join(given)}")
        report = extract(args.model, args.source, args.output, options)
    print(report.summary())
    if report.decoded == 0:
        print("nothing new to extract: 0 images decoded, 0 inferred")
    return 0


def _extract_on_ray(args: argparse.Namespace, options: ExtractConfig) -> ExtractReport:
    from ..distributed import extract_distributed

    return extract_distributed(args.model, args.source, args.output, options, ray_options(args))


def ray_options(args: argparse.Namespace) -> RayOptions:
    """The :class:`~featurestore.distributed.RayOptions` of ``extract --engine ray``'s flags."""
    from ..distributed import RayOptions

    # Before --ray-workers, --workers set the actors under --engine ray: it still does when alone.
    given = {name: getattr(args, name) for name in _RAY_ONLY if name != "ray_workers"}
    given["workers"] = args.ray_workers if args.ray_workers is not None else args.decode_workers
    return RayOptions(**{name: value for name, value in given.items() if value is not None})
