"""Stores and models received from elsewhere are untrusted: nothing outside them is ever read.

Every "outside" file here is a FIFO witness that records whether anything opened it. The CLI
runs in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore import FeatureModel, UnsafeModelError, UnsafeStoreError, open_store, verify_store, write_arrays
from featurestore._atomic import file_checksum
from featurestore.manifest import MANIFEST_NAME, Manifest
from featurestore.writer import StoreWriter


class FifoWitness:
    """A FIFO that records whether anything but itself ever opened it for reading.

    A thread holds the write end open (which blocks until a reader comes); a reader that is not
    the witness's own closing call sets :attr:`opened` and gets a page of zeros, so a regression
    fails the test instead of hanging it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            with open(self.path, "wb") as fh:
                if not self.closing:
                    self.opened.set()
                fh.write(bytes(4096))
        except BrokenPipeError:  # the reader went away first
            pass

    def close(self) -> None:
        self.closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.thread.join(10)
        os.close(fd)


@pytest.fixture
def outside(tmp_path) -> Iterator[Path]:
    """A file outside the store (a FIFO witness): the test fails if anything opened it."""
    path = tmp_path / "outside" / "secret.h5"
    path.parent.mkdir()
    witness = FifoWitness(path)
    yield path
    witness.close()
    assert not witness.opened.is_set(), f"{path}, outside the store, was opened"


@pytest.fixture
def store(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_arrays(tmp_path / "store", {"f": rng.normal(size=(12, 4)).astype(np.float32)},
                        labels=[f"c{i % 2}" for i in range(12)], shard_rows=6).path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore", *args], capture_output=True, text=True, timeout=120)


def _edit_manifest(store: Path, edit) -> None:
    data = json.loads((store / MANIFEST_NAME).read_text())
    edit(data)
    (store / MANIFEST_NAME).write_text(json.dumps(data))


def _rewrite_shard(store: Path, change) -> None:
    """Apply ``change(h5py.File)`` to the first shard and record its new checksum, as an attacker would."""
    data = json.loads((store / MANIFEST_NAME).read_text())
    file = store / data["shards"][0]["file"]
    with h5py.File(file, "r+") as f:
        change(f)
    data["shards"][0]["checksum"] = file_checksum(file)
    (store / MANIFEST_NAME).write_text(json.dumps(data))


def _refused_everywhere(store: Path, match: str) -> None:
    with pytest.raises(UnsafeStoreError, match=match):
        open_store(store).load()
    for command in ("info", "verify"):
        done = _cli(command, str(store))
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("entry", ["../outside/secret.h5", "shards/../../outside/secret.h5", "ABSOLUTE",
                                   "shards/link.h5"])
def test_shard_paths_must_stay_inside_the_store(store, outside, entry):
    if entry == "shards/link.h5":
        (store / "shards" / "link.h5").symlink_to(outside)
    entry = str(outside) if entry == "ABSOLUTE" else entry
    _edit_manifest(store, lambda data: data["shards"][0].update(file=entry))
    with pytest.raises(UnsafeStoreError, match="refusing"):
        open_store(store).load()
    done = _cli("verify", str(store))
    assert done.returncode == 1 and "refusing" in done.stderr + done.stdout


def test_external_storage_is_refused(store, outside):
    def external(f):
        del f["features/f"]
        f.create_dataset("features/f", shape=(6, 4), dtype=np.float32, external=[(str(outside), 0, 6 * 4 * 4)])
    _rewrite_shard(store, external)
    _refused_everywhere(store, "external storage")
    assert any("external storage" in problem for problem in verify_store(store))


def test_virtual_datasets_are_refused(store, outside):
    def virtual(f):
        layout = h5py.VirtualLayout(shape=(6, 4), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(outside), "features/f", shape=(6, 4))
        del f["features/f"]
        f["features"].create_virtual_dataset("f", layout)
    _rewrite_shard(store, virtual)
    _refused_everywhere(store, "virtual dataset")


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_are_refused(store, outside, kind):
    def link(f):
        del f["features/f"]
        f["features/f"] = h5py.ExternalLink(str(outside), "/x") if kind == "external" else h5py.SoftLink("/keys")
    _rewrite_shard(store, link)
    _refused_everywhere(store, "Link")


def test_chunked_and_filtered_layouts_are_refused(store):
    def gzip(f):
        values = f["features/f"][()]
        del f["features/f"]
        f.create_dataset("features/f", data=values, chunks=(1, 4), compression="gzip")
    _rewrite_shard(store, gzip)
    _refused_everywhere(store, "chunked or filtered")


def _with_external_data(model: Path, folder: Path) -> Path:
    """``model`` saved as ``folder/m.onnx`` with every tensor in ``folder/m.data``."""
    import onnx

    folder.mkdir()
    onnx.save_model(onnx.load(str(model)), str(folder / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    return folder / "m.onnx"


def _relocated(model: Path, name: str, location: str) -> Path:
    """A copy of ``model`` (beside it, called ``name``) whose tensors name ``location`` as their data."""
    import onnx

    edited = onnx.load(str(model), load_external_data=False)
    for tensor in edited.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(edited, str(model.parent / name))
    return model.parent / name


def test_onnx_external_data_outside_its_folder_is_refused(tiny_onnx, tmp_path, outside):
    folder = tmp_path / "model"
    model = _with_external_data(tiny_onnx, folder)
    FeatureModel(model, device="cpu")  # external data inside its folder is fine
    _relocated(model, "evil.onnx", "../outside/secret.h5")
    with pytest.raises(UnsafeModelError, match="outside its folder"):
        FeatureModel(folder / "evil.onnx", device="cpu")
    done = _cli("extract", str(folder / "evil.onnx"), "fashion-mnist:test", "-o", str(tmp_path / "s"))
    assert done.returncode == 1 and "outside its folder" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


def test_a_shards_folder_that_is_a_link_is_refused_and_nothing_outside_is_deleted(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (store / "shards").rename(elsewhere)
    (store / "shards").symlink_to(elsewhere)
    keep = elsewhere / "someone_elses_file.h5"
    keep.write_bytes(b"not ours")
    with pytest.raises(UnsafeStoreError, match="is a link or not a folder"):
        open_store(store).load()
    manifest = Manifest.load(store)
    with pytest.raises(UnsafeStoreError, match="is a link or not a folder"):  # a writer would delete orphans there
        StoreWriter(store, manifest.config, manifest.spec)
    done = _cli("verify", str(store))
    assert done.returncode == 1 and "is a link or not a folder" in done.stdout + done.stderr
    assert keep.read_bytes() == b"not ours", "a file outside the store was deleted"


def test_a_hard_link_cycle_in_a_shard_is_refused_not_a_crash(store):
    def cycle(f):
        f["features"]["loop"] = f["features"]  # a hard link from a group to itself
    _rewrite_shard(store, cycle)
    _refused_everywhere(store, "not a dataset where this writer puts one")


def test_onnx_external_data_through_links_or_non_files_is_refused(tiny_onnx, tmp_path):
    folder = tmp_path / "model"
    model = _with_external_data(tiny_onnx, folder)
    (tmp_path / "link.onnx").symlink_to(model)  # onnxruntime would look for m.data next to the link
    with pytest.raises(UnsafeModelError, match="is a link"):
        FeatureModel(tmp_path / "link.onnx", device="cpu")
    with pytest.raises(UnsafeModelError, match="not in a regular file"):
        FeatureModel(_relocated(model, "dot.onnx", "."), device="cpu")
