"""Ceilings of this machine: fp32 matrix-multiply peak, memory copy and disk bandwidth.

``python -m benchmarks.ceiling [--quick]``. The other benchmarks read ``ceiling.json`` (the
onnxruntime sgemm rate) to state how much of the peak a backbone reaches.

- sgemm: ``n x n`` float32 matrix product through numpy (its BLAS), onnxruntime (a one-node
  MatMul graph, the second operand an initializer so MLAS pre-packs it, as for conv weights)
  and torch, each on every core; ``2 n^3`` FLOP per product.
- memory: ``np.copyto`` of a large array (bytes copied per second).
- disk: writing a file then ``fsync`` (what a crash-safe shard costs), reading it back from the
  page cache, and reading it after ``posix_fadvise(DONTNEED)`` dropped its pages (the device,
  or the hypervisor's cache on a VM). No global cache drop: other processes share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, fmt, make_parser, measure, parse_args, repeats_for, run_and_report, scratch_dir
from ._common import speed_ratio, spread_cell, table

__all__ = ["main", "ort_sgemm_session", "peak_gflops"]

_CHUNK = 64 * 2**20


def ort_sgemm_session(n: int, b: np.ndarray, threads: int):
    """An onnxruntime session computing ``A @ B`` for ``A`` of shape ``(n, n)`` (``B`` an initializer)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])], "sgemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    # onnx 1.23 writes IR version 14 by default, which onnxruntime 1.31 rejects.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def peak_gflops(args: argparse.Namespace) -> tuple[float, str]:
    """The onnxruntime sgemm rate (GFLOP/s) and where it comes from.

    Read from ``ceiling.json`` in ``args.results_dir`` when that run had the same ``--quick``
    setting, else measured now (a smaller sgemm, 3 repeats).
    """
    path = args.results_dir / "ceiling.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("quick") == args.quick:
            return float(doc["peak"]["sgemm_gflops_onnxruntime"]), f"ceiling.json of {doc['created']}"
    n = 1024 if args.quick else 2048
    a = np.random.default_rng(args.seed).standard_normal((n, n), dtype=np.float32)
    session = ort_sgemm_session(n, a, len(os.sched_getaffinity(0)))
    stats = measure([Variant("sgemm", lambda _: session.run(None, {"A": a}), 2.0 * n**3 / 1e9, "GFLOP")], 3,
                    warmup=True)
    return float(stats["sgemm"]["rate"]), f"measured by this run (onnxruntime sgemm n={n}; no ceiling.json)"


def _sgemm_variants(n: int, threads: int, seed: int) -> list[Variant]:
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    session = ort_sgemm_session(n, b, threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    flop = 2.0 * n**3 / 1e9
    return [
        Variant("sgemm numpy", lambda _: a @ b, flop, "GFLOP"),
        Variant("sgemm onnxruntime", lambda _: session.run(None, {"A": a}), flop, "GFLOP"),
        Variant("sgemm torch", lambda _: torch.mm(ta, tb), flop, "GFLOP"),
    ]


def _write_file(path: Path, payload: np.ndarray, size: int) -> None:
    view = memoryview(payload).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < size:
            written += os.write(fd, view[: min(len(view), size - written)])
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path: Path, buffer: bytearray) -> int:
    with open(path, "rb", buffering=0) as fh:
        view, total = memoryview(buffer), 0
        while n := fh.readinto(view[total:]):
            total += n
    return total


def _drop_file_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _memory_disk_variants(copy_bytes: int, disk_bytes: int, workdir: Path, seed: int) -> list[Variant]:
    src = np.random.default_rng(seed).integers(0, 255, copy_bytes, dtype=np.uint8)
    dst = np.ones_like(src)
    payload = np.random.default_rng(seed + 1).integers(0, 255, min(disk_bytes, _CHUNK), dtype=np.uint8)
    write_path, read_path = workdir / "write.bin", workdir / "read.bin"
    _write_file(read_path, payload, disk_bytes)
    buffer = bytearray(disk_bytes)
    gb_copy, gb_disk = copy_bytes / 1e9, disk_bytes / 1e9
    return [
        Variant("memory copy", lambda _: np.copyto(dst, src), gb_copy, "GB"),
        Variant("disk write + fsync", lambda _: _write_file(write_path, payload, disk_bytes), gb_disk, "GB",
                setup=lambda: write_path.unlink(missing_ok=True)),
        Variant("page-cache read", lambda _: _read_file(read_path, buffer), gb_disk, "GB",
                setup=lambda: _read_file(read_path, buffer)),
        Variant("disk read (pages dropped)", lambda _: _read_file(read_path, buffer), gb_disk, "GB",
                setup=lambda: _drop_file_cache(read_path)),
    ]


def _tables(stats: dict[str, dict[str, Any]], ratios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [[name, fmt(s["median_s"], "s"), f"{fmt(s['rate'])} {s['rate_unit']}", spread_cell(s)]
            for name, s in stats.items()]
    ratio_rows = [[name, f"{r['value']:.2f}", f"{r['paired_min']:.2f}-{r['paired_max']:.2f}", r["definition"]]
                  for name, r in ratios.items()]
    return [table("Ceilings (median of the repeats)", ["measurement", "median time", "rate", "spread"], rows),
            table("Ratios", ["ratio", "value", "per-repeat range", "definition"], ratio_rows)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the ceilings; return the results document (without machine info)."""
    threads = len(os.sched_getaffinity(0))
    n = args.n or (512 if args.quick else 4096)
    copy_mib = args.copy_mib or (64 if args.quick else 1024)
    disk_mib = args.disk_mib or (32 if args.quick else 1024)
    with scratch_dir(args, "ceiling") as workdir:
        variants = _sgemm_variants(n, threads, args.seed)
        variants += _memory_disk_variants(copy_mib * 2**20, disk_mib * 2**20, workdir, args.seed)
        stats = measure(variants, repeats_for(args), warmup=True)
    ratios = {
        "onnxruntime / numpy sgemm": speed_ratio(stats, "sgemm onnxruntime", "sgemm numpy"),
        "torch / numpy sgemm": speed_ratio(stats, "sgemm torch", "sgemm numpy"),
        "page-cache read / memory copy": speed_ratio(stats, "page-cache read", "memory copy"),
        "disk write + fsync / page-cache read": speed_ratio(stats, "disk write + fsync", "page-cache read"),
    }
    peak = max(stats[k]["rate"] for k in ("sgemm numpy", "sgemm onnxruntime", "sgemm torch"))
    return {
        "parameters": {"sgemm_n": n, "threads": threads, "copy_mib": copy_mib, "disk_mib": disk_mib},
        "variants": stats, "ratios": ratios,
        "peak": {"sgemm_gflops_best": peak, "sgemm_gflops_onnxruntime": stats["sgemm onnxruntime"]["rate"],
                 "memory_copy_gbs": stats["memory copy"]["rate"]},
        "targets": [], "notes": [],
        "tables": _tables(stats, ratios),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("ceiling", __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="sgemm size (default: 4096; 512 with --quick)")
    parser.add_argument("--copy-mib", type=int, help="memory copy size in MiB (default: 1024; 64 with --quick)")
    parser.add_argument("--disk-mib", type=int, help="disk file size in MiB (default: 1024; 32 with --quick)")
    args = parse_args(parser, argv)
    return run_and_report("ceiling", args, run)


if __name__ == "__main__":
    raise SystemExit(main())
