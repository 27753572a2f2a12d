"""A store whose file system refuses writes (disk full, read-only): one clear line, nothing committed lost, a rerun resumes.

The stand-ins are real file systems: a small tmpfs that fills up and one remounted read-only
(mounting needs root, as in CI; elsewhere these tests skip).
"""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurestore import ExtractConfig, StoreError, StoreWriteError, extract, open_store, verify_store
from images import write_good_images


def _remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def _extract_cli(model: Path, folder: Path, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore", "extract", str(model), str(folder), "-o", str(store),
                           "--device", "cpu", "--batch-size", "4", "--shard-rows", "8", "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def _rows(store: Path) -> dict[str, np.ndarray]:
    data = open_store(store).load()
    assert len(set(data.keys.tolist())) == len(data), "a key is stored twice"
    return dict(zip(data.keys.tolist(), data.matrix()))


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_disk_full_is_one_line_keeps_committed_rows_and_a_rerun_completes(tiny_onnx, tmp_path, tmpfs):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=200)
    reference = tmp_path / "reference"
    assert _extract_cli(tiny_onnx, folder, reference).returncode == 0
    expected = _rows(reference)

    disk = tmpfs("disk", "200k")  # room for a few dozen shards of this model's 88 floats per row
    store = disk / "store"
    line = _error_line(_extract_cli(tiny_onnx, folder, store))
    committed = len(open_store(store))
    assert 0 < committed < len(expected), "the disk must fill up mid-run"
    assert line == (f"featurestore extract: error: cannot write to store {store}: No space left on device; "
                    f"{committed} rows are committed and safe; free space and rerun the same command to resume")
    assert verify_store(store) == []
    assert not [p.name for p in (store / "shards").iterdir() if p.name.startswith(".")], "a temporary shard was left"
    for key, value in _rows(store).items():
        np.testing.assert_array_equal(value, expected[key])

    _remount(disk, "size=16m")  # space freed: the same command resumes
    done = _extract_cli(tiny_onnx, folder, store)
    assert done.returncode == 0, done.stderr
    assert f"{committed} already stored" in done.stdout
    final = _rows(store)
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value)
    assert verify_store(store) == []


def test_read_only_store_is_one_line_and_typed_and_a_rerun_completes(tiny_onnx, tmp_path, tmpfs):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=6)
    disk = tmpfs("disk", "16m")
    store = disk / "store"
    assert _extract_cli(tiny_onnx, folder, store).returncode == 0
    manifest = (store / "manifest.json").read_bytes()
    write_good_images(folder / "new", n=4, seed=100)
    for path in sorted((folder / "new").iterdir()):  # flat folder: the new images lie beside the old ones
        path.rename(folder / f"new_{path.name}")
    (folder / "new").rmdir()

    _remount(disk, "ro")
    line = _error_line(_extract_cli(tiny_onnx, folder, store))
    assert re.fullmatch(rf"featurestore extract: error: cannot write to store {re.escape(str(store))}: Read-only "
                        rf"file system; 6 rows are committed and safe; make {re.escape(str(store))} writable and "
                        r"rerun the same command to resume", line), line
    with pytest.raises(StoreWriteError) as caught:
        extract(tiny_onnx, folder, store, ExtractConfig(device="cpu", progress=False))
    assert isinstance(caught.value, OSError) and isinstance(caught.value, StoreError)
    assert caught.value.errno == errno.EROFS and caught.value.committed_rows == 6
    assert (store / "manifest.json").read_bytes() == manifest

    _remount(disk, "rw")
    done = _extract_cli(tiny_onnx, folder, store)
    assert done.returncode == 0, done.stderr
    assert len(open_store(store)) == 10 and verify_store(store) == []
