"""``featurestore extract MODEL.onnx SOURCE -o STORE``: features of a source into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..augment import AUGMENTATIONS
from ..errors import OptionsError
from ..device_decode import DECODERS
from ..session import DEVICES

if TYPE_CHECKING:
    from ..extract import ExtractOptions, ExtractReport

ENGINES = ("local", "ray")
_RAY_ONLY = ("address", "gpus_per_worker", "cpus_per_worker")


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="extract features of an image source into a crash-safe store",
        description="Run an exported model over SOURCE (a folder, a CSV/TSV of path[,label][,split], or "
                    "fashion-mnist:train / fashion-mnist:test) and append the features to STORE. Content "
                    "already stored is skipped without decoding; bad files are recorded, never fatal "
                    "(unless --strict).",
    )
    p.add_argument("model", type=Path, help="ONNX file from `featurestore export`")
    p.add_argument("source", help="image folder, CSV/TSV file, or fashion-mnist[:train|:test]")
    p.add_argument("-o", "--output", required=True, type=Path, help="store directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=int,
                   help="onnxruntime intra-op threads (default: all cores; ray engine: per actor, its CPUs)")
    p.add_argument("--workers", type=int,
                   help="local engine: decoding threads (default: all cores); ray engine: inference actors (default 2)")
    p.add_argument("--shard-rows", type=int, default=2048, help="rows per shard (default 2048)")
    p.add_argument("--views", type=int, default=0, help="augmented views per image besides the clean one")
    p.add_argument("--augment", default="", help=f"comma-separated augmentations: {', '.join(AUGMENTATIONS)}")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--io-binding", choices=("auto", "on", "off"), default="auto",
                   help="onnxruntime IO binding (auto: on with CUDA)")
    p.add_argument("--decode", choices=DECODERS, default="host",
                   help="host: Pillow on --workers threads (default); device: JPEG batches decoded by TorchCodec "
                        "on the inference device (nvJPEG with --device cuda) and bound to onnxruntime there "
                        "(pip install 'featurestore[gpu-decode]'; no --views)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("distributed extraction (--engine ray; pip install 'featurestore[distributed]')")
    ray.add_argument("--engine", default="local", choices=ENGINES,
                     help="local: this process (default); ray: a Ray Data pipeline on a cluster or a local Ray")
    ray.add_argument("--address", help="Ray cluster to join, e.g. 'auto' (default: start a local Ray instance)")
    ray.add_argument("--gpus-per-worker", type=float, help="GPUs per inference actor (default 0: CPU)")
    ray.add_argument("--cpus-per-worker", type=float, help="CPUs per inference actor (default 1)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..extract import ExtractOptions, extract

    options = ExtractOptions(
        batch_size=args.batch_size, device=args.device, intra_op_threads=args.threads,
        decode_workers=args.workers, shard_rows=args.shard_rows, views=args.views,
        augment=tuple(a for a in args.augment.split(",") if a), dtype=args.dtype, strict=args.strict,
        progress=not args.no_progress and sys.stderr.isatty(),
        io_binding={"auto": None, "on": True, "off": False}[args.io_binding], decode=args.decode,
    )
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


def _extract_on_ray(args: argparse.Namespace, options: ExtractOptions) -> ExtractReport:
    from ..distributed import RayOptions, extract_distributed

    given = {name: getattr(args, name) for name in ("workers", *_RAY_ONLY)}
    ray_options = RayOptions(**{name: value for name, value in given.items() if value is not None})
    return extract_distributed(args.model, args.source, args.output, options, ray_options)
