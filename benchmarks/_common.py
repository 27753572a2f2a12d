"""Shared pieces of the benchmark scripts: interleaved timing, statistics, machine info, results, tables.

Every figure a benchmark reports is a ratio of variants measured in the same run: the
variants of one comparison are timed in turn, repeat after repeat (repeat ``r`` runs them
rotated by ``r``), so slow drift of a busy machine hits them all alike. Each variant keeps
every sample; the JSON holds median, min, max and spread, and each ratio comes with the
range of its per-repeat (paired) ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_DIR", "REPO_ROOT", "RESULTS_DIR", "SCHEMA_VERSION", "Variant", "cpu_info", "fashion_mnist_missing", "fmt",
    "machine_info",
    "make_parser", "measure", "parse_args", "print_tables", "ratio_cell", "repeats_for", "scratch_dir", "speed_ratio",
    "spread_cell", "summarize", "table", "time_ratio", "train_test_matrices", "write_result",
]

SCHEMA_VERSION = 1
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
RESULTS_DIR = PACKAGE_DIR / "results"
CACHE_DIR = PACKAGE_DIR / ".cache"
_PACKAGES = ("numpy", "onnxruntime-gpu", "onnxruntime", "onnx", "torch", "torchvision", "h5py", "scikit-learn",
             "pillow", "scikit-image", "featurestore")
#: The flags a benchmark states, in this order (each one of featurestore.cpu.ISA_FLAGS, which isa_flags reads).
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


# --- data ---------------------------------------------------------------------------------------
def fashion_mnist_missing() -> str | None:
    """Why Fashion-MNIST (Debian's ``dataset-fashion-mnist``) cannot be read, or None when it can."""
    from featurestore import FashionMnistSource
    from featurestore.errors import SourceError

    try:
        FashionMnistSource("test", limit=1)
    except SourceError as exc:
        return str(exc)
    return None


def train_test_matrices(store: Path, layers: Sequence[str] | None = None, view: int = 0, task: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` of a store's ``train`` and ``test`` splits (``layers``: default all;
    ``task``: that task's rows and targets, default the labels)."""
    from featurestore import open_store

    opened = open_store(store)
    train, test = (opened.load(layers, split=split, view=view, task=task) for split in ("train", "test"))
    return train.matrix(), train.y, test.matrix(), test.y


# --- command line -------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark script takes."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that the script works in seconds; its numbers mean nothing")
    parser.add_argument("--repeats", type=_positive_int,
                        help="timed repeats of every variant (default: 3 with --quick, 5 otherwise)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where to write {name}.json (default: benchmarks/results)")
    parser.add_argument("--workdir", type=Path,
                        help="scratch directory for files the benchmark writes (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    return parser


def add_cache_dir(parser: argparse.ArgumentParser, holds: str = "exported models") -> None:
    """The ``--cache-dir`` option of the scripts that export models or write JPEGs once."""
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR,
                        help=f"{holds}, keyed by content (default: benchmarks/.cache)")


def run_and_report(name: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]],
                   *, show_notes: bool = False) -> int:
    """Run one benchmark, print its tables (and notes), write ``<name>.json``; the exit status."""
    machine = machine_info()
    document = run(args)
    print_tables(document["tables"])
    for note in document["notes"] if show_notes else ():
        print(f"- {note}")
    print(f"\nwrote {write_result(args, name, document, machine)}")
    return 0


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and remember it for the results JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def repeats_for(args: argparse.Namespace) -> int:
    """The number of timed repeats: ``--repeats``, else 3 in quick mode and 5 otherwise."""
    return args.repeats or (3 if args.quick else 5)


@contextlib.contextmanager
def scratch_dir(args: argparse.Namespace, name: str) -> Iterator[Path]:
    """A fresh scratch directory (under ``--workdir`` when given), removed afterwards."""
    parent = args.workdir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"featurestore-bench-{name}-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- timing -------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One way of doing the work being compared.

    Parameters
    ----------
    name : str
    run : callable
        Called with what ``setup`` returned (None without setup); only this call is timed.
    work : float, default=1.0
        Units of work one call does (images, bytes), for rates.
    unit : str, default='call'
        Name of the unit of ``work``.
    setup, teardown : callable, optional
        Untimed preparation before each call (e.g. a fresh directory) and clean-up after it.
    """

    name: str
    run: Callable[[Any], object]
    work: float = 1.0
    unit: str = "call"
    setup: Callable[[], Any] | None = None
    teardown: Callable[[Any], None] | None = None


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move every object alive now out of the collector's sight for the duration.

    Each timed call is preceded by a full collection so that no collection pause lands
    inside it; with torch imported the heap holds millions of objects and that collection
    alone took ~0.1 s per sample. Frozen objects are skipped by it (``gc.freeze``). A heap
    someone else froze is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _time_once(variant: Variant) -> float:
    context = variant.setup() if variant.setup is not None else None
    gc.collect()
    start = time.perf_counter()
    try:
        variant.run(context)
        return time.perf_counter() - start
    finally:
        if variant.teardown is not None:
            variant.teardown(context)


def measure(variants: Sequence[Variant], repeats: int, *, warmup: bool = False) -> dict[str, dict[str, Any]]:
    """Time every variant ``repeats`` times, interleaved, and summarise the samples.

    Repeat ``r`` runs the variants in their given order rotated by ``r``, so that each
    variant takes every position equally often when ``repeats`` is a multiple of
    their number.

    Returns
    -------
    dict
        Variant name -> ``{samples_s, median_s, min_s, max_s, spread, work, unit, rate, rate_unit}``;
        ``spread`` is ``(max - min) / median`` and ``rate`` is ``work / median_s``.
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    samples: dict[str, list[float]] = {name: [] for name in names}
    with _frozen_heap():
        if warmup:
            for variant in variants:
                _time_once(variant)
        for r in range(repeats):
            k = r % len(variants)
            for variant in list(variants[k:]) + list(variants[:k]):
                samples[variant.name].append(_time_once(variant))
    return {v.name: summarize(samples[v.name], v.work, v.unit) for v in variants}


def summarize(samples: Sequence[float], work: float = 1.0, unit: str = "call") -> dict[str, Any]:
    """Median, min, max and relative spread of timing samples (seconds)."""
    arr = np.asarray(samples, dtype=np.float64)
    median = float(np.median(arr))
    return {
        "samples_s": [round(float(s), 6) for s in arr],
        "median_s": median, "min_s": float(arr.min()), "max_s": float(arr.max()),
        "spread": float((arr.max() - arr.min()) / median) if median > 0 else 0.0,
        "work": work, "unit": unit, "rate": work / median if median > 0 else float("inf"),
        "rate_unit": f"{unit}/s",
    }


def time_ratio(stats: Mapping[str, Mapping[str, Any]], numerator: str, denominator: str,
               *, work_normalised: bool = True) -> dict[str, Any]:
    """``t(numerator) / t(denominator)``: ratio of medians plus the range of per-repeat ratios.

    Samples of the same repeat index were taken in the same round of the interleaving, so
    their ratio is a paired measurement. With ``work_normalised`` the times are per unit of
    work (variants doing different amounts of work stay comparable).
    """
    a, b = stats[numerator], stats[denominator]
    wa, wb = (a["work"], b["work"]) if work_normalised else (1.0, 1.0)
    paired = [(x / wa) / (y / wb) for x, y in zip(a["samples_s"], b["samples_s"]) if y > 0]
    return {
        "definition": f"t({numerator}) / t({denominator})" + (" per unit of work" if work_normalised else ""),
        "value": (a["median_s"] / wa) / (b["median_s"] / wb),
        "paired_min": min(paired), "paired_median": float(np.median(paired)), "paired_max": max(paired),
    }


def speed_ratio(stats: Mapping[str, Mapping[str, Any]], fast: str, slow: str) -> dict[str, Any]:
    """How many times faster ``fast`` is than ``slow`` (rate ratio), with the paired range."""
    inverse = time_ratio(stats, slow, fast)
    return {"definition": f"rate({fast}) / rate({slow})", "value": inverse["value"],
            "paired_min": inverse["paired_min"], "paired_median": inverse["paired_median"],
            "paired_max": inverse["paired_max"]}


# --- machine ------------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """CPU model, vector flags and core counts from ``/proc/cpuinfo`` and the scheduler."""
    from featurestore.cpu import isa_flags

    text = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = Path("/proc/cpuinfo").read_text()
    model = next((value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
                  if key.strip() == "model name"), None)
    flags = set(isa_flags(text))  # the product's own reader of the flags line
    return {
        "model": model or platform.processor() or "unknown", "flags": [f for f in _CPU_FLAGS if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(Exception):
        out["numpy_blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    return out


def _git() -> dict[str, Any]:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--", "featurestore", "export", "heads"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, library versions, git commit."""
    return {"cpu": cpu_info(), "memory_gib": _memory_gib(), "platform": platform.platform(),
            "loadavg_start": list(os.getloadavg()), "versions": _versions(), "git": _git()}


# --- results ------------------------------------------------------------------------------------
def write_result(args: argparse.Namespace, name: str, document: dict[str, Any], machine: dict[str, Any]) -> Path:
    """Write ``RESULTS_DIR/<name>.json`` atomically, adding run metadata; return its path."""
    machine = dict(machine, loadavg_end=list(os.getloadavg()))
    cores = machine["cpu"]["usable_cores"] or 1
    busy = max(machine["loadavg_start"][0], machine["loadavg_end"][0]) > cores + 0.5
    full = {
        "benchmark": name, "schema": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", f"benchmarks.{name}", *getattr(args, "argv", [])],
        "quick": bool(args.quick), "repeats": repeats_for(args), "seed": args.seed, "machine": machine,
        "machine_busy": busy, **document,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(full, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, np.dtype)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# --- tables -------------------------------------------------------------------------------------
def fmt(value: float | None, kind: str = "g") -> str:
    """Format a number for a table: ``x`` ratio, ``%``, ``s`` seconds, ``ms``, or plain."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "%":
        return f"{100 * value:+.1f}%"
    if kind == "ms":
        return f"{1000 * value:.1f} ms"
    if kind == "s":
        return f"{value:.3f} s"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def spread_cell(stats: Mapping[str, Any]) -> str:
    """``±x%``: half the relative spread (max - min) / median of a variant's samples."""
    return f"±{50 * stats['spread']:.0f}%"


def ratio_cell(ratio: Mapping[str, Any]) -> str:
    """A ratio with the range of its paired per-repeat ratios."""
    return f"{ratio['value']:.2f}x [{ratio['paired_min']:.2f}-{ratio['paired_max']:.2f}]"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A table as stored in the results JSON (cells already formatted)."""
    return {"title": title, "headers": list(headers), "rows": [[str(c) for c in row] for row in rows]}


def print_tables(tables: Sequence[Mapping[str, Any]], file=None) -> None:
    """Print tables as aligned plain text."""
    out = file or sys.stdout
    for tab in tables:
        rows = [tab["headers"], *tab["rows"]]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(tab["headers"]))]
        print(f"\n{tab['title']}", file=out)
        for j, row in enumerate(rows):
            print("  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))), file=out)
            if j == 0:
                print("  " + "  ".join("-" * w for w in widths), file=out)
    out.flush()
