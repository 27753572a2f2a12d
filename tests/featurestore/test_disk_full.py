"""A disk that fills up at any point of a run: one line, exit status 1, never a crash, and a resume.

HDF5 builds every shard and row index in memory; only plain ``os.write`` calls touch the disk,
so a full disk is an ordinary ``OSError`` whatever file it hits (shard, journal, row index,
manifest). The disks are real small tmpfs mounts (mounting needs root, as in CI; elsewhere
these tests skip).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore import open_store, verify_store
from featurestore.shard_buffer import ShardBuffer
from featurestore.shard_read import read_columns
from featurestore.shard_write import write_shard
from images import write_good_images


def _extract_cli(model: Path, folder: Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore", "extract", str(model), str(folder), "-o", str(store),
                           "--device", "cpu", "--batch-size", "8", "--shard-rows", "8", "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def _rows(store: Path) -> dict[str, np.ndarray]:
    data = open_store(store).load()
    assert len(set(data.keys.tolist())) == len(data), "a key is stored twice"
    return dict(zip(data.keys.tolist(), data.matrix()))


@pytest.fixture(scope="module")
def reference(tiny_onnx, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("full") / "imgs"
    write_good_images(folder, n=240)  # about 600 KiB of store: more than the largest disk below
    store = folder.parent / "reference"
    assert _extract_cli(tiny_onnx, folder, store).returncode == 0
    return folder, _rows(store)


@pytest.mark.parametrize("size", ["120k", "160k", "200k", "280k", "400k", "520k"])
def test_a_full_disk_at_any_size_is_one_line_and_a_resume_completes(tiny_onnx, reference, tmp_path, tmpfs, size):
    folder, expected = reference
    disk = tmpfs("disk", size)
    store = disk / "store"
    done = _extract_cli(tiny_onnx, folder, store)
    assert done.returncode == 1, f"exit status {done.returncode} (139 is a crash): {done.stderr[-3000:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    committed = len(open_store(store)) if (store / "manifest.json").exists() else 0
    assert lines[0] == (f"featurestore extract: error: cannot write to store {store}: No space left on device; "
                        f"{committed} rows are committed and safe; free space and rerun the same command to resume")
    if committed:
        assert verify_store(store) == []
        for key, value in _rows(store).items():
            np.testing.assert_array_equal(value, expected[key])
    assert not [p.name for p in store.rglob(".*") if p.name != ".lock"], "a temporary file was left"

    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed: the same command resumes
    done = _extract_cli(tiny_onnx, folder, store)
    assert done.returncode == 0, done.stderr
    final = _rows(store)
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value)
    assert verify_store(store) == []


def test_a_shard_built_in_memory_reads_like_a_file_written_by_hdf5(tmp_path):
    """The bytes written are a complete HDF5 file at the offsets the entry records."""
    buffer = ShardBuffer()
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 300)).astype(np.float32)  # over 4 KiB: page-aligned
    buffer.add_rows([f"{i:064x}" for i in range(5)], ["a", "b", "", "a", "b"], [""] * 5, [0] * 5,
                    [f"/x/{i}.png" for i in range(5)], {"f": values})
    entry = write_shard(tmp_path, "s.h5", buffer, dtype="float32", layers={"f": (300,)}, attrs={"k": 1})
    file = tmp_path / "shards" / "s.h5"
    with h5py.File(file, "r") as f:
        np.testing.assert_array_equal(f["features/f"][()], values)
        assert f["features/f"].id.get_offset() == entry.layout["f"][0] and f.attrs["k"] == 1
    offset = entry.layout["f"][0]
    assert offset % 4096 == 0
    np.testing.assert_array_equal(np.frombuffer(file.read_bytes(), np.float32, 1500, offset).reshape(5, 300), values)
    columns, _ = read_columns(file)
    assert columns.paths.tolist() == [f"/x/{i}.png" for i in range(5)]
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["s.h5"]
