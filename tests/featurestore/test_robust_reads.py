"""Reads that must end and stay inside what they were given: image sources read regular files of
bounded size only; a store's own files are opened without following links, its manifest is
validated before anything is allocated, and a whole-shard load checks the shard's checksum.

The CLI runs in a subprocess (``python -m featurestore``) with a timeout, so a regression that
hangs fails instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurestore import ExtractConfig, StoreDamagedError, UnsafeStoreError, extract, open_store, verify_store
from featurestore.errors import FileTooLargeError, NotAFileError, OptionsError
from featurestore.manifest import MANIFEST_NAME
from featurestore.sources import MAX_FILE_BYTES, SourceItem
from images import write_good_images

OPTS = ExtractConfig(batch_size=4, shard_rows=3, device="cpu", progress=False)


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore", *args], capture_output=True, text=True,
                          timeout=timeout)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that failed with exit status 1."""
    assert done.returncode == 1, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# --- sources read regular files of bounded size -----------------------------------------------
def test_devices_fifos_sockets_folders_and_oversized_files_are_failures_never_read(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    good = write_good_images(folder, n=4)
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block until a writer comes
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.png"))
    (tmp_path / "dir.png").mkdir()
    big = tmp_path / "big.png"
    big.write_bytes(good[0].read_bytes() + bytes(4096))  # a real image, only larger
    table = tmp_path / "list.csv"
    listed = ["/dev/zero", str(tmp_path / "pipe.png"), str(tmp_path / "sock.png"), str(tmp_path / "dir.png"),
              str(big)] + [str(p) for p in good]
    table.write_text("path\n" + "\n".join(listed) + "\n")
    limit = max(p.stat().st_size for p in good)
    store = tmp_path / "store"
    try:
        done = _cli("extract", str(tiny_onnx), str(table), "-o", str(store), "--device", "cpu", "--no-progress",
                    "--max-file-bytes", str(limit), timeout=300)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    failures = {f["path"]: (f["error"], f["message"]) for f in open_store(store).failures}
    assert {path: error for path, (error, _) in failures.items()} == {
        "/dev/zero": "NotAFileError", str(tmp_path / "pipe.png"): "NotAFileError",
        str(tmp_path / "sock.png"): "NotAFileError", str(tmp_path / "dir.png"): "NotAFileError",
        str(big): "FileTooLargeError"}
    assert failures["/dev/zero"][1] == "'/dev/zero' is a device, not a regular file; only regular files are read"
    assert "is a FIFO" in failures[str(tmp_path / "pipe.png")][1]
    assert failures[str(big)][1] == (f"{str(big)!r} holds {big.stat().st_size} bytes, over the limit of {limit} "
                                     "bytes; raise --max-file-bytes to read it")
    assert len(open_store(store)) == len(good) and verify_store(store) == []
    again = extract(tiny_onnx, table, store, ExtractConfig(device="cpu", progress=False, max_file_bytes=limit))
    assert again.decoded == 0 and again.rows_added == 0 and len(open_store(store).failures) == 5


def test_the_file_size_bound_is_one_option_for_flag_and_toml(tmp_path):
    from featurestore._config import table_keys
    from featurestore.extract import ExtractConfig as Options

    assert table_keys(Options)["max_file_bytes"] == "max_file_bytes"
    assert Options().max_file_bytes == MAX_FILE_BYTES == 256 * 1024 * 1024
    for bad in (0, -1, True, 1.5):
        with pytest.raises(OptionsError, match="max_file_bytes must be an integer >= 1"):
            Options(max_file_bytes=bad)
    done = _cli("extract", "--help")
    assert "--max-file-bytes" in done.stdout


def test_a_file_is_read_at_most_once_past_its_bound(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    assert SourceItem(str(path)).read(100) == b"x" * 100
    with pytest.raises(FileTooLargeError):
        SourceItem(str(path)).read(99)
    with pytest.raises(NotAFileError, match="is a device"):
        SourceItem("/dev/zero").read(None)
    link = tmp_path / "link.png"
    link.symlink_to(path)  # sources follow links to regular files
    assert SourceItem(str(link)).read() == b"x" * 100


# --- file names that are not UTF-8 ------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_stored_losslessly_and_a_rerun_adds_nothing(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    good = write_good_images(folder / "cat", n=3)
    odd = os.path.join(os.fsencode(folder / "cat"), b"bad\xffname.png")
    os.rename(good[0], odd)
    (folder / "cat" / "broken.png").write_bytes(b"not an image")
    os.rename(folder / "cat" / "broken.png", os.path.join(os.fsencode(folder / "cat"), b"broken\xfe.png"))
    store = tmp_path / "store"
    # a strict UTF-8 terminal: the CLI still prints such a name (as its bytes)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    args = [sys.executable, "-m", "featurestore", "extract", str(tiny_onnx), str(folder), "-o", str(store),
            "--device", "cpu", "--no-progress", "--shard-rows", "2"]
    first = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    assert b"broken\xfe.png" in first.stdout
    opened = open_store(store)
    assert sorted(os.fsencode(p) for p in opened.paths.tolist()) == sorted(
        [odd] + [os.fsencode(p) for p in good[1:]])
    assert [os.fsencode(f["path"]) for f in opened.failures] == [os.path.join(os.fsencode(folder / "cat"),
                                                                             b"broken\xfe.png")]
    again = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert again.returncode == 0 and b"4 already stored or known bad" in again.stdout, again.stderr
    assert b" 0 rows added, 0 failed" in again.stdout
    assert len(open_store(store)) == 3 and len(open_store(store).failures) == 1
    assert verify_store(store) == []
    done = subprocess.run([sys.executable, "-m", "featurestore", "info", str(store)], capture_output=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and b"broken\xfe.png" in done.stdout, done.stderr


# --- a store's own files are never opened through a link ---------------------------------------
def _small_store(tmp_path: Path) -> Path:
    from featurestore import write_arrays

    rng = np.random.default_rng(0)
    return write_arrays(tmp_path / "store", {"f": rng.normal(size=(12, 4)).astype(np.float32)},
                        labels=[f"c{i % 2}" for i in range(12)], shard_rows=6).path


def test_a_lock_file_that_is_a_link_is_refused_and_nothing_outside_is_created(tmp_path):
    from featurestore.manifest import Manifest
    from featurestore.writer import StoreWriter

    store = _small_store(tmp_path)
    outside = tmp_path / "outside.lock"
    (store / ".lock").unlink()
    (store / ".lock").symlink_to(outside)
    manifest = (store / MANIFEST_NAME).read_bytes()
    with pytest.raises(UnsafeStoreError, match=r"lock file .*\.lock is a symbolic link; refusing the store"):
        committed = Manifest.load(store)
        StoreWriter(store, committed.config, committed.spec)
    assert not outside.exists() and (store / MANIFEST_NAME).read_bytes() == manifest


def test_extract_into_a_store_whose_lock_is_a_link_is_one_line_and_keeps_the_store(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=3)
    store = tmp_path / "store"
    extract(tiny_onnx, folder, store, OPTS)

    def committed() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != ".lock"}

    before = committed()
    for path in write_good_images(tmp_path / "more", n=2, seed=7):
        path.rename(folder / f"more_{path.name}")
    outside = tmp_path / "elsewhere" / "lock"
    outside.parent.mkdir()
    (store / ".lock").unlink()
    (store / ".lock").symlink_to(outside)
    line = _error_line(_cli("extract", str(tiny_onnx), str(folder), "-o", str(store), "--device", "cpu",
                            "--no-progress"))
    assert line == (f"featurestore extract: error: lock file {store / '.lock'} is a symbolic link; refusing the store "
                    "(it must never make us read or lock anything outside it)")
    assert not outside.exists()
    assert committed() == before, "nothing committed changes"
    assert len(open_store(store).load()) == 3 and verify_store(store) == []


def test_a_manifest_that_is_a_link_is_refused_by_reader_writer_and_cli(tmp_path):
    store = _small_store(tmp_path)
    outside = tmp_path / "outside.json"
    (store / MANIFEST_NAME).rename(outside)
    (store / MANIFEST_NAME).symlink_to(outside)
    message = f"manifest {store / MANIFEST_NAME} is a symbolic link, not a regular file; refusing the store"
    with pytest.raises(UnsafeStoreError, match=message):
        open_store(store)
    for command in ("info", "verify"):
        line = _error_line(_cli(command, str(store)))
        assert line.startswith(f"featurestore {command}: error: {message}"), line


def test_a_journal_that_is_a_link_or_a_fifo_is_refused_without_reading_it(tmp_path):
    from featurestore.journal import JOURNAL_NAME

    store = _small_store(tmp_path)
    outside = tmp_path / "outside.log"
    (store / JOURNAL_NAME).rename(outside)
    (store / JOURNAL_NAME).symlink_to(outside)
    message = f"journal {store / JOURNAL_NAME} is a symbolic link, not a regular file; refusing the store"
    with pytest.raises(UnsafeStoreError, match=message):
        open_store(store)
    line = _error_line(_cli("info", str(store)))
    assert line.startswith(f"featurestore info: error: {message}"), line
    (store / JOURNAL_NAME).unlink()
    os.mkfifo(store / JOURNAL_NAME)  # opening it to read would wait for a writer forever
    with pytest.raises(UnsafeStoreError, match="is a FIFO, not a regular file"):
        open_store(store)


def test_a_row_index_or_shard_swapped_for_a_link_is_refused(tmp_path):
    store = _small_store(tmp_path)
    entry = json.loads((store / MANIFEST_NAME).read_text())
    for file in (entry["index"]["file"], entry["shards"][0]["file"]):
        target = store / file
        copy = tmp_path / f"copy-{target.name}"
        target.rename(copy)
        target.symlink_to(copy)
        with pytest.raises(UnsafeStoreError):
            open_store(store).load()
        target.unlink()
        copy.rename(target)
    assert len(open_store(store).load()) == 12


# --- a manifest of the wrong structure is one typed error, before anything is allocated --------
def _edit_manifest(store: Path, edit) -> None:
    data = json.loads((store / MANIFEST_NAME).read_text())
    edit(data)
    (store / MANIFEST_NAME).write_text(json.dumps(data))


MALFORMED = {
    "shards null": (lambda d: d.update(shards=None), "shards is None, expected a list"),
    "failures [1]": (lambda d: d.update(failures=[1]), "failures[0] is 1, expected {path, key, error, message}"),
    "rows four": (lambda d: d["shards"][0].update(rows="four"), "shards[0].rows is 'four', expected an integer >= 0"),
    "classes 3": (lambda d: d.update(classes=3), "classes is 3, expected a list of strings"),
    "layout width text": (lambda d: d["shards"][1]["layout"].update(f=[4096, ["4"]]),
                          "shards[1].layout['f'] is [4096, ['4']], expected [offset, row shape]"),
    "stats missing": (lambda d: d["shards"][0]["stats"].update(f={"count": 1}), "shards[0].stats['f'] is"),
    "config views": (lambda d: d["config"].update(views="2"), "config or model_spec does not build"),
    "model_spec": (lambda d: d.update(model_spec=[]), "config or model_spec does not build"),
    "index rows": (lambda d: d["index"].update(rows=None), "index is"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_manifest_of_the_wrong_structure_is_one_damaged_store_line(tmp_path, case):
    store = _small_store(tmp_path)
    edit, detail = MALFORMED[case]
    _edit_manifest(store, edit)
    with pytest.raises(StoreDamagedError) as caught:
        open_store(store)
    message = str(caught.value)
    assert message.startswith(f"{store / MANIFEST_NAME}: {detail}") and "\n" not in message, message
    assert message.endswith("the store is damaged (restore the file, or extract again into a new store)")
    for command in ("info", "verify"):
        assert _error_line(_cli(command, str(store))) == f"featurestore {command}: error: {message}"


def test_a_malformed_journal_record_is_one_damaged_store_line(tmp_path):
    from featurestore.journal import JOURNAL_NAME, encode_record, read_journal

    store = _small_store(tmp_path)
    base = read_journal(store).base
    with open(store / JOURNAL_NAME, "ab") as fh:
        fh.write(encode_record({"seq": base + 1, "failures": [{"path": 3}]}))
    message = (f"{store / JOURNAL_NAME}: line 2 (record {base + 1}) is not a valid commit: its failures are "
               f"malformed; the store is damaged, nothing was changed: run `featurestore repair {store}` to "
               "rebuild it from its shard files")
    with pytest.raises(StoreDamagedError) as caught:
        open_store(store)
    assert str(caught.value) == message
    assert _error_line(_cli("info", str(store))) == f"featurestore info: error: {message}"


def test_a_recorded_row_width_is_checked_against_the_shard_before_allocating(tmp_path):
    import tracemalloc

    store = _small_store(tmp_path)
    _edit_manifest(store, lambda d: [s["layout"]["f"][1].__setitem__(0, 10**9) for s in d["shards"]])
    opened = open_store(store)
    tracemalloc.start()
    try:
        with pytest.raises(StoreDamagedError, match=r"shard .*shards/.*\.h5: /features/f lies at offset \d+ with "
                                                    r"shape \(6, 4\), the manifest says \d+ and \(6, 1000000000\)"):
            opened.load()
        assert tracemalloc.get_traced_memory()[1] < 50 * 2**20, "the result was allocated before the check"
    finally:
        tracemalloc.stop()
    assert _error_line(_cli("info", str(store))).startswith("featurestore info: error: shard ")


# --- a whole-shard load checks the shard's checksum ---------------------------------------------
def _flip_a_feature_bit(store: Path, shard: int = 0) -> Path:
    entry = json.loads((store / MANIFEST_NAME).read_text())["shards"][shard]
    file = store / entry["file"]
    data = bytearray(file.read_bytes())
    data[entry["layout"]["f"][0] + 3] ^= 0x40  # the exponent of the first value: ~1e38 instead of ~1
    file.write_bytes(bytes(data))
    return file


def test_a_flipped_bit_in_a_shard_fails_a_whole_shard_load_naming_the_shard(tmp_path):
    store = _small_store(tmp_path)
    clean = open_store(store).load().X["f"].copy()
    file = _flip_a_feature_bit(store)
    message = (f"shard {file} differs from its checksum in the manifest (its bytes changed since it was written); "
               "the store is damaged: run `featurestore verify`")
    with pytest.raises(StoreDamagedError) as caught:
        open_store(store).load()
    assert str(caught.value) == message
    with pytest.raises(StoreDamagedError, match="differs from its checksum"):
        open_store(store).load(rows=np.arange(6))  # exactly the damaged shard, read whole
    # the other shard is intact and reads whole; reads of part of a shard are not checked
    np.testing.assert_array_equal(open_store(store).load(rows=np.arange(6, 12)).X["f"], clean[6:])
    partial = open_store(store).load(rows=np.array([1, 2, 7])).X["f"]
    np.testing.assert_array_equal(partial, clean[[1, 2, 7]])
    unchecked = open_store(store).load(check=False).X["f"]
    assert abs(unchecked[0, 0]) > 1e30 and np.array_equal(unchecked[1:], clean[1:])
    done = _cli("verify", str(store))
    assert done.returncode == 1 and "checksum differs" in done.stdout + done.stderr
    line = _error_line(_cli("fit", str(store), "--head", "logreg", "-o", str(tmp_path / "head.skops")))
    assert line == f"featurestore fit: error: {message}" and not (tmp_path / "head.skops").exists()
