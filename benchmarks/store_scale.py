"""Store at scale, simulated: commit 100,000 small shards; commit cost, open time, index memory vs shard count.

``python -m benchmarks.store_scale [--quick] [--shards 100000] [--rows-per-shard 10] [--dim 16]``

One driver commits shards the way the Ray driver does (:meth:`StoreWriter.commit_external`:
duplicate checks, one fsynced journal record, a checkpoint now and then). The shards are real
files: one is written by the product's shard writer, the others are byte copies of it with
their content keys rewritten (so every row is distinct) and their own checksum; making them is
not timed. At each milestone shard count the benchmark reports:

- the commit time per shard over the window before it (median, 99th percentile, and the mean
  including the checkpoints that fell in the window);
- what the schema-1 format paid per commit at that size (re-encoding and atomically replacing
  the whole manifest), timed on the same state;
- after a checkpoint: ``open_store`` time, the memory the opened store holds (tracemalloc), and
  the sizes of the manifest and the row index;

then extrapolates bytes per row and per shard to 10^8 rows in 10^5 shards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._common import make_parser, parse_args, run_and_report, scratch_dir, table
from .targets import evaluate

__all__ = ["main", "run"]


class _ShardFactory:
    """Byte copies of one real shard, each with its own keys (patched in place) and checksum."""

    def __init__(self, store: Path, rows: int, dim: int) -> None:
        import h5py

        from featurestore.manifest import STORE_SCHEMA_VERSION
        from featurestore.shard_buffer import ShardBuffer
        from featurestore.shard_write import write_shard

        self.store, self.rows = store, rows
        buffer = ShardBuffer()
        rng = np.random.default_rng(0)
        keys = [f"{i:064x}" for i in range(rows)]
        buffer.add_rows(keys, [f"class-{i % 10}" for i in range(rows)], ["train"] * rows, [0] * rows,
                        [f"images/{i:09d}.jpg" for i in range(rows)],
                        {"f": rng.random((rows, dim), dtype=np.float32)})
        attrs = {"featurestore_store_schema": STORE_SCHEMA_VERSION, "fingerprint": "0" * 64, "model_sha256": "0" * 64}
        self.entry = write_shard(store, "template.h5", buffer, dtype="float32", layers={"f": (dim,)}, attrs=attrs)
        template = store / self.entry.file
        with h5py.File(template, "r") as f:
            self.keys_offset = int(f["keys"].id.get_offset())
        self.bytes = bytearray(template.read_bytes())
        template.unlink()
        self.labels = [f"class-{i % 10}" for i in range(rows)]
        self.paths = [f"images/{i:09d}.jpg" for i in range(rows)]

    def make(self, number: int) -> tuple[Any, list[str]]:
        """Write shard ``number``; return its entry and keys."""
        import xxhash

        from featurestore._atomic import CHECKSUM_PREFIX

        keys = [f"{number:032x}{i:032x}" for i in range(self.rows)]
        self.bytes[self.keys_offset:self.keys_offset + 64 * self.rows] = "".join(keys).encode()
        name = f"sim-{number:07d}.h5"
        (self.store / "shards" / name).write_bytes(self.bytes)
        entry = replace(self.entry, file=f"shards/{name}",
                        checksum=CHECKSUM_PREFIX + xxhash.xxh3_128(bytes(self.bytes)).hexdigest())
        return entry, keys


def _schema1_commit_s(manifest_data: dict[str, Any], directory: Path, repeats: int = 3) -> float:
    """Median time of what a schema-1 commit did: encode the whole manifest, replace it atomically."""
    from featurestore._atomic import write_bytes_atomic

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        write_bytes_atomic(directory / "schema1-manifest.json",
                           json.dumps(manifest_data, sort_keys=True, separators=(",", ":")).encode())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _open_figures(store: Path) -> dict[str, float]:
    from featurestore import open_store

    times = []
    for _ in range(3):
        start = time.perf_counter()
        opened = open_store(store)
        times.append(time.perf_counter() - start)
        del opened
    tracemalloc.start()
    opened = open_store(store)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    index = opened.manifest.index
    return {"open_s": statistics.median(times), "held_bytes": held, "peak_bytes": peak, "rows": len(opened),
            "manifest_bytes": (store / "manifest.json").stat().st_size,
            "index_bytes": (store / index.file).stat().st_size if index else 0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from featurestore.manifest import StoreConfig
    from featurestore.spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
    from featurestore.writer import StoreWriter

    shards = args.shards or (2_000 if args.quick else 100_000)
    milestones = sorted({m for m in (1_000, 10_000, 100_000, shards) if m <= shards})
    spec = ModelSpec(backbone="simulated", weights=WeightsInfo("none", None, False),
                     layers=(LayerSpec(name="f", output="f", channels=args.dim, dim=args.dim, stride=None,
                                       pooling="none"),),
                     preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3,
                                                 std=(1.0,) * 3))
    config = StoreConfig.from_spec(spec, "0" * 64)
    points = []
    with scratch_dir(args, "store-scale") as workdir:
        store = workdir / "store"
        writer = StoreWriter(store, config, spec)
        factory = _ShardFactory(store, args.rows_per_shard, args.dim)
        commit_times: list[float] = []
        done = 0
        for milestone in milestones:
            window: list[float] = []
            while done < milestone:
                entry, keys = factory.make(done)
                start = time.perf_counter()
                writer.commit_external(entry, keys, [0] * len(keys), factory.paths, factory.labels,
                                       splits=["train"] * len(keys))
                window.append(time.perf_counter() - start)
                done += 1
            commit_times += window
            schema1 = _schema1_commit_s(writer.manifest.data, workdir)
            writer.close()  # a checkpoint: the row index covers every shard
            reopen = time.perf_counter()
            writer = StoreWriter(store, config, spec)
            reopen = time.perf_counter() - reopen
            figures = _open_figures(store)
            tail = window[-min(len(window), 1000):]
            points.append({"shards": milestone, "commit_median_s": statistics.median(tail),
                           "commit_p99_s": float(np.percentile(tail, 99)), "commit_mean_s": float(np.mean(tail)),
                           "window": len(tail), "schema1_commit_s": schema1, "writer_open_s": reopen, **figures})
            print(f"  {milestone} shards: commit {1e3 * statistics.median(tail):.2f} ms, "
                  f"open {figures['open_s']:.3f} s", file=sys.stderr, flush=True)
        writer.close()
    return _document(points, args, shards)


def _document(points: list[dict[str, Any]], args: argparse.Namespace, shards: int) -> dict[str, Any]:
    last, first = points[-1], points[0]
    rows = last["rows"]
    per_row = last["held_bytes"] / rows
    per_shard_manifest = last["manifest_bytes"] / last["shards"]
    index_per_row = last["index_bytes"] / rows
    growth = last["commit_mean_s"] / first["commit_mean_s"]
    rows_table = [[f"{p['shards']:,}", f"{p['rows']:,}", f"{1e3 * p['commit_median_s']:.2f}",
                   f"{1e3 * p['commit_p99_s']:.2f}", f"{1e3 * p['commit_mean_s']:.2f}",
                   f"{1e3 * p['schema1_commit_s']:.1f}", f"{p['open_s']:.3f}", f"{p['writer_open_s']:.2f}",
                   f"{p['held_bytes'] / 2**20:.1f}", f"{p['manifest_bytes'] / 2**20:.1f}",
                   f"{p['index_bytes'] / 2**20:.1f}"] for p in points]
    rate = args.rows_per_shard / last["commit_mean_s"]
    projection = {
        "rows": 10**8, "shards": 10**5,
        "reader_memory_gib": per_row * 1e8 / 2**30,
        "manifest_gib": per_shard_manifest * 1e5 / 2**30,
        "index_gib": index_per_row * 1e8 / 2**30,
        "commits_per_s": 1.0 / last["commit_mean_s"],
        "rows_per_s_at_1000_rows_per_shard": 1000.0 / last["commit_mean_s"],
    }
    note = (f"Mean commit (journal append + fdatasync, checkpoints amortised) {1e3 * first['commit_mean_s']:.2f} ms "
            f"over the last {first['window']} commits to {first['shards']:,} shards and "
            f"{1e3 * last['commit_mean_s']:.2f} ms to {last['shards']:,}; a schema-1 commit (whole manifest "
            f"re-encoded and replaced) cost {1e3 * first['schema1_commit_s']:.1f} ms and "
            f"{1e3 * last['schema1_commit_s']:.1f} ms at the same sizes.")
    return {
        "parameters": {"shards": shards, "rows_per_shard": args.rows_per_shard, "dim": args.dim},
        "points": points, "projection": projection,
        "targets": [evaluate("store.commit_growth", growth, note=note,
                             detail={"commit_rows_per_s": rate})],
        "notes": [
            f"At 10^8 rows in 10^5 shards (1,000 rows each), from the bytes per row and per shard measured at "
            f"{last['shards']:,} shards: an opened store holds about {projection['reader_memory_gib']:.1f} GiB "
            f"(its row index: keys, labels, splits, views, paths), the manifest is "
            f"{projection['manifest_gib']:.2f} GiB of JSON (read at every open) and the row index file "
            f"{projection['index_gib']:.1f} GiB; a driver commits about {projection['commits_per_s']:.0f} shards/s "
            f"({projection['rows_per_s_at_1000_rows_per_shard']:,.0f} rows/s at 1,000 rows per shard) "
            "whatever the store's size.",
            "Shards are byte copies of one real shard with rewritten keys; commits, checkpoints and opens run the "
            "product's own code on them.",
        ],
        "tables": [table(f"Committing {shards:,} shards of {args.rows_per_shard} rows (one driver, "
                         "StoreWriter.commit_external), per milestone",
                         ["shards", "rows", "commit median ms", "commit p99 ms", "commit mean ms (incl. checkpoints)",
                          "schema-1 commit ms", "open_store s", "writer open s", "opened store MiB",
                          "manifest MiB", "row index MiB"], rows_table)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("store_scale", __doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, help="shards to commit (default: 100,000; 2,000 with --quick)")
    parser.add_argument("--rows-per-shard", type=int, default=10)
    parser.add_argument("--dim", type=int, default=16, help="feature width")
    args = parse_args(parser, argv)
    return run_and_report("store_scale", args, run)


if __name__ == "__main__":
    raise SystemExit(main())
