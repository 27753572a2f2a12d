"""Storage: our store's writer and reader vs ``np.save``/``np.load`` and ``torch.save``/``torch.load``.

``python -m benchmarks.store [--quick] [--rows 50000] [--layouts single,stages] [--dtypes float32,float16]``

The same feature matrices (non-negative, like pooled ReLU features) are written and read
every way, interleaved and repeated, in four groups per case:

- **write**: ``write_arrays(path, {...})`` (default shard size: fsync'd shards, per-row content
  keys, statistics, manifest) vs ``np.save`` of one ``.npy`` per layer (also followed by fsync,
  for a like-for-like durability figure) vs ``torch.save`` of a dict of tensors (CLIP_benchmark's
  feature cache). A fresh directory every time.
- **full read**: ``open_store(path).load()`` (and ``load()`` on an already opened store, with
  and without the checksum check of every shard read whole: ``load(check=False)``) vs
  ``np.load`` of every layer, vs ``np.load`` of every layer plus a keys and a labels ``.npy``
  (what our load returns beside the features), vs ``torch.load(weights_only=True)``.
- **rows**: ``load(rows=...)`` of K sorted random rows and of a contiguous K-row slice, on an
  opened store, vs ``np.load(mmap_mode="r")`` then indexing, vs ``torch.load`` (plain and
  ``mmap=True``) then indexing.
- **one layer** (multi-layer cases): one layer out of several.

Layouts: ``single`` is one 1280-wide layer (MobileNetV2's ``last``); ``stages`` is the five
MobileNetV2 stage layers our ``stages`` export stores (16+24+32+96+1280 = 1448 wide). Reads come
from the page cache (files just written), for every variant alike.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, make_parser, measure, parse_args, ratio_cell, repeats_for, run_and_report
from ._common import scratch_dir, speed_ratio, table, time_ratio
from .targets import evaluate

__all__ = ["LAYOUTS", "main", "run"]

LAYOUTS: dict[str, dict[str, int]] = {
    "single": {"features.18.avg": 1280},
    "stages": {"features.1.avg": 16, "features.3.avg": 24, "features.6.avg": 32, "features.13.avg": 96,
               "features.18.avg": 1280},
}
ONE_LAYER = "features.13.avg"
TARGET_CASE = ("single", "float32")
LAYER_CASE = ("stages", "float32")


def _features(n: int, widths: dict[str, int], dtype: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, width in widths.items():
        values = rng.standard_normal((n, width), dtype=np.float32)
        np.abs(values, out=values)
        out[name] = values.astype(dtype, copy=False)
    return out


def _fsync_dir_files(directory: Path) -> None:
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Case:
    """One (layout, dtype): the arrays and a written copy of each format for the read groups."""

    def __init__(self, layout: str, dtype: str, rows: int, subset: int, workdir: Path, seed: int) -> None:
        import torch

        from featurestore import write_arrays

        self.layout, self.dtype, self.workdir = layout, dtype, workdir
        self.features = _features(rows, LAYOUTS[layout], dtype, seed)
        self.nbytes = sum(v.nbytes for v in self.features.values())
        self.row_bytes = self.nbytes / rows
        self.store_path, self.npy_dir, self.pt_path = workdir / "store", workdir / "npy", workdir / "features.pt"
        self.labels = [f"class-{i % 10}" for i in range(rows)]
        written = write_arrays(self.store_path, self.features, labels=self.labels, dtype=dtype)
        # the shard size `extract` writes (write_arrays commits once, so it writes larger shards)
        self.small_shards_path = workdir / "store-2048"
        write_arrays(self.small_shards_path, self.features, labels=self.labels, dtype=dtype, shard_rows=2048)
        self.npy_dir.mkdir()
        for name, values in self.features.items():
            np.save(self.npy_dir / f"{name}.npy", values)
        self.index_dir = workdir / "npy-index"
        self.index_dir.mkdir()
        np.save(self.index_dir / "keys.npy", written.keys.astype("S64"))
        np.save(self.index_dir / "labels.npy", np.array(self.labels))
        torch.save({k: torch.from_numpy(v) for k, v in self.features.items()}, self.pt_path)
        rng = np.random.default_rng(seed + 1)
        self.random = np.sort(rng.choice(rows, size=subset, replace=False))
        start = int(rng.integers(0, rows - subset + 1))
        self.slice = np.arange(start, start + subset)

    def fresh(self, name: str):
        """Setup/teardown pair giving a new, not yet existing path under the work directory."""
        counter = iter(range(10**9))
        return (lambda: self.workdir / f"{name}-{next(counter)}",
                lambda path: shutil.rmtree(path, ignore_errors=True))


# --- variants -----------------------------------------------------------------------------------
def _write_variants(case: _Case) -> list[Variant]:
    import torch

    from featurestore import write_arrays

    feats, gb = case.features, case.nbytes / 1e9

    def np_save(directory: Path, fsync: bool = False) -> None:
        directory.mkdir()
        for name, values in feats.items():
            np.save(directory / f"{name}.npy", values)
        if fsync:
            _fsync_dir_files(directory)

    def torch_save(directory: Path) -> None:
        directory.mkdir()
        torch.save({k: torch.from_numpy(v) for k, v in feats.items()}, directory / "features.pt")

    return [
        Variant("ours write_arrays", lambda p: write_arrays(p, feats, labels=case.labels, dtype=case.dtype), gb, "GB",
                *case.fresh("w")),
        Variant("np.save", np_save, gb, "GB", *case.fresh("n")),
        Variant("np.save + fsync", lambda p: np_save(p, fsync=True), gb, "GB", *case.fresh("f")),
        Variant("torch.save", torch_save, gb, "GB", *case.fresh("t")),
    ]


def _np_load_all(directory: Path, names, mmap: bool = False) -> dict[str, np.ndarray]:
    return {name: np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None) for name in names}


def _read_variants(case: _Case, opened) -> list[Variant]:
    import torch

    from featurestore import open_store

    names, gb = list(case.features), case.nbytes / 1e9
    return [
        Variant("ours open_store().load()", lambda _: open_store(case.store_path).load(), gb, "GB"),
        Variant("ours load() (opened)", lambda _: opened.load(), gb, "GB"),
        Variant("ours load(check=False) (opened)", lambda _: opened.load(check=False), gb, "GB"),
        Variant("ours open+load, 2048-row shards", lambda _: open_store(case.small_shards_path).load(), gb, "GB"),
        Variant("np.load", lambda _: _np_load_all(case.npy_dir, names), gb, "GB"),
        Variant("np.load + keys, labels", lambda _: (_np_load_all(case.npy_dir, names),
                                                     _np_load_all(case.index_dir, ["keys", "labels"])), gb, "GB"),
        Variant("torch.load", lambda _: torch.load(case.pt_path, weights_only=True), gb, "GB"),
    ]


def _rows_variants(case: _Case, opened) -> list[Variant]:
    import torch

    names, k = list(case.features), len(case.random)
    gb = k * case.row_bytes / 1e9
    rnd, sl = case.random, slice(int(case.slice[0]), int(case.slice[-1]) + 1)
    rnd_t = torch.from_numpy(rnd)

    def np_rows(index) -> dict[str, np.ndarray]:
        return {n: np.array(m[index]) for n, m in _np_load_all(case.npy_dir, names, mmap=True).items()}

    def torch_rows(index, mmap: bool) -> dict[str, Any]:
        loaded = torch.load(case.pt_path, weights_only=True, mmap=mmap)
        return {n: v[index].clone() for n, v in loaded.items()}

    return [
        Variant("ours random rows", lambda _: opened.load(rows=rnd), gb, "GB"),
        Variant("ours slice", lambda _: opened.load(rows=case.slice), gb, "GB"),
        Variant("ours full (opened)", lambda _: opened.load(), case.nbytes / 1e9, "GB"),
        Variant("np mmap random rows", lambda _: np_rows(rnd), gb, "GB"),
        Variant("np mmap slice", lambda _: np_rows(sl), gb, "GB"),
        Variant("torch.load random rows", lambda _: torch_rows(rnd_t, False), gb, "GB"),
        Variant("torch mmap random rows", lambda _: torch_rows(rnd_t, True), gb, "GB"),
        Variant("torch mmap slice", lambda _: torch_rows(sl, True), gb, "GB"),
    ]


def _layer_variants(case: _Case) -> list[Variant]:
    import torch

    from featurestore import open_store

    gb = case.features[ONE_LAYER].nbytes / 1e9
    return [
        Variant("ours open_store().load(layer)", lambda _: open_store(case.store_path).load(ONE_LAYER), gb, "GB"),
        Variant("np.load(layer)", lambda _: np.load(case.npy_dir / f"{ONE_LAYER}.npy"), gb, "GB"),
        Variant("np.load(layer) + keys, labels", lambda _: (np.load(case.npy_dir / f"{ONE_LAYER}.npy"),
                                                            _np_load_all(case.index_dir, ["keys", "labels"])), gb, "GB"),
        Variant("torch.load()[layer]", lambda _: torch.load(case.pt_path, weights_only=True)[ONE_LAYER], gb, "GB"),
        Variant("torch mmap [layer]",
                lambda _: torch.load(case.pt_path, weights_only=True, mmap=True)[ONE_LAYER].clone(), gb, "GB"),
    ]


# --- where the time goes ------------------------------------------------------------------------
# Top-level parts (they do not nest in one another; the rest of the call is reported as "other")
# and, indented, parts nested in them.
_WRITE_PARTS = {
    "per-row content keys (row sha256, threads)": ("from_arrays.py", "_row_digests"),
    "shard files (write_shard)": ("shard_write.py", "write_shard"),
    "checkpoint: row index (write_row_index)": ("row_index.py", "write_row_index"),
    "checkpoint: manifest (save)": ("manifest.py", "save"),
    "opening the written store": ("store.py", "__init__"),
    "  layer statistics (in write_shard)": ("shard_buffer.py", "layer_stats"),
    "  shard checksum (in write_shard)": ("_atomic.py", "checksum_of"),
    "  fsync (all)": ("~", "<built-in method posix.fsync>"),
}
_READ_PARTS = {
    "open: manifest, journal, row index": ("store.py", "__init__"),
    "shard layout checks (before _fill)": ("hdf5_checks.py", "check_feature_layouts"),
    "feature arrays (_fill)": ("store.py", "_fill"),
    "  row index (in open)": ("row_index.py", "read_row_index"),
    "  checksummed shard reads (in _fill)": ("store.py", "_fill_checked"),
}


def _profile(fn, parts: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Cumulative seconds of selected functions in one profiled call of ``fn`` (plus the total)."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out = {"total": max(ct for (_, _, _, ct, _) in stats.values())}
    for label, (file_suffix, func) in parts.items():
        out[label] = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                         if name == func and file.endswith(file_suffix))
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total" and not k.startswith(" "))
    return out


def _breakdowns(case: _Case) -> dict[str, dict[str, float]]:
    from featurestore import open_store, write_arrays

    path = case.workdir / "profiled"
    write = _profile(lambda: write_arrays(path, case.features, dtype=case.dtype), _WRITE_PARTS)
    read = _profile(lambda: open_store(path).load(), _READ_PARTS)
    shutil.rmtree(path, ignore_errors=True)
    return {"write_arrays": write, "open_store().load()": read}


# --- analysis -----------------------------------------------------------------------------------
def _ratios(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ratios = {
        "write ours/np.save (speed)": speed_ratio(stats, "ours write_arrays", "np.save"),
        "write ours/np.save+fsync (speed)": speed_ratio(stats, "ours write_arrays", "np.save + fsync"),
        "write ours/torch.save (speed)": speed_ratio(stats, "ours write_arrays", "torch.save"),
        "read ours/np.load (speed)": speed_ratio(stats, "ours open_store().load()", "np.load"),
        "read ours opened/np.load (speed)": speed_ratio(stats, "ours load() (opened)", "np.load"),
        "read ours/np.load+index (speed)": speed_ratio(stats, "ours open_store().load()", "np.load + keys, labels"),
        "read ours/torch.load (speed)": speed_ratio(stats, "ours open_store().load()", "torch.load"),
        "checksummed/unchecked load (time)": time_ratio(stats, "ours load() (opened)",
                                                        "ours load(check=False) (opened)"),
        "ours random/slice (time)": time_ratio(stats, "ours random rows", "ours slice"),
        "ours random/full read (time)": time_ratio(stats, "ours random rows", "ours full (opened)",
                                                   work_normalised=False),
        "np mmap random/slice (time)": time_ratio(stats, "np mmap random rows", "np mmap slice"),
        "ours random/np mmap random (time)": time_ratio(stats, "ours random rows", "np mmap random rows"),
    }
    ratios["read ours 2048-row shards/np.load+index (speed)"] = speed_ratio(
        stats, "ours open+load, 2048-row shards", "np.load + keys, labels")
    if "ours open_store().load(layer)" in stats:
        ratios["one layer ours/np.load (speed)"] = speed_ratio(stats, "ours open_store().load(layer)",
                                                               "np.load(layer)")
        ratios["one layer ours/np.load+index (speed)"] = speed_ratio(stats, "ours open_store().load(layer)",
                                                                     "np.load(layer) + keys, labels")
    return ratios


def _targets(case: dict[str, Any], layer_case: dict[str, Any] | None, rows: int, subset: int,
             checksums: dict[str, Any]) -> list[dict[str, Any]]:
    r, prof = case["ratios"], case["breakdown"]
    rng = lambda ratio: (ratio["paired_min"], ratio["paired_max"])  # noqa: E731
    w, rd = prof["write_arrays"], prof["open_store().load()"]
    parts = ", ".join(f"{label.strip()} {w[label]:.2f} s" for label in [*_WRITE_PARTS, "other"])
    rates = ", ".join(f"{name} {gbs:.1f} GB/s" for name, gbs in checksums["rates"].items())
    write_note = (f"One profiled write_arrays call took {w['total']:.2f} s: {parts}. ours / np.save (no fsync) = "
                  f"{r['write ours/np.save (speed)']['value']:.2f}x. Shard checksum chosen by measurement on "
                  f"these shards' bytes ({rates}, one core): xxh3-128; content keys stay sha256.")
    read_note = (f"One profiled open_store().load() took {rd['total']:.3f} s: "
                 + ", ".join(f"{label.strip()} {rd[label]:.3f} s" for label in [*_READ_PARTS, "other"])
                 + f". On an opened store load() alone is {r['read ours opened/np.load (speed)']['value']:.2f}x "
                   f"np.load of the features only; with the shards `extract` writes (2048 rows) open+load is "
                   f"{r['read ours 2048-row shards/np.load+index (speed)']['value']:.2f}x. Checking every "
                   f"shard's checksum while reading it whole costs "
                   f"{r['checksummed/unchecked load (time)']['value']:.2f}x the time of load(check=False).")
    rows_note = (f"{subset} sorted random rows of {rows}: ours takes {r['ours random/full read (time)']['value']:.2f}x "
                 f"the time of loading every row; np.load(mmap) random/slice = "
                 f"{r['np mmap random/slice (time)']['value']:.2f}x; ours random / np mmap random = "
                 f"{r['ours random/np mmap random (time)']['value']:.2f}x.")
    out = [
        evaluate("store.write", r["write ours/np.save+fsync (speed)"]["value"],
                 paired_range=rng(r["write ours/np.save+fsync (speed)"]), note=write_note,
                 detail={**w, "checksum_gb_s": checksums["rates"]}),
        evaluate("store.read", r["read ours/np.load+index (speed)"]["value"],
                 paired_range=rng(r["read ours/np.load+index (speed)"]), note=read_note, detail=rd),
        evaluate("store.random_rows", r["ours random/slice (time)"]["value"],
                 paired_range=rng(r["ours random/slice (time)"]), note=rows_note),
    ]
    if layer_case is not None:
        ratio = layer_case["ratios"]["one layer ours/np.load+index (speed)"]
        out.append(evaluate("store.read_layer", ratio["value"], paired_range=rng(ratio),
                            note=f"Against np.load of the layer alone: "
                                 f"{layer_case['ratios']['one layer ours/np.load (speed)']['value']:.2f}x."))
    return out


def _checksum_rates(path: Path, repeats: int) -> dict[str, Any]:
    """GB/s of each candidate shard checksum over the bytes of the store's shards (one core)."""
    import hashlib

    import xxhash

    data = b"".join(p.read_bytes() for p in sorted((path / "shards").iterdir()))
    candidates = {"sha256": lambda: hashlib.sha256(data).digest(), "xxh3_128": lambda: xxhash.xxh3_128(data).digest()}
    try:
        import blake3

        candidates["blake3"] = lambda: blake3.blake3(data).digest()
    except ImportError:  # not a dependency; measured where installed
        pass
    rates = {}
    for name, digest in candidates.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            digest()
            times.append(time.perf_counter() - start)
        rates[name] = len(data) / min(times) / 1e9
    return {"bytes": len(data), "rates": rates}


# --- tables -------------------------------------------------------------------------------------
def _gbs(stats: dict[str, Any]) -> str:
    return f"{stats['rate']:.2f} ±{50 * stats['spread']:.0f}%"


def _ms(stats: dict[str, Any]) -> str:
    return f"{1000 * stats['median_s']:.1f} ±{50 * stats['spread']:.0f}%"


def _tables(cases: list[dict[str, Any]], rows: int, subset: int, repeats: int) -> list[dict[str, Any]]:
    def case_name(c: dict[str, Any]) -> str:
        return f"{c['layout']} {c['width']}w {c['dtype']}"

    v = lambda c, name: c["variants"][name]  # noqa: E731
    write = [[case_name(c), _gbs(v(c, "ours write_arrays")), _gbs(v(c, "np.save")), _gbs(v(c, "np.save + fsync")),
              _gbs(v(c, "torch.save")), ratio_cell(c["ratios"]["write ours/np.save (speed)"])] for c in cases]
    read = [[case_name(c), _gbs(v(c, "ours open_store().load()")), _gbs(v(c, "ours load() (opened)")),
             _gbs(v(c, "ours load(check=False) (opened)")),
             ratio_cell(c["ratios"]["checksummed/unchecked load (time)"]),
             _gbs(v(c, "np.load")), _gbs(v(c, "np.load + keys, labels")), _gbs(v(c, "torch.load")),
             ratio_cell(c["ratios"]["read ours/np.load (speed)"]),
             ratio_cell(c["ratios"]["read ours/np.load+index (speed)"])]
            for c in cases]
    subsets = [[case_name(c), _ms(v(c, "ours random rows")), _ms(v(c, "ours slice")), _ms(v(c, "np mmap random rows")),
                _ms(v(c, "np mmap slice")), _ms(v(c, "torch.load random rows")), _ms(v(c, "torch mmap random rows")),
                ratio_cell(c["ratios"]["ours random/slice (time)"])] for c in cases]
    out = [
        table(f"Write, GB/s (N = {rows:,}; median of {repeats} ±half-spread)",
              ["case", "ours write_arrays", "np.save", "np.save+fsync", "torch.save", "ours/np.save"], write),
        table("Full read, GB/s (page cache)",
              ["case", "ours open+load", "ours load (opened)", "ours load(check=False)", "checked/unchecked (time)",
               "np.load", "np.load + keys, labels", "torch.load", "ours/np.load", "ours/(np.load + keys, labels)"],
              read),
        table(f"{subset:,} rows, ms: sorted random rows vs a contiguous slice",
              ["case", "ours random", "ours slice", "np mmap random", "np mmap slice", "torch.load random",
               "torch mmap random", "ours random/slice (time)"], subsets),
    ]
    layer = [[case_name(c), _ms(v(c, "ours open_store().load(layer)")), _ms(v(c, "np.load(layer)")),
              _ms(v(c, "torch.load()[layer]")), _ms(v(c, "torch mmap [layer]")),
              ratio_cell(c["ratios"]["one layer ours/np.load (speed)"])]
             for c in cases if "one layer ours/np.load (speed)" in c["ratios"]]
    if layer:
        out.append(table(f"One layer ({ONE_LAYER}) out of several, ms",
                         ["case", "ours open+load(layer)", "np.load(layer)", "torch.load()[layer]",
                          "torch mmap [layer]", "ours/np.load (speed)"], layer))
    for c in cases:
        for call, parts in c.get("breakdown", {}).items():
            rows = [[label, f"{parts[label]:.3f}", f"{100 * parts[label] / parts['total']:.0f}%"]
                    for label in parts if label != "total"]
            out.append(table(f"Where {call} spends its time ({case_name(c)}, one call under cProfile: "
                             f"{parts['total']:.3f} s)", ["part", "seconds", "share"], rows))
    return out


# --- entry point --------------------------------------------------------------------------------
def _run_case(layout: str, dtype: str, args: argparse.Namespace, rows: int, subset: int, repeats: int,
              workdir: Path) -> dict[str, Any]:
    from featurestore import open_store

    case = _Case(layout, dtype, rows, subset, workdir, args.seed)
    opened = open_store(case.store_path)
    stats: dict[str, dict[str, Any]] = {}
    stats.update(measure(_write_variants(case), repeats, warmup=not args.quick))
    stats.update(measure(_read_variants(case, opened), repeats, warmup=not args.quick))
    stats.update(measure(_rows_variants(case, opened), repeats, warmup=not args.quick))
    if len(case.features) > 1:
        stats.update(measure(_layer_variants(case), repeats, warmup=not args.quick))
    result = {"layout": layout, "dtype": dtype, "width": sum(LAYOUTS[layout].values()),
              "layers": LAYOUTS[layout], "bytes": case.nbytes, "variants": stats, "ratios": _ratios(stats)}
    if (layout, dtype) == TARGET_CASE:
        result["breakdown"] = _breakdowns(case)
        result["checksums"] = _checksum_rates(case.store_path, repeats)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (layout, dtype) case; return the results document."""
    import sys

    rows = args.rows or (2_000 if args.quick else 50_000)
    subset = min(args.subset or (500 if args.quick else 5_000), rows // 2)
    repeats = repeats_for(args)
    cases = []
    for layout in args.layouts:
        for dtype in args.dtypes:
            with scratch_dir(args, "store") as workdir:
                cases.append(_run_case(layout, dtype, args, rows, subset, repeats, workdir))
            print(f"  {layout} {dtype}: done", file=sys.stderr, flush=True)
    target = [c for c in cases if (c["layout"], c["dtype"]) == TARGET_CASE]
    layer = [c for c in cases if (c["layout"], c["dtype"]) == LAYER_CASE]
    return {
        "parameters": {"rows": rows, "subset": subset, "layouts": {k: LAYOUTS[k] for k in args.layouts},
                       "dtypes": args.dtypes, "one_layer": ONE_LAYER, "shard_rows": 2048,
                       "target_case": list(TARGET_CASE)},
        "cases": cases, "targets": _targets(target[0], layer[0] if layer else None, rows, subset, target[0]["checksums"])
        if target else [], "notes": [],
        "tables": _tables(cases, rows, subset, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("store", __doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="rows N (default: 50,000; 2,000 with --quick)")
    parser.add_argument("--subset", type=int, help="rows K of the subset reads (default: 5,000; 500 with --quick)")
    parser.add_argument("--layouts", type=lambda s: s.split(","), default=list(LAYOUTS),
                        help="comma-separated: single (1280 wide), stages (16+24+32+96+1280)")
    parser.add_argument("--dtypes", type=lambda s: s.split(","), default=["float32", "float16"])
    args = parse_args(parser, argv)
    bad = [x for x in args.layouts if x not in LAYOUTS] + [x for x in args.dtypes if x not in ("float32", "float16")]
    if bad:
        parser.error(f"unknown layout or dtype: {', '.join(bad)}")
    return run_and_report("store", args, run)


if __name__ == "__main__":
    raise SystemExit(main())
