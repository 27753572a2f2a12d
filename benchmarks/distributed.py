"""Distributed extraction on one machine: the Ray engine next to the local engine, and the driver's limits.

``python -m benchmarks.distributed [--quick] [--images N] [--workers 1,2] [--shard-rows R] [--cache-dir DIR]``

MobileNetV2 (``last``, ImageNet weights) on a folder of real JPEGs (``--sizes``, default
500x375), ``batch_size=32``, ``device='cpu'``, each engine with its defaults otherwise; every
run writes a fresh store and loads the model itself (inside the timing, for both engines).
Interleaved and repeated (fewer repeats than the other scripts: 3, 1 with ``--quick``, since a
Ray run costs seconds of fixed overhead):

- **local**: :func:`featurestore.extract` (decoding threads plus one onnxruntime session on
  every core).
- **ray wN (warm)**: :func:`featurestore.distributed.extract_distributed` with ``N`` inference
  actors on a local Ray instance already started (with the logical CPUs the engine gives a
  local instance for the largest ``N``) and warmed by one untimed run.

Start-up is measured apart: ``ray.init`` as the engine calls it, the first run on the fresh
instance, ``ray.shutdown``; their sum is the **cold** run of a user whose command starts Ray.
Without ``--quick`` one cold run is also timed as the engine does it (Ray not started).
Every Ray store is compared with the local one: same (key, view) rows, bit-equal features.

The driver's limits, which bound scaling past one machine, are measured on the real code
paths: listing (read + sha256 of every file, before any worker starts) and committing worker
shards (:meth:`~featurestore._ray_commit.ShardCommitter.take` ->
:meth:`~featurestore.writer.StoreWriter.commit_external`: duplicate checks, one atomic manifest
replacement with fsync) into manifests already holding 0 to 10,000 shards.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, fmt, make_parser, measure, parse_args, run_and_report, scratch_dir
from ._common import summarize, table, time_ratio
from ._images import jpeg_folder, parse_sizes
from ._models import BACKBONES, exported_model

__all__ = ["main", "run"]

BACKBONE = "mobilenet_v2"
#: Rows per shard of the commit-rate measurement: the stores' default (``--shard-rows 2048``).
COMMIT_SHARD_ROWS = 2048


# --- extraction variants ------------------------------------------------------------------------
class _Runs:
    """Variants that each write a fresh store; keeps the first store and the last report of each."""

    def __init__(self, workdir: Path, count: int) -> None:
        self.workdir, self.count = workdir, count
        self.kept: dict[str, Path] = {}
        self.reports: dict[str, Any] = {}
        self._seq = 0

    def variant(self, name: str, extract_into) -> Variant:
        def setup() -> Path:
            self._seq += 1
            return self.workdir / f"store-{self._seq}"

        def run(store: Path) -> None:
            report = extract_into(store)
            if report.rows_added != self.count:
                raise RuntimeError(f"{name}: {report.rows_added} rows added for {self.count} images")
            self.reports[name] = report

        def teardown(store: Path) -> None:
            if name not in self.kept and store.is_dir():
                self.kept[name] = store
            else:
                shutil.rmtree(store, ignore_errors=True)

        return Variant(name, run, self.count, "img", setup=setup, teardown=teardown)


def _local(model: Path, folder: Path, options):
    from featurestore import extract

    return lambda store: extract(model, folder, store, options)


def _ray(model: Path, folder: Path, options, workers: int):
    from featurestore.distributed import RayOptions, extract_distributed

    return lambda store: extract_distributed(model, folder, store, options, RayOptions(workers=workers))


def _start_ray(num_cpus: int) -> float:
    """Start a local Ray as the engine does (see ``featurestore._ray_job.ray_session``); seconds taken."""
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
    seconds = time.perf_counter() - started
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per dataset otherwise
    return seconds


def _stop_ray() -> float:
    import ray

    started = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - started


# --- correctness --------------------------------------------------------------------------------
def _rows(store: Path) -> dict[tuple[str, int], np.ndarray]:
    from featurestore import open_store

    data = open_store(store).load(view=None)
    return dict(zip(zip(data.keys.tolist(), data.views.tolist()), data.matrix()))


def _compare(reference: Path, other: Path) -> dict[str, Any]:
    """Same (key, view) rows and bit-equal features?"""
    expected, got = _rows(reference), _rows(other)
    shared = expected.keys() & got.keys()
    differing = sum(not np.array_equal(expected[row], got[row]) for row in shared)
    return {"rows": len(got), "reference_rows": len(expected), "missing": len(expected.keys() - got.keys()),
            "extra": len(got.keys() - expected.keys()), "differing": differing,
            "equal": got.keys() == expected.keys() and differing == 0}


# --- the driver's limits ------------------------------------------------------------------------
def _listing_variant(folder: Path) -> Variant:
    """What the driver does before any worker starts: read and sha256 every file."""
    from featurestore.sources import content_key, open_source

    count = len(open_source(folder))

    def run(_) -> None:
        for item in open_source(folder):
            content_key(item.read())

    return Variant("driver listing", run, count, "img")


def _worker_meta(store: Path, source: Path, entry: Any, seq: int, rows: int) -> dict[str, Any]:
    """The metadata a worker returns for a new shard: a hard link of one written shard, fresh keys."""
    name = f"bench-{seq:06d}.h5"
    os.link(source, store / "shards" / name)
    keys = [f"{seq:016x}{i:048x}" for i in range(rows)]
    shard = {"entry": entry.moved_to(f"shards/{name}"), "keys": keys, "views": [0] * rows,
             "paths": [f"/data/{k[:24]}.jpg" for k in keys], "labels": [""] * rows}
    return {"worker": "bench", "images": rows, "seconds": 0.0, "failures": [], "shard": shard, "error": None}


def _commit_level(writer, entry: Any, source: Path, prefill: int, commits: int) -> dict[str, Any]:
    """Time ``commits`` driver commits into a manifest grown to ``prefill`` shards."""
    from featurestore._ray_commit import DistributedReport, ShardCommitter
    from featurestore.manifest import MANIFEST_NAME

    while len(writer.manifest.shards) < prefill:  # entries only: a commit never opens earlier shards
        writer.manifest.add_shard(entry.moved_to(f"shards/prefill-{len(writer.manifest.shards):06d}.h5"), set())
    committer = ShardCommitter(writer, DistributedReport(store=str(writer.path)))
    samples = []
    for _ in range(commits):
        meta = _worker_meta(writer.path, source, entry, len(writer.manifest.shards), entry.rows)
        started = time.perf_counter()
        committer.take(meta)
        samples.append(time.perf_counter() - started)
    stats = summarize(samples, entry.rows, "row")
    return {"manifest_shards": prefill, "manifest_mib": (writer.path / MANIFEST_NAME).stat().st_size / 2**20,
            "shard_rows": entry.rows, "commits": commits, "commit": stats,
            "shards_per_s": 1.0 / stats["median_s"], "rows_per_s": stats["rate"]}


def _commit_rate(model: Path, workdir: Path, rows: int, levels: list[int], commits: int) -> list[dict[str, Any]]:
    """Driver commits per second of ``rows``-row worker shards, at each manifest size of ``levels``."""
    from featurestore import read_spec
    from featurestore._atomic import file_sha256
    from featurestore.manifest import STORE_SCHEMA_VERSION, StoreConfig
    from featurestore.shard_buffer import ShardBuffer
    from featurestore.shard_write import write_shard
    from featurestore.writer import StoreWriter

    spec = read_spec(model)
    config = StoreConfig.from_spec(spec, file_sha256(model))
    writer = StoreWriter(workdir / "commit-store", config, spec, shard_rows=rows)
    try:
        rng = np.random.default_rng(0)
        buffer = ShardBuffer()
        buffer.add_rows([f"{i:064x}" for i in range(rows)], [""] * rows, [""] * rows, [0] * rows,
                        [f"/data/{i}.jpg" for i in range(rows)],
                        {layer.output: rng.random((rows, layer.dim), np.float32) for layer in spec.layers})
        attrs = {"featurestore_store_schema": STORE_SCHEMA_VERSION, "fingerprint": config.fingerprint,
                 "model_sha256": config.model_sha256}
        entry = write_shard(writer.path, "bench-source.h5", buffer, dtype=config.dtype,
                            layers={layer.output: (layer.dim,) for layer in spec.layers}, attrs=attrs)
        source = writer.path / entry.file
        return [_commit_level(writer, entry, source, level, commits) for level in levels]
    finally:
        writer.close()


# --- analysis and tables ------------------------------------------------------------------------
def _startup(init_s: float, first_s: float, stop_s: float, warm: dict[str, Any], count: int,
             engine_cold: dict[str, Any] | None) -> dict[str, Any]:
    cold_s = init_s + first_s + stop_s
    out = {"ray_init_s": init_s, "first_run_s": first_s, "ray_shutdown_s": stop_s,
           "first_run_extra_s": first_s - warm["median_s"], "cold_s": cold_s, "cold_img_s": count / cold_s}
    if engine_cold is not None:
        out.update(engine_cold_s=engine_cold["median_s"], engine_cold_img_s=engine_cold["rate"])
    return out


def _workers(report) -> dict[str, Any]:
    """Per-actor figures of a :class:`DistributedReport`: images, shards, busy seconds, busy images/s."""
    actors = [dict(w, img_s=w["images"] / w["busy_s"] if w["busy_s"] > 0 else 0.0) for w in report.workers.values()]
    busy = sum(w["busy_s"] for w in actors)
    return {"actors": sorted(actors, key=lambda w: -w["images"]), "wall_s": report.seconds,
            "busy_share": busy / (len(actors) * report.seconds) if actors and report.seconds > 0 else 0.0}


def _rate(stats: dict[str, Any]) -> str:
    return f"{stats['rate']:.1f} ±{50 * stats['spread']:.0f}%"


def _engine_table(doc: dict[str, Any], repeats: int) -> dict[str, Any]:
    local = doc["variants"]["local"]
    rows = [["local", "-", f"{local['median_s']:.2f}", _rate(local), "1.00x", "-", "reference"]]
    for name, ratio in doc["ratios"].items():
        v, workers, same = doc["variants"][name], doc["workers"][name], doc["correctness"][name]
        per_actor = " / ".join(f"{a['img_s']:.1f}" for a in workers["actors"])
        rows.append([name, len(workers["actors"]), f"{v['median_s']:.2f}", _rate(v),
                     f"{ratio['value']:.2f}x [{ratio['paired_min']:.2f}-{ratio['paired_max']:.2f}]", per_actor,
                     "equal" if same["equal"] else f"DIFFERENT ({same['missing']} missing, {same['extra']} extra, "
                                                   f"{same['differing']} differing)"])
    return table(f"Local engine vs Ray engine (warm), {doc['parameters']['images']} images, median of {repeats} "
                 "repeats ±half-spread; Ray time / local time with per-repeat range; actor images/s = images / "
                 "busy seconds (inference + shard write) of each actor; store = same (key, view) rows and "
                 "bit-equal features as the local store",
                 ["variant", "actors used", "seconds", "images/s", "time vs local", "actor images/s", "store"], rows)


def _startup_table(s: dict[str, Any], local: dict[str, Any], widest: int) -> dict[str, Any]:
    rows = [["ray.init (local instance)", f"{s['ray_init_s']:.2f}", "-"],
            [f"first run on the fresh instance (w{widest})", f"{s['first_run_s']:.2f}",
             f"{s['first_run_extra_s']:+.2f} s vs warm"],
            ["ray.shutdown", f"{s['ray_shutdown_s']:.2f}", "-"],
            ["cold = init + first run + shutdown", f"{s['cold_s']:.2f}",
             f"{s['cold_img_s']:.1f} img/s, {s['cold_s'] / local['median_s']:.2f}x local time"]]
    if "engine_cold_s" in s:
        rows.append([f"cold, measured (the engine starts and stops Ray, w{widest})", f"{s['engine_cold_s']:.2f}",
                     f"{s['engine_cold_img_s']:.1f} img/s, {s['engine_cold_s'] / local['median_s']:.2f}x local time"])
    return table("Ray start-up (seconds, one sample each)", ["step", "seconds", "note"], rows)


def _driver_table(listing: dict[str, Any], mib: float, commits: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [["listing: read + sha256 of every file", "-", "-", f"{1000 * listing['median_s'] / listing['work']:.2f}",
             f"{listing['rate']:,.0f} img/s ({mib / listing['median_s']:,.0f} MiB/s)", "-"]]
    for c in commits:
        s = c["commit"]
        rows.append([f"commit of a {c['shard_rows']}-row worker shard", f"{c['manifest_shards']:,}",
                     f"{c['manifest_mib']:.2f}",
                     f"{1000 * s['median_s']:.2f} [{1000 * s['min_s']:.2f}-{1000 * s['max_s']:.2f}]",
                     f"{fmt(c['shards_per_s'])} shards/s", fmt(c["rows_per_s"])])
    return table("The driver, alone: listing before the pipeline starts, and shard commits while it runs "
                 "(median ms per item [min-max])",
                 ["step", "manifest shards before", "manifest MiB", "ms each", "rate", "rows/s ceiling"], rows)


def _notes(doc: dict[str, Any]) -> list[str]:
    s, commits, listing = doc["startup"], doc["commit_rate"], doc["listing"]
    first, last = commits[0], commits[-1]
    widest = max(doc["parameters"]["workers"])
    warm, local = doc["ratios"][f"ray w{widest}"], doc["variants"]["local"]["median_s"]
    actor = max(a["img_s"] for a in doc["workers"]["ray w1" if 1 in doc["parameters"]["workers"]
                                                   else f"ray w{widest}"]["actors"])
    default = "" if first["shard_rows"] == COMMIT_SHARD_ROWS else f" (the default is {COMMIT_SHARD_ROWS})"
    return [
        f"On one {doc['parameters']['cores']}-core machine, warm, the Ray engine takes {warm['value']:.2f}x "
        f"[{warm['paired_min']:.2f}-{warm['paired_max']:.2f}] the local engine's time with {widest} "
        f"actor{'s' if widest > 1 else ''}; a command that starts Ray itself pays {s['cold_s'] / local:.2f}x: "
        f"{s['ray_init_s']:.1f} s of ray.init, {s['first_run_extra_s']:.1f} s of first-run start-up (worker "
        f"processes, actor sessions) and {s['ray_shutdown_s']:.1f} s of shutdown. On one machine the local engine "
        "is the one to use.",
        "How it scales past one machine and where its limits are:",
        "Inference runs in an actor pool, one onnxruntime session per actor (one actor per GPU with "
        "--gpus-per-worker 1); decoding runs in Ray CPU tasks, so decode throughput grows with the cluster's CPUs "
        "and inference with its actors, independently.",
        "Each actor writes complete shards (temporary name, fsync, rename) straight into the store on the shared "
        "filesystem; the driver moves no feature bytes, only each shard's metadata.",
        f"Only the driver commits, one atomic manifest replacement per shard, and each replacement re-encodes the "
        f"whole manifest as JSON and fsyncs it, so a commit costs more as the store grows: at {first['shard_rows']} "
        f"rows per shard{default} the driver commits {fmt(first['rows_per_s'])} rows/s into a new store but "
        f"{fmt(last['rows_per_s'])} rows/s into one of {last['manifest_shards']:,} shards "
        f"({last['manifest_mib']:.1f} MiB of manifest), the rate of {last['rows_per_s'] / actor:.0f} CPU actors "
        f"at the {actor:.0f} images/s one actor reached here. Smaller shards lower the ceiling in proportion.",
        f"Before any worker starts, the driver reads and hashes every source file ({listing['rate']:,.0f} images/s "
        "here, from the page cache) and keeps every key, path and label in memory (its listing, the store's "
        "row index, Ray's input blocks): O(N) time and memory on one process.",
        "The shared filesystem must give close-to-open consistency, atomic rename and working fsync for the "
        "store, and the same paths for the model and the images on every node; on NFS set "
        "HDF5_USE_FILE_LOCKING=FALSE on every node (the store's own lock is taken by the driver only).",
    ]


# --- the driver's reads and CPU: funnel (before) against workers reading their units (after) ---------------
class _Funnel:
    """A source the Ray engine cannot hand to its workers: it yields the wrapped source's items, so the
    driver reads, hashes and ships every image (the engine's path before workers read their own units)."""

    def __init__(self, source: Any) -> None:
        self.source, self.name, self.classes = source, f"funnel:{source.name}", source.classes

    def __iter__(self):
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


def _driver_io() -> tuple[int, int, float, float]:
    """(rchar, read_bytes, CPU seconds, main-thread CPU seconds) of this process so far: bytes through read
    calls (page cache and Ray's sockets included), bytes fetched from storage, user + system time of all
    its threads (Ray's own included) and of the calling thread (where the driver lists, keys and commits)."""
    import resource

    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    usage, thread = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
    return (int(io["rchar"]), int(io["read_bytes"]), usage.ru_utime + usage.ru_stime,
            thread.ru_utime + thread.ru_stime)


def _formats(files: list[Path], out: Path) -> dict[str, Path]:
    """``files`` as a folder (hard links), as WebDataset shards (100 samples each) and as one Parquet file
    (64-row groups)."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, shards = out / "folder", out / "wds"
    folder.mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            os.link(path, folder / path.name)
        except OSError:  # another filesystem
            shutil.copyfile(path, folder / path.name)
    for s in range(0, len(files), 100):
        with tarfile.open(shards / f"shard-{s // 100:06d}.tar", "w") as tar:
            for path in files[s:s + 100]:
                info = tarfile.TarInfo(f"{path.stem}.jpg")
                data = path.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    parquet = out / "images.parquet"
    pq.write_table(pa.table({"image": [p.read_bytes() for p in files]}), parquet, row_group_size=64)
    return {"folder": folder, "wds": shards, "parquet": parquet}


def _driver_cost(model: Path, folder: Path, workdir: Path, options, count: int) -> list[dict[str, Any]]:
    """Driver rchar / read_bytes / CPU of Ray runs per source and mode, each into a fresh store, on half of
    the images and on all of them: the difference is what the other half cost the driver (Ray's and the
    model's fixed costs cancel out), scaled to 10,000 images."""
    from featurestore.distributed import RayOptions, extract_distributed
    from featurestore.sources import WebDatasetSource, open_source

    files = sorted(folder.iterdir())[:count]
    sizes = (len(files) // 2, len(files))
    sets = {n: _formats(files[:n], workdir / f"driver-{n}") for n in sizes}
    ray_options = RayOptions(workers=1)
    results = []
    _start_ray(_local_cpus(1))
    try:
        for warm in ("folder", "parquet"):  # first uses (Ray's, pyarrow's) outside the measured runs
            _once(lambda store, warm=warm: extract_distributed(model, _Funnel(open_source(sets[sizes[0]][warm])), store, options,
                                                    ray_options), workdir / f"driver-warm-up-{warm}")
        for name in ("folder", "wds", "parquet"):
            for mode in ("driver reads (before)", "workers read (after)"):
                cost = []
                for n in sizes:
                    path = sets[n][name]
                    source = WebDatasetSource(sorted(path.iterdir())) if name == "wds" else open_source(path)
                    if mode.startswith("driver"):
                        source = _Funnel(source)
                    store = workdir / f"driver-store-{len(results)}-{n}"
                    before = _driver_io()
                    report = extract_distributed(model, source, store, options, ray_options)
                    after = _driver_io()
                    shutil.rmtree(store, ignore_errors=True)
                    if report.rows_added != n:
                        raise RuntimeError(f"{name} {mode}: {report.rows_added} rows added for {n} images")
                    cost.append([b - a for a, b in zip(before, after)])
                extra = sizes[1] - sizes[0]
                (rchar0, bytes0, cpu0, main0), (rchar1, bytes1, cpu1, main1) = cost
                results.append({"source": name, "mode": mode, "images": list(sizes), "rchar": [rchar0, rchar1],
                                "read_bytes": [bytes0, bytes1], "cpu_s": [cpu0, cpu1], "main_cpu_s": [main0, main1],
                                "rchar_mib_per_10k": (rchar1 - rchar0) / 2**20 * 1e4 / extra,
                                "cpu_s_per_10k": (cpu1 - cpu0) * 1e4 / extra,
                                "main_cpu_s_per_10k": (main1 - main0) * 1e4 / extra})
    finally:
        _stop_ray()
    return results


def _driver_work(model: Path, folder: Path, workdir: Path, count: int) -> list[dict[str, Any]]:
    """The driver's own listing work, timed alone on its real code paths (no Ray): the funnel's read, hash and
    packing of every item (``distributed._list``) against planning units and merging the workers' key rows
    (``plan_units``, JSON parsing, ``distributed._key_units``; the rows made beforehand by ``key_unit``, as a
    worker makes them). Main-thread CPU and rchar per 10,000 images, into a fresh store each."""
    import json

    from tqdm.auto import tqdm

    from featurestore import distributed
    from featurestore._atomic import file_sha256
    from featurestore._ray_commit import DistributedReport, ShardCommitter
    from featurestore._ray_units import key_unit, plan_units
    from featurestore.manifest import StoreConfig
    from featurestore.sources import MAX_FILE_BYTES, WebDatasetSource, open_source
    from featurestore.spec import read_spec
    from featurestore.writer import StoreWriter

    spec = read_spec(model)
    config = StoreConfig.from_spec(spec, file_sha256(model), views=0, augment=(), dtype="float32")
    sets = _formats(sorted(folder.iterdir())[:count], workdir / "driver-work")
    results = []
    for name, path in sets.items():
        def source(path=path, name=name):
            return WebDatasetSource(sorted(path.iterdir())) if name == "wds" else open_source(path)

        units, shipped = plan_units(source())
        keyed = [key_unit({"unit": np.array([json.dumps(u)], dtype=object)}, source=shipped,
                          max_file_bytes=MAX_FILE_BYTES)["rows"][0] for u in units]
        for mode in ("driver reads (before)", "workers read (after)"):
            writer = StoreWriter(workdir / f"driver-work-{name}-{len(results)}", config, spec)
            committer = ShardCommitter(writer, DistributedReport(store=str(writer.path)))
            bar = tqdm(disable=True)
            before, started = _driver_io(), time.thread_time()
            if mode.startswith("driver"):
                todo = distributed._list(source(), writer, committer, bar, MAX_FILE_BYTES)
            else:
                plan, _ = plan_units(source())
                todo, _ = distributed._key_units(zip(plan, (json.loads(r) for r in keyed)), writer, committer, bar)
            cpu, after = time.thread_time() - started, _driver_io()
            writer.close()
            results.append({"source": name, "mode": mode, "images": count, "todo": len(todo), "main_cpu_s": cpu,
                            "rchar": after[0] - before[0], "main_cpu_s_per_10k": cpu * 1e4 / count,
                            "rchar_mib_per_10k": (after[0] - before[0]) / 2**20 * 1e4 / count})
    return results


def _driver_work_table(work: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [[w["source"], w["mode"], f"{w['main_cpu_s']:.3f}", f"{w['rchar'] / 2**20:.1f}",
             f"{w['main_cpu_s_per_10k']:.2f}", f"{w['rchar_mib_per_10k']:,.1f}"] for w in work]
    return table(f"The driver's listing work alone, {work[0]['images']} images (no Ray; one sample each)",
                 ["source", "who reads the images", "CPU s", "rchar MiB", "CPU s / 10k", "rchar MiB / 10k"], rows)


def _driver_cost_table(cost: list[dict[str, Any]], mib: float, model_mib: float) -> dict[str, Any]:
    half, full = cost[0]["images"]
    rows = [[c["source"], c["mode"], " / ".join(f"{v / 2**20:.1f}" for v in c["rchar"]),
             " / ".join(f"{v / 2**20:.1f}" for v in c["read_bytes"]), " / ".join(f"{v:.2f}" for v in c["cpu_s"]),
             " / ".join(f"{v:.2f}" for v in c["main_cpu_s"]), f"{c['rchar_mib_per_10k']:,.0f}",
             f"{c['cpu_s_per_10k']:.1f}", f"{c['main_cpu_s_per_10k']:.1f}"] for c in cost]
    return table(f"The driver process during one Ray run of {half} / {full} images ({mib:.1f} MiB of JPEG for "
                 f"{full}; each run also reads the {model_mib:.1f} MiB model twice), and the difference scaled to "
                 "10,000 images", ["source", "who reads the images", "rchar MiB", "read_bytes MiB", "CPU s",
                                   "main thread CPU s", "rchar MiB / 10k", "CPU s / 10k", "main thread CPU s / 10k"],
                 rows)


# --- entry point --------------------------------------------------------------------------------
def _once(extract_into, store: Path) -> float:
    """Seconds of one untimed-by-``measure`` run into ``store`` (removed afterwards)."""
    started = time.perf_counter()
    extract_into(store)
    seconds = time.perf_counter() - started
    shutil.rmtree(store, ignore_errors=True)
    return seconds


def _measure_engines(runs: _Runs, model: Path, folder: Path, options, workers: list[int],
                     repeats: int) -> tuple[dict[str, Any], tuple[float, float, float]]:
    """Local and warm Ray variants, interleaved, inside one Ray instance; start-up timed apart."""
    widest = max(workers)
    variants = [runs.variant("local", _local(model, folder, options))]
    variants += [runs.variant(f"ray w{w}", _ray(model, folder, options, w)) for w in workers]
    init_s = _start_ray(_local_cpus(widest))
    try:
        first_s = _once(_ray(model, folder, options, widest), runs.workdir / "first-run")
        _once(_local(model, folder, options), runs.workdir / "warm-up")
        stats = measure(variants, repeats)
    finally:
        stop_s = _stop_ray()
    return stats, (init_s, first_s, stop_s)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both engines, Ray's start-up and the driver's limits; return the results document."""
    from featurestore import ExtractConfig

    count = args.images or (16 if args.quick else 500)
    workers = args.workers or ([1] if args.quick else [1, 2])
    shard_rows = args.shard_rows or (8 if args.quick else 128)
    repeats = args.repeats
    levels = [0, 100] if args.quick else [0, 1000, 10000]
    commit_rows = 64 if args.quick else COMMIT_SHARD_ROWS
    model = exported_model(BACKBONES[BACKBONE], "last", args.cache_dir)
    folder, folder_info = jpeg_folder(args.cache_dir, count, parse_sizes(args.sizes), args.seed)
    options = ExtractConfig(batch_size=32, device="cpu", shard_rows=shard_rows, progress=False)
    mib = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    model_mib = model.stat().st_size / 2**20
    if args.driver_only:
        with scratch_dir(args, "distributed") as workdir:
            work = _driver_work(model, folder, workdir, count)
            cost = _driver_cost(model, folder, workdir, options, count)
        return {"parameters": {"backbone": BACKBONE, "images": count, "sizes": args.sizes, "jpeg_mib": mib,
                               "model_mib": model_mib, "shard_rows": shard_rows, "workers": [1],
                               "cores": len(os.sched_getaffinity(0))},
                "driver_cost": cost, "driver_work": work, "targets": [],
                "tables": [_driver_cost_table(cost, mib, model_mib), _driver_work_table(work)], "notes": []}
    with scratch_dir(args, "distributed") as workdir:
        runs = _Runs(workdir, count)
        stats, (init_s, first_s, stop_s) = _measure_engines(runs, model, folder, options, workers, repeats)
        engine_cold = None
        if not args.quick:
            cold = runs.variant("cold", _ray(model, folder, options, max(workers)))
            engine_cold = measure([cold], 1)["cold"]
        correctness = {f"ray w{w}": _compare(runs.kept["local"], runs.kept[f"ray w{w}"]) for w in workers}
        listing = measure([_listing_variant(folder)], repeats)["driver listing"]
        print("  timing driver commits", file=sys.stderr, flush=True)
        commits = _commit_rate(model, workdir, commit_rows, levels, 5 if args.quick else 20)
        print("  measuring the driver's reads and CPU", file=sys.stderr, flush=True)
        cost = _driver_cost(model, folder, workdir, options, count)
        work = _driver_work(model, folder, workdir, count)
    doc = {
        "parameters": {"backbone": BACKBONE, "layers": "last", "images": count, "sizes": args.sizes,
                       "jpeg_folder": folder_info, "jpeg_mib": mib, "workers": workers, "shard_rows": shard_rows,
                       "batch_size": 32, "cores": len(os.sched_getaffinity(0)),
                       "ray_local_cpus": _local_cpus(max(workers)), "commit_shard_rows": commit_rows,
                       "commit_manifest_shards": levels},
        "variants": stats, "workers": {f"ray w{w}": _workers(runs.reports[f"ray w{w}"]) for w in workers},
        "ratios": {f"ray w{w}": time_ratio(stats, f"ray w{w}", "local") for w in workers},
        "startup": _startup(init_s, first_s, stop_s, stats[f"ray w{max(workers)}"], count, engine_cold),
        "correctness": correctness, "listing": listing, "commit_rate": commits, "driver_cost": cost,
        "driver_work": work, "targets": [],
    }
    doc["tables"] = [_engine_table(doc, repeats), _startup_table(doc["startup"], stats["local"], max(workers)),
                     _driver_table(listing, mib, commits), _driver_cost_table(cost, mib, model_mib),
                     _driver_work_table(work)]
    doc["notes"] = _notes(doc)
    return doc


def _local_cpus(workers: int) -> int:
    from featurestore.distributed import RayOptions

    return RayOptions(workers=workers).local_cpus()


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("distributed", __doc__.splitlines()[0])
    parser.add_argument("--images", type=int, help="JPEG files (default: 500; 16 with --quick)")
    parser.add_argument("--workers", type=_int_list, help="Ray inference actors, comma-separated (default: 1,2; "
                                                          "1 with --quick)")
    parser.add_argument("--shard-rows", type=int, help="rows per shard for both engines (default: 128, so that "
                                                       "every actor gets batches; 8 with --quick)")
    parser.add_argument("--sizes", default="500x375", help="JPEG sizes, taken in turn (WxH,WxH)")
    parser.add_argument("--driver-only", action="store_true", help="measure only the driver's bytes read and CPU "
                                                                   "(funnel against workers reading their units)")
    add_cache_dir(parser, "exported models and JPEG folders")
    args = parse_args(parser, argv)
    args.repeats = args.repeats or (1 if args.quick else 3)  # Ray runs are expensive: fewer repeats
    if importlib.util.find_spec("ray") is None:
        raise SystemExit("benchmarks.distributed needs Ray Data: pip install 'featurestore[distributed]'")
    return run_and_report("distributed", args, run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
