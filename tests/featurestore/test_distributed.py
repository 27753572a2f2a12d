"""Distributed extraction on Ray Data: same store as the local engine, exactly-once rows under failures.

One local Ray instance (2 CPUs) serves the whole module; the CLI run that is SIGKILLed
joins it with --address, so a killed driver leaves no Ray of its own behind.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import ExtractConfig, StoreError, extract, open_store, verify_store
from featurestore.cli import main
from featurestore.manifest import MANIFEST_NAME, STORE_SCHEMA_VERSION, Manifest, StoreConfig
from featurestore.shard_buffer import ShardBuffer
from featurestore.shard_write import write_shard
from featurestore.store_paths import SHARD_DIR
from featurestore.verify import orphan_files
from images import write_bad_images, write_good_images

# Ray Data sets its own deprecated config attributes internally; those warnings are not ours.
pytestmark = [pytest.mark.distributed, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]

OPTS = ExtractConfig(batch_size=4, shard_rows=4, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module (2 CPUs); its GCS address for other drivers."""
    ray = pytest.importorskip("ray")
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield context.address_info["address"]
    ray.shutdown()


def _ray_options(**kwargs):
    from featurestore.distributed import RayOptions

    return RayOptions(workers=2, cpus_per_worker=0.5, **kwargs)


def _rows(store: Path) -> dict[tuple[str, int], np.ndarray]:
    data = open_store(store).load(view=None)
    rows = list(zip(data.keys.tolist(), data.views.tolist()))
    assert len(set(rows)) == len(rows), "a (key, view) row is stored twice"
    return dict(zip(rows, data.matrix()))


def _committed(store: Path) -> int:
    """Rows committed (checkpoint and journal), 0 while there is no store yet."""
    try:
        return Manifest.load(store).rows
    except StoreError:
        return 0


def test_ray_store_equals_local_store(tiny_onnx, tmp_path, ray_address):
    from featurestore.distributed import extract_distributed

    folder = tmp_path / "imgs"
    good = write_good_images(folder, n=40)
    bad = write_bad_images(folder)
    shutil.copy(good[0], folder / "copy_of_first.jpg")

    local = extract(tiny_onnx, folder, tmp_path / "local", OPTS)
    report = extract_distributed(tiny_onnx, folder, tmp_path / "ray", OPTS, _ray_options())
    assert report.decoded == local.decoded == len(good)
    assert report.duplicates == local.duplicates == 1
    assert sorted((Path(f["path"]).name, f["error"]) for f in report.failures) == \
        sorted((Path(f["path"]).name, f["error"]) for f in local.failures)
    assert len(report.failures) == len(bad)
    # Ray may hand every batch to the first actor that is up; the per-worker counts add up either way.
    assert 1 <= len(report.workers) and sum(w["images"] for w in report.workers.values()) == len(good)
    assert verify_store(tmp_path / "ray") == []

    expected, got = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert got.keys() == expected.keys()
    for row, value in expected.items():
        assert np.array_equal(got[row], value), f"features of {row[0][:12]} differ"
    recorded = [{(f["path"], f["key"], f["error"]) for f in open_store(tmp_path / name).failures}
                for name in ("local", "ray")]
    assert recorded[0] == recorded[1] and len(recorded[0]) == len(bad)

    again = extract_distributed(tiny_onnx, folder, tmp_path / "ray", OPTS, _ray_options())
    assert again.decoded == 0 and again.skipped == again.listed == len(good) + 1 + len(bad)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tables_and_shards(tmp_path: Path) -> tuple[Path, str]:
    """A Parquet file and WebDataset shards of the same images, with a non-image cell or member, a
    repeated image and (shards) a truncated shard."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good = [p.read_bytes() for p in write_good_images(tmp_path / "imgs", n=24, seed=11)]
    cells = good + [b"<html>not an image</html>", good[0]]
    table = pa.table({"image": cells, "label": [f"c{i % 3}" for i in range(len(cells))]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=5)
    shards = tmp_path / "shards"
    shards.mkdir()
    members = [(f"s{i:03d}.{'jpg' if i % 2 == 0 else 'png'}", data) for i, data in enumerate(good)]
    _tar(shards / "s-0.tar", members[:12] + [("bad.jpg", b"<html>not an image</html>")])
    _tar(shards / "s-1.tar", members[12:] + [("again.jpg", good[0])])
    whole = _tar(tmp_path / "whole.tar", [(f"t{i}.jpg", data) for i, data in enumerate(good[:6])]).read_bytes()
    (shards / "s-2.tar").write_bytes(whole[: len(whole) // 2])
    return tmp_path / "t.parquet", f"wds:{shards}/s-{{0..2}}.tar"


def test_parquet_and_shards_read_by_workers_equal_the_local_engine(tiny_onnx, tmp_path, ray_address, monkeypatch):
    """--engine ray on a Parquet file and WebDataset shards: the workers read, key and decode them (the
    driver reads no image), and the store is the local engine's: rows, keys, failures."""
    from featurestore.sources import SourceItem

    table, shards = _tables_and_shards(tmp_path)
    reads: list[str] = []
    real = SourceItem.read

    def read(self, *args, **kwargs):
        reads.append(self.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SourceItem, "read", read)  # in this process (the driver) only
    for name, source in (("table", table), ("wds", shards)):
        code = main(["extract", str(tiny_onnx), str(source), "-o", str(tmp_path / f"ray-{name}"), "--engine", "ray",
                     "--address", ray_address, "--workers", "2", "--cpus-per-worker", "0.5", "--device", "cpu",
                     "--batch-size", "4", "--shard-rows", "4", "--no-progress"])
        assert code == 0
    assert reads == []
    listed = 0
    for name, source in (("table", table), ("wds", shards)):
        listed += extract(tiny_onnx, source, tmp_path / f"local-{name}", OPTS).listed
        expected, got = _rows(tmp_path / f"local-{name}"), _rows(tmp_path / f"ray-{name}")
        assert len(expected) == 24 and got.keys() == expected.keys()
        assert all(np.array_equal(got[row], expected[row]) for row in expected)
        paths = [dict(zip(d.keys.tolist(), d.paths.tolist()))  # the first item of a repeated image holds the row
                 for d in (open_store(tmp_path / f"{e}-{name}").load(view=None) for e in ("local", "ray"))]
        assert paths[0] == paths[1]
        failures = [sorted((f["path"], f["key"], f["error"]) for f in open_store(tmp_path / f"{e}-{name}").failures)
                    for e in ("local", "ray")]
        assert failures[0] == failures[1] and len(failures[0]) == (1 if name == "table" else 2)
        assert verify_store(tmp_path / f"ray-{name}") == []
    assert len(reads) == listed == 26 + 31  # the local engine reads each item here: what is counted is what is read


def test_units_changed_after_keying_become_failures(tmp_path):
    """No Ray: the decode step of a unit re-checks every item against the key the driver took from the key step."""
    from featurestore._ray_units import decode_unit, key_unit, plan_units
    from featurestore.sources import open_source
    from featurestore.spec import Preprocessing

    _, shards = _tables_and_shards(tmp_path)
    source = open_source(shards)
    units, shipped = plan_units(source)
    assert units == [["wds", 0], ["wds", 1], ["wds", 2]]
    keyed = json.loads(key_unit({"unit": np.array([json.dumps(units[0])], dtype=object)}, source=shipped,
                                max_file_bytes=1 << 20)["rows"][0])
    assert [r["key"] != "" for r in keyed] == [True] * 13 and keyed[0]["path"].endswith("s-0.tar#s000.jpg")
    want = [[0, keyed[0]["key"], keyed[0]["path"]], [1, "0" * 64, keyed[1]["path"]], [99, "1" * 64, "gone#x.jpg"]]
    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3)
    blocks = list(decode_unit({"unit": np.array([json.dumps(units[0])], dtype=object),
                               "want": np.array([json.dumps(want)], dtype=object)}, source=shipped,
                              max_file_bytes=1 << 20, preprocessing=prep, views=0, augment=(), shape=(8, 8, 3), rows=2))
    assert [len(b["key"]) for b in blocks] == [2, 1]
    rows = {str(p): (str(k), str(e)) for b in blocks for p, k, e in zip(b["path"], b["key"], b["error"])}
    assert rows == {keyed[0]["path"]: (keyed[0]["key"], ""), keyed[1]["path"]: ("", "SourceChangedError"),
                    "gone#x.jpg": ("", "SourceChangedError")}


def test_killed_actor_is_restarted_and_rows_stay_exactly_once(tiny_onnx, tmp_path, ray_address, monkeypatch):
    from featurestore._ray_tasks import CRASH_ENV
    from featurestore.distributed import extract_distributed

    folder = tmp_path / "imgs"
    write_good_images(folder, n=40, seed=5)
    token = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"2:{token}")  # the first actor to reach its 2nd shard exits after writing it
    report = extract_distributed(tiny_onnx, folder, tmp_path / "s", OPTS, _ray_options())
    assert token.exists(), "no actor was killed"
    assert report.decoded == 40 and report.failures == []

    rows = _rows(tmp_path / "s")
    assert len(rows) == 40
    assert verify_store(tmp_path / "s") == [] and orphan_files(tmp_path / "s") == []
    assert main(["verify", str(tmp_path / "s")]) == 0
    reference = tmp_path / "reference"
    extract(tiny_onnx, folder, reference, OPTS)
    expected = _rows(reference)
    assert rows.keys() == expected.keys()
    assert all(np.array_equal(rows[row], expected[row]) for row in expected)


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_sigkilled_driver_resumes_with_only_missing_keys(kind, tiny_onnx, tmp_path, ray_address):
    from featurestore.distributed import extract_distributed

    total = 160
    folder = tmp_path / "imgs"
    files = write_good_images(folder, n=total, size=(96, 72), seed=3)
    source = folder
    if kind == "parquet":  # row groups read by the workers
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        source = tmp_path / "imgs.parquet"
        pq.write_table(pa.table({"image": [p.read_bytes() for p in files]}), source, row_group_size=16)
    store = tmp_path / "s"
    command = [sys.executable, "-m", "featurestore", "extract", str(tiny_onnx), str(source), "-o", str(store),
               "--engine", "ray", "--address", ray_address, "--workers", "2", "--cpus-per-worker", "0.5",
               "--device", "cpu", "--batch-size", "4", "--shard-rows", "4", "--no-progress"]
    log = tmp_path / "driver.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 90
        while _committed(store) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, f"the driver ended before it could be killed: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = _committed(store)
    assert 8 <= committed < total
    assert verify_store(store) == []

    report = extract_distributed(tiny_onnx, source, store, OPTS, _ray_options())
    assert report.skipped == committed
    assert report.decoded == total - committed
    assert sum(w["images"] for w in report.workers.values()) == total - committed  # no stored key was re-done
    rows = _rows(store)
    assert len(rows) == total and verify_store(store) == []


def test_worker_errors_reach_the_driver_as_the_local_engine_raises_them(tmp_path, ray_address):
    from export import export_backbone
    from featurestore import ArraySource, Preprocessing
    from featurestore.distributed import extract_distributed

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    tiny_std = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1e-6,), color_mode="L")
    export_backbone("pixels", tmp_path / "huge.onnx", preprocessing=tiny_std)
    f16 = ExtractConfig(dtype="float16", device="cpu", progress=False)
    with pytest.raises(StoreError, match="float16"):
        extract_distributed(tmp_path / "huge.onnx", ArraySource(images), tmp_path / "s", f16, _ray_options())
    assert len(open_store(tmp_path / "s")) == 0 and verify_store(tmp_path / "s") == []


def test_strict_stops_at_the_first_bad_input(tiny_onnx, tmp_path, ray_address, capsys):
    write_good_images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"<html>not an image</html>")
    code = main(["extract", str(tiny_onnx), str(tmp_path / "imgs"), "-o", str(tmp_path / "s"), "--engine", "ray",
                 "--workers", "1", "--cpus-per-worker", "0.5", "--strict", "--device", "cpu", "--no-progress"])
    assert code == 1 and "cannot decode image" in capsys.readouterr().err
    assert verify_store(tmp_path / "s") == []
    assert [Path(f["path"]).name for f in open_store(tmp_path / "s").failures] == ["broken.jpg"]


def _worker_shard(store: Path, name: str, keys: list[str], dims: dict[str, int]) -> dict:
    buffer = ShardBuffer()
    rng = np.random.default_rng(0)
    buffer.add_rows(keys, ["x"] * len(keys), [""] * len(keys), [0] * len(keys), [f"/src/{k[:6]}" for k in keys],
                    {out: rng.standard_normal((len(keys), dim)).astype(np.float32) for out, dim in dims.items()})
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    config = StoreConfig(**manifest["config"])
    attrs = {"featurestore_store_schema": STORE_SCHEMA_VERSION, "fingerprint": config.fingerprint,
             "model_sha256": config.model_sha256}
    entry = write_shard(store, name, buffer, dtype="float32", layers={o: (d,) for o, d in dims.items()}, attrs=attrs)
    return {"entry": entry, "keys": keys, "views": [0] * len(keys), "paths": buffer.paths, "labels": buffer.labels}


def test_shard_repeating_stored_rows_is_rewritten_not_committed(tiny_onnx, tmp_path):
    from featurestore._ray_commit import DistributedReport, ShardCommitter
    from featurestore.manifest import Manifest
    from featurestore.writer import StoreWriter

    write_good_images(tmp_path / "imgs", n=4)
    store = tmp_path / "s"
    extract(tiny_onnx, tmp_path / "imgs", store, OPTS)
    before = _rows(store)
    stored = sorted({key for key, _ in before})
    manifest = Manifest.load(store)
    dims = {layer.output: layer.dim for layer in manifest.spec.layers}
    fresh = ["a" * 64, "b" * 64]

    writer = StoreWriter(store, manifest.config, manifest.spec, shard_rows=4)
    shard = _worker_shard(store, "w-00000.h5", stored[:2] + fresh, dims)
    with pytest.raises(StoreError, match="already stored"):
        writer.commit_external(shard["entry"], shard["keys"], shard["views"], shard["paths"], shard["labels"])
    report = DistributedReport(store=str(store))
    ShardCommitter(writer, report).take({"worker": "w", "images": 4, "seconds": 0.1, "failures": [], "shard": shard,
                                              "error": None})
    clean = _worker_shard(store, "w-00001.h5", ["c" * 64], dims)
    ShardCommitter(writer, report).take({"worker": "w", "images": 1, "seconds": 0.1, "failures": [], "shard": clean,
                                              "error": None})
    writer.close()

    assert not (store / SHARD_DIR / "w-00000.h5").exists()
    assert (report.rewritten, report.dropped_rows, report.shards, report.decoded) == (1, 2, 1, 3)
    after = _rows(store)
    assert set(after) == set(before) | {(k, 0) for k in fresh + ["c" * 64]}
    assert all(np.array_equal(after[row], value) for row, value in before.items())
    assert verify_store(store) == [] and orphan_files(store) == []


def test_core_and_cli_never_import_ray():
    code = ("import sys, featurestore, featurestore.distributed, featurestore._ray_tasks\n"
            "from featurestore.cli import build_parser\n"
            "build_parser()\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ray_only_flags_are_refused_with_the_local_engine(tiny_onnx, tmp_path, capsys):
    write_good_images(tmp_path / "imgs", n=2)
    code = main(["extract", str(tiny_onnx), str(tmp_path / "imgs"), "-o", str(tmp_path / "s"), "--address", "auto",
                 "--no-progress"])
    assert code == 1 and "only --engine ray takes --address" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
