"""``featurestore map`` on the whole Fashion-MNIST store (70,000 rows), against the 3-minute budget.

``python -m benchmarks.map [--quick] [--store PATH:LAYER] [--max-points N] [--method tsne|umap|pca]``

Store: by default the raw-pixel store of all 70,000 Fashion-MNIST images (train and test),
written in the scratch directory by the command line a user would type
(``featurestore export pixels --grayscale --image-size 28``, then ``featurestore extract`` of
``fashion-mnist:train`` and ``fashion-mnist:test``; seconds, not part of the budget). ``--store``
maps an existing store instead. ``--quick`` writes a synthetic store of 600 rows in 3 classes
(its numbers mean nothing).

What is timed is the whole command, ``python -m featurestore map STORE --layer L -o map.html``
in its own process (interpreter start, imports, reading, PCA, t-SNE, thumbnails, the page),
with its defaults unless ``--max-points``/``--method`` are given: above ``--max-points`` rows
the map is drawn from a stratified, seeded sample, which the page states. Recorded besides:
the command's CPU seconds (on a busy machine the wall time is mostly waiting for a core),
the seconds of each step as the command reports them, the rows drawn, and the neighbourhood-
preservation score the map computes: the 10-nearest-neighbour accuracy (5-fold CV) of the
labels in 2-D against the same vote in the PCA space the map started from.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import REPO_ROOT, Variant, fashion_mnist_missing, make_parser, measure, parse_args, run_and_report
from ._common import scratch_dir, table
from .targets import evaluate, get_target

__all__ = ["main", "parse_summary", "run"]

# what `featurestore map` prints when it is done (featurestore/cli/map_cmd.py)
_SUMMARY = re.compile(
    r"wrote (?P<output>.+?): (?:(?P<drawn>[\d,]+) of (?P<total>[\d,]+) rows \(stratified sample, seed \d+\)"
    r"|(?P<all>[\d,]+) rows) of (?P<layer>\S+) by (?P<method>\w+)"
    r"(?:; 10-NN accuracy (?P<knn_2d>[\d.]+) in 2-D, (?P<knn_pca>[\d.]+) in PCA space)? \((?P<steps>[^()]*)\)$")


def parse_summary(line: str) -> dict[str, Any]:
    """The figures of ``featurestore map``'s last line: rows drawn and total, scores, seconds by step.

    Raises
    ------
    ValueError
        The line is not the command's summary.
    """
    match = _SUMMARY.match(line.strip())
    if match is None:
        raise ValueError(f"not the summary line of `featurestore map`: {line!r}")
    found = match.groupdict()
    total = int((found["total"] or found["all"]).replace(",", ""))
    steps = {name: float(seconds) for name, seconds in re.findall(r"(\w[\w -]*?) ([\d.]+) s", found["steps"])}
    return {"rows_drawn": int(found["drawn"].replace(",", "")) if found["drawn"] else total, "total_rows": total,
            "layer": found["layer"], "method": found["method"],
            "knn_accuracy_2d": float(found["knn_2d"]) if found["knn_2d"] else None,
            "knn_accuracy_pca": float(found["knn_pca"]) if found["knn_pca"] else None,
            "steps_s": steps}


def _featurestore(*argv: str) -> subprocess.CompletedProcess:
    """``python -m featurestore ARGV`` from the repository root; raises with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", "featurestore", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"featurestore {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def _fashion_mnist_store(root: Path) -> tuple[str, dict[str, float]]:
    """The raw-pixel store of all of Fashion-MNIST, written by the command line; its spec and seconds per step."""
    model, store = root / "pixels.onnx", root / "fmnist_pixels"
    seconds = {}
    for step, argv in (("export", ["export", "pixels", "--grayscale", "--image-size", "28", "-o", str(model)]),
                       ("extract train", ["extract", str(model), "fashion-mnist:train", "-o", str(store),
                                          "--batch-size", "256", "--no-progress"]),
                       ("extract test", ["extract", str(model), "fashion-mnist:test", "-o", str(store),
                                         "--batch-size", "256", "--no-progress"])):
        start = time.perf_counter()
        _featurestore(*argv)
        seconds[step] = time.perf_counter() - start
    return f"{store}:pixels", seconds


def _synthetic_store(root: Path, seed: int) -> str:
    """600 rows of 3 Gaussian blobs in 16 dimensions (paths name no file: every thumbnail is skipped)."""
    from featurestore import write_arrays

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 600)
    features = (4 * rng.normal(size=(3, 16))[labels] + rng.normal(size=(600, 16))).astype(np.float32)
    write_arrays(root / "synthetic", {"features": features}, labels=[f"class {v}" for v in labels],
                 splits=["train"] * 500 + ["test"] * 100, paths=[str(root / f"absent-{i}.png") for i in range(600)])
    return f"{root / 'synthetic'}:features"


def _map(spec: str, output: Path, extra: list[str], repeats: int) -> dict[str, Any]:
    """Time ``featurestore map`` on one store ``repeats`` times; its figures from the last run."""
    path, _, layer = spec.rpartition(":")
    argv = ["map", str(Path(path).resolve()), "--layer", layer, "-o", str(output), "--no-progress", *extra]
    runs: list[dict[str, Any]] = []

    def once(_: object) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        done = _featurestore(*argv)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append({"stdout": done.stdout, "load_start": load, "load_end": os.getloadavg()[0],
                     "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)})

    stats = measure([Variant("map", once)], repeats)["map"]
    last = runs[-1]
    summary = parse_summary(last["stdout"].strip().splitlines()[-1])
    return {"store": spec, "command": ["featurestore", *argv], "wall_s": stats["median_s"],
            "samples_s": stats["samples_s"], "cpu_s": [round(r["cpu_s"], 2) for r in runs],
            "load": [[round(r["load_start"], 2), round(r["load_end"], 2)] for r in runs],
            "page_mb": round(output.stat().st_size / 2**20, 2), **summary}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write (or take) the store, time the map command on it; return the results document."""
    budget = get_target("map.budget").threshold
    extra = [*(["--max-points", str(args.max_points)] if args.max_points else []),
             *(["--method", args.method] if args.method else [])]
    notes: list[str] = []
    built: dict[str, float] = {}
    found: dict[str, Any] | None = None
    with scratch_dir(args, "map") as work:
        if args.store:
            spec = args.store
        elif args.quick:
            spec = _synthetic_store(work, args.seed)
        elif (missing := fashion_mnist_missing()) is not None:
            spec = ""
            notes.append(f"skipped: Fashion-MNIST cannot be read ({missing}); `make fashion-mnist` installs it")
        else:
            spec, built = _fashion_mnist_store(work)
            notes.append("store written by `featurestore export pixels --grayscale --image-size 28` and `featurestore "
                         "extract` of fashion-mnist:train and :test in "
                         + ", ".join(f"{k} {v:.1f} s" for k, v in built.items()) + " (not part of the budget)")
        if spec:
            found = _map(spec, work / "map.html", extra, args.repeats)
    targets, rows = [], []
    if found is not None:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in found["steps_s"].items())
        knn = ("-" if found["knn_accuracy_2d"] is None
               else f"{found['knn_accuracy_2d']:.3f} / {found['knn_accuracy_pca']:.3f}")
        load = ", ".join(f"{a:.1f} -> {b:.1f}" for a, b in found["load"])
        rows.append([found["store"] if args.store else ("synthetic" if args.quick else "Fashion-MNIST pixels"),
                     f"{found['rows_drawn']:,} of {found['total_rows']:,}", found["method"],
                     f"{found['wall_s']:.1f}", f"{np.median(found['cpu_s']):.1f}", steps, knn,
                     f"{found['page_mb']:.1f}", load])
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        note = (f"{found['rows_drawn']:,} of {found['total_rows']:,} rows drawn; {np.median(found['cpu_s']):.0f} CPU s "
                f"on {cores} cores; load average {load} during the run.")
        targets.append(evaluate("map.budget", found["wall_s"], note=note, detail={"cpu_s": found["cpu_s"]}))
    return {
        "parameters": {"store": args.store or ("synthetic" if args.quick else "fashion-mnist pixels (70,000 rows)"),
                       "max_points": args.max_points, "method": args.method, "budget_s": budget},
        "built_s": built, "map": found, "targets": targets, "notes": notes,
        "tables": [table("`featurestore map` on a whole store: the command's wall seconds (CPU seconds), each step's "
                         "seconds, and the 10-NN accuracy of the labels in 2-D / in the PCA space it started from",
                         ["store", "rows drawn", "method", "wall s", "CPU s", "steps (s)", "10-NN 2-D / PCA",
                          "page MB", "load average"], rows)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("map", __doc__.splitlines()[0])
    parser.add_argument("--store", help="map this store (PATH:LAYER) instead of writing the Fashion-MNIST one")
    parser.add_argument("--max-points", type=int, help="passed to the command (default: the command's default)")
    parser.add_argument("--method", help="passed to the command (default: the command's default)")
    args = parse_args(parser, argv)
    args.repeats = args.repeats or 1
    return run_and_report("map", args, run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
