"""Archive and table sources: extraction images/s from a zip, WebDataset shards, Parquet and a
``save_to_disk`` folder vs the same JPEGs as a folder; peak RSS reading a large Parquet file.

``python -m benchmarks.sources [--quick] [--images 512] [--rss-mib 2048] [--no-rss-extract]``

- **Throughput**, interleaved and repeated: ``extract(model, SOURCE, fresh_store)`` with
  MobileNetV2 (``last``) on the CPU, batch 32, for the same ``--images`` JPEGs packed as a folder,
  a ``.zip``, WebDataset ``.tar`` shards of 128 samples, one Parquet file (row groups of 100
  rows, as ``datasets`` writes them) and a ``save_to_disk`` folder (Arrow IPC stream). Every
  variant must add one row per image; the ratios are each source's images/s over the folder's.
- **Peak RSS**: a Parquet file of ``--rss-mib`` MiB of distinct JPEGs (the benchmark's JPEGs
  with a unique trailer after their end-of-image marker), each in a fresh process whose
  peak resident set (``VmHWM``) is reported: only listed and hashed as ``extract``'s reading thread does
  (``read``: what the source itself holds), then extracted (``extract``), next to extracting
  its first row group alone (``extract, 1 row group``: the extraction's own baseline, the
  model, onnxruntime's arena and the decode window, whatever the source).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from ._common import Variant, add_cache_dir, make_parser, measure, parse_args, ratio_cell, repeats_for
from ._common import run_and_report, scratch_dir, speed_ratio, table
from ._images import jpeg_folder, parse_sizes
from ._models import BACKBONES, exported_model

__all__ = ["main", "run"]

BATCH = 32
SHARD_SAMPLES = 128
ROW_GROUP = 100
VARIANTS = ("folder", "zip", "webdataset", "parquet", "save_to_disk")

_RSS_CHILD = """
import json, sys, time
mode, model, source, store = sys.argv[1:5]
started = time.perf_counter()
if mode == "read":
    from featurestore.sources import content_key, open_source
    n = 0
    for item in open_source(source):
        content_key(item.read())
        n += 1
else:
    from featurestore import ExtractConfig, extract
    n = extract(model, source, store, ExtractConfig(batch_size=32, device="cpu", progress=False)).rows_added
# VmHWM: this process's peak resident set (ru_maxrss would start from the forking parent's).
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"items": n, "seconds": time.perf_counter() - started, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
"""


def _pack(folder: Path, out: Path) -> dict[str, Path]:
    """The folder's JPEGs as every other source (untimed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.jpg"))
    out.mkdir(parents=True)
    archive = out / "imgs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not deflate
        for path in files:
            zf.write(path, path.name)
    shards = out / "shards"
    shards.mkdir()
    for s in range(0, len(files), SHARD_SAMPLES):
        with tarfile.open(shards / f"shard-{s // SHARD_SAMPLES:06d}.tar", "w") as tar:
            for path in files[s:s + SHARD_SAMPLES]:
                tar.add(path, f"{path.stem}.jpg")
    count = (len(files) + SHARD_SAMPLES - 1) // SHARD_SAMPLES
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}}
    table_ = pa.table({"image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in files], image_type)})
    table_ = table_.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table_, out / "imgs.parquet", row_group_size=ROW_GROUP)
    saved = out / "saved"
    saved.mkdir()
    with pa.OSFile(str(saved / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table_.schema) as writer:
        for batch in table_.to_batches(max_chunksize=ROW_GROUP):
            writer.write_batch(batch)
    (saved / "dataset_info.json").write_text(json.dumps({"features": features}))
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                  "_split": None}))
    return {"folder": folder, "zip": archive, "webdataset": f"wds:{shards}/shard-{{000000..{count - 1:06d}}}.tar",
            "parquet": out / "imgs.parquet", "save_to_disk": saved}


def _variant(name: str, model: Any, source: Any, count: int, workdir: Path) -> Variant:
    from featurestore import ExtractConfig, extract

    options = ExtractConfig(batch_size=BATCH, device="cpu", progress=False)
    counter = iter(range(10**9))

    def run_once(store: Path) -> None:
        report = extract(model, source, store, options)
        if report.rows_added != count or report.failures:
            raise RuntimeError(f"{name}: {report.rows_added} rows and {len(report.failures)} failures "
                               f"for {count} images")

    return Variant(name, run_once, count, "img", setup=lambda: workdir / f"store-{name}-{next(counter)}",
                   teardown=lambda store: shutil.rmtree(store, ignore_errors=True))


def _big_parquet(folder: Path, path: Path, mib: int) -> dict[str, Any]:
    """A Parquet file of about ``mib`` MiB (at least one row group) of distinct JPEGs, one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jpegs = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    schema = pa.schema([("image", pa.binary())])
    written, rows = 0, 0
    with pq.ParquetWriter(path, schema) as writer:
        while rows == 0 or written < mib << 20:
            cells = [jpegs[(rows + i) % len(jpegs)] + b"featurestore-bench-%012d" % (rows + i)
                     for i in range(ROW_GROUP)]
            writer.write_table(pa.table({"image": cells}, schema=schema))
            written += sum(len(c) for c in cells)
            rows += ROW_GROUP
    return {"rows": rows, "image_mib": written / 2**20, "file_mib": path.stat().st_size / 2**20}


def _rss(mode: str, model: Path, source: Path, store: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, mode, str(model), str(source), str(store)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time every source and measure the Parquet peak RSS; return the results document."""
    from featurestore import FeatureModel

    images = args.images or (64 if args.quick else 512)
    rss_mib = args.rss_mib if args.rss_mib is not None else (16 if args.quick else 2048)
    repeats = repeats_for(args)
    folder, folder_info = jpeg_folder(args.cache_dir, images, parse_sizes(args.sizes), args.seed)
    model_path = exported_model(BACKBONES["mobilenet_v2"], "last", args.cache_dir)
    model = FeatureModel(model_path, device="cpu")
    with scratch_dir(args, "sources") as workdir:
        sources = _pack(folder, workdir / "packed")
        variants = [_variant(name, model, sources[name], images, workdir) for name in VARIANTS]
        stats = measure(variants, repeats, warmup=True)
        big = _big_parquet(folder, workdir / "big.parquet", rss_mib)
        small = _big_parquet(folder, workdir / "small.parquet", 0)
        rss = {"read": _rss("read", model_path, workdir / "big.parquet", workdir / "rss-read")}
        if args.rss_extract:
            rss["extract"] = _rss("extract", model_path, workdir / "big.parquet", workdir / "rss-big")
            rss["extract, 1 row group"] = _rss("extract", model_path, workdir / "small.parquet", workdir / "rss-small")
    ratios = {name: speed_ratio(stats, name, "folder") for name in VARIANTS[1:]}
    rows = [[name, f"{stats[name]['rate']:.1f} ±{50 * stats[name]['spread']:.0f}%",
             ratio_cell(ratios[name]) if name in ratios else "1"] for name in VARIANTS]
    rss_rows = [[mode, f"{(small if '1 row' in mode else big)['file_mib']:.1f}", r["items"], f"{r['seconds']:.1f}",
                 f"{r['peak_rss_mib']:.0f}"] for mode, r in rss.items()]
    return {
        "parameters": {"images": images, "sizes": args.sizes, "batch_size": BATCH, "backbone": "mobilenet_v2",
                       "shard_samples": SHARD_SAMPLES, "row_group_rows": ROW_GROUP, "rss_mib": rss_mib,
                       "rss_extract": args.rss_extract, "jpeg_folder": folder_info},
        "variants": stats, "ratios": ratios, "rss": {"file": big, "one_row_group": small, **rss}, "targets": [],
        "notes": [f"peak RSS, {mode}: {r['peak_rss_mib']:.0f} MiB" for mode, r in rss.items()],
        "tables": [table(f"Extraction images/s by source, MobileNetV2 batch {BATCH}, median of {repeats} repeats "
                         "±half-spread; ratio to the folder with per-repeat range",
                         ["source", "images/s", "vs folder"], rows),
                   table(f"Peak RSS (MiB) of one process per row, Parquet file of {big['rows']} rows",
                         ["mode", "file MiB", "items", "seconds", "peak RSS MiB"], rss_rows)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("sources", __doc__.splitlines()[0])
    add_cache_dir(parser, "exported models and JPEG folders")
    parser.add_argument("--images", type=int, help="JPEGs per source (default 512; 64 with --quick)")
    parser.add_argument("--sizes", default="640x480,500x375",
                        help="JPEG sizes WxH taken in turn (default 640x480,500x375)")
    parser.add_argument("--rss-mib", type=int,
                        help="MiB of the Parquet file for the RSS figure, at least one row group (default 2048)")
    parser.add_argument("--no-rss-extract", dest="rss_extract", action="store_false",
                        help="only list and hash the large file (no extraction of it)")
    return run_and_report("sources", parse_args(parser, argv), run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
