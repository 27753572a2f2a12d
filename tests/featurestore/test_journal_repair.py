"""A damaged or lost journal or row index never loses a committed row: damage is refused everywhere
(nothing deleted), uncommitted shard files are moved aside, and `featurestore repair` rebuilds the
store bit-equal from its shard files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore import ExtractConfig, StoreError, extract, open_store, verify_store
from featurestore.errors import StoreDamagedError, StoreLockedError
from featurestore.journal import JOURNAL_NAME, append_record, read_journal
from featurestore.manifest import MANIFEST_NAME, Manifest
from featurestore.repair import repair_store
from featurestore.shard_write import CONTENT_CHECKSUM_ATTR
from featurestore.writer import StoreWriter
from images import write_good_images

OPTS = ExtractConfig(batch_size=4, shard_rows=2, device="cpu", progress=False)
COLUMNS = ("keys", "labels", "splits", "views", "paths")


def _images(folder: Path, seed: int) -> Path:
    write_good_images(folder / "train" / "a", n=3, size=(40, 32), seed=seed)
    write_good_images(folder / "train" / "b", n=3, size=(40, 32), seed=seed + 10)
    write_good_images(folder / "test" / "a", n=2, size=(40, 32), seed=seed + 20)
    return folder


@pytest.fixture(scope="module")
def built(tiny_onnx, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(store, second image folder, a pristine copy): 8 rows checkpointed with a row index by a
    finished extract, then 8 more committed through the journal by an extract killed before its
    checkpoint (its close never ran), so the journal holds 4 records of 2 rows."""
    root = tmp_path_factory.mktemp("journal")
    store = root / "store"
    extract(tiny_onnx, _images(root / "one", 0), store, OPTS)
    second = _images(root / "two", 100)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreWriter, "close", lambda self, run=None: self._release_lock())  # killed before closing
        extract(tiny_onnx, second, store, OPTS)
    assert len(read_journal(store).records) == 4 and Manifest.load(store).data["journal_seq"] > 0
    assert Manifest.load(store).rows == 16 and verify_store(store) == []
    pristine = root / "pristine"
    shutil.copytree(store, pristine)
    return store, second, pristine


@pytest.fixture
def store(built, tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(built[2], copy)
    return copy


@pytest.fixture(scope="module")
def reference(built) -> dict:
    return _everything(built[2])


def _everything(store: Path) -> dict:
    data = open_store(store).load(view=None)
    return {"X": data.X, **{name: getattr(data, name).tolist() for name in COLUMNS},
            "classes": data.classes}


def _assert_same_rows(store: Path, reference: dict) -> None:
    got = _everything(store)
    for name in COLUMNS:
        assert got[name] == reference[name], name
    assert got["classes"] == reference["classes"]
    assert got["X"].keys() == reference["X"].keys()
    for layer, values in reference["X"].items():
        np.testing.assert_array_equal(got["X"][layer], values)  # bit-equal
    assert verify_store(store) == []


def _shard_files(store: Path) -> dict[str, bytes]:
    """Every shard file of the store, wherever it lies (shards/ or orphans/), by name -> bytes."""
    return {p.name: p.read_bytes() for folder in ("shards", "orphans") if (store / folder).is_dir()
            for p in (store / folder).iterdir()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore", *args], capture_output=True, text=True, timeout=300)


def _lines(store: Path) -> list[bytes]:
    return (store / JOURNAL_NAME).read_bytes().split(b"\n")


def _write_lines(store: Path, lines: list[bytes]) -> None:
    (store / JOURNAL_NAME).write_bytes(b"\n".join(lines))


def _line(record: dict) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return b"%08x %s" % (zlib.crc32(body), body)


def _record(line: bytes) -> dict:
    return json.loads(line[9:])


def _flip_middle_record(store: Path) -> None:
    lines = _lines(store)
    line = bytearray(lines[2])  # the second of four records: two more follow it
    line[len(line) // 2] ^= 0x01
    lines[2] = bytes(line)
    _write_lines(store, lines)


def _repeat_a_record(store: Path) -> None:
    lines = _lines(store)
    _write_lines(store, lines[:3] + [lines[2]] + lines[3:])


def _edit_record(store: Path, change) -> None:
    lines = _lines(store)
    record = _record(lines[2])
    change(record)
    lines[2] = _line(record)
    _write_lines(store, lines)


def _header(store: Path, header: dict) -> None:
    lines = _lines(store)
    lines[0] = json.dumps(header).encode()
    _write_lines(store, lines)


def _seq(store: Path) -> int:
    return json.loads((store / MANIFEST_NAME).read_text())["journal_seq"]


DAMAGE = {
    "flipped byte in a middle record": _flip_middle_record,
    "repeated record": _repeat_a_record,
    "rows 1e12": lambda s: _edit_record(s, lambda r: r["shard"].update(rows=1e12)),
    "rows 10**12": lambda s: _edit_record(s, lambda r: r["shard"].update(rows=10**12)),
    "rows -1": lambda s: _edit_record(s, lambda r: r["shard"].update(rows=-1)),
    "same shard twice": lambda s: _edit_record(
        s, lambda r: r["shard"].update(file=_record(_lines(s)[1])["shard"]["file"])),
    "header base -5": lambda s: _header(s, {"base": -5}),
    "header base beyond the checkpoint": lambda s: _header(s, {"base": _seq(s) + 7}),
    "journal deleted": lambda s: (s / JOURNAL_NAME).unlink(),
    "not a header": lambda s: _header(s, ["base", 3]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_journal_damage_is_refused_everywhere_deletes_nothing_and_repair_restores_every_row(
        damage, store, built, reference, tiny_onnx):
    DAMAGE[damage](store)
    files = _shard_files(store)
    assert len(files) == 8
    with pytest.raises(StoreDamagedError):
        open_store(store).load()
    with pytest.raises(StoreDamagedError):
        StoreWriter(store, Manifest.load(built[2]).config, Manifest.load(built[2]).spec)
    if damage == "rows 10**12":  # a well-formed record: the shard file's own row count disagrees
        assert any("has 2 rows, manifest says 1000000000000" in p for p in verify_store(store))
    else:
        with pytest.raises(StoreDamagedError):
            verify_store(store)
    for command in (["info", str(store)], ["verify", str(store)],
                    ["extract", str(tiny_onnx), str(built[1]), "-o", str(store), "--device", "cpu", "--no-progress",
                     "--shard-rows", "2"]):
        done = _cli(*command)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        if command[0] != "verify" or damage != "rows 10**12":  # verify lists each problem on its own line
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "damaged" in done.stderr or "missing" in done.stderr, done.stderr
    assert _shard_files(store) == files  # nothing deleted, moved or changed

    done = _cli("repair", str(store))
    assert done.returncode == 0, done.stderr
    _assert_same_rows(store, reference)
    assert not read_journal(store).records and _shard_files(store) == files


def test_a_middle_record_flipped_is_named_in_one_line_and_repair_recommits_its_shard(store):
    flipped = _record(_lines(store)[2])["shard"]["file"]
    _flip_middle_record(store)
    with pytest.raises(StoreDamagedError, match=r"line 3 .* does not match its checksum and \d+ bytes of later"):
        read_journal(store)
    report = repair_store(store)
    assert report.recommitted == [flipped] and report.rows == 16 and report.before_rows is None


@pytest.mark.parametrize("removed", [["index"], [JOURNAL_NAME], ["index", JOURNAL_NAME]])
def test_repair_rebuilds_a_deleted_row_index_or_journal_bit_equal(removed, store, reference):
    for name in removed:
        path = store / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(StoreDamagedError, match="repair"):
        open_store(store)
    done = _cli("info", str(store))
    assert done.returncode == 1 and "kept being replaced" not in done.stderr and "repair" in done.stderr
    report = repair_store(store)
    assert report.rows == 16 and report.shards == 8 and not report.set_aside
    _assert_same_rows(store, reference)
    assert json.loads((store / MANIFEST_NAME).read_text())["index"]["shards"] == 8


def test_a_deleted_journal_of_a_never_checkpointed_store_loses_nothing(tmp_path):
    """Every commit only in the journal (checkpoint 0): without the journal, the shard files are the
    only record; the store is refused until repair commits them again."""
    store = tmp_path / "s"
    config, spec = _arrays_config(tmp_path)
    writer = StoreWriter(store, config, spec, shard_rows=3)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(9, 4)).astype(np.float32)
    keys = [f"{i:064x}" for i in range(9)]
    writer.add_rows(keys, [0] * 9, [f"c{i % 2}" for i in range(9)], ["train"] * 9, [f"p{i}" for i in range(9)],
                    {"f": values})
    writer._release_lock()  # killed: three shards committed through the journal, no checkpoint
    reference = _everything(store)
    (store / JOURNAL_NAME).unlink()
    with pytest.raises(StoreDamagedError, match="3 shard file"):
        open_store(store)
    with pytest.raises(StoreDamagedError):
        StoreWriter(store, config, spec)
    assert len(list((store / "shards").iterdir())) == 3
    report = repair_store(store)
    assert report.rows == 9 and len(report.recommitted) == 3
    _assert_same_rows(store, reference)


def _arrays_config(tmp_path: Path):
    from featurestore import write_arrays

    made = write_arrays(tmp_path / "template", {"f": np.zeros((1, 4), np.float32)})
    return made.manifest.config, made.spec


def test_an_uncommitted_shard_is_moved_aside_never_deleted_and_repair_recommits_it(store, built, reference, tiny_onnx):
    lines = _lines(store)
    last = _record(lines[-2])["shard"]["file"]
    _write_lines(store, lines[:-2] + [b""])  # the last commit never reached the journal (a kill)
    assert Manifest.load(store).rows == 14
    before = _shard_files(store)

    report = repair_store(store)  # straight away: the shard file is committed again
    assert report.recommitted == [last] and report.rows == 16
    _assert_same_rows(store, reference)
    assert _shard_files(store) == before


def test_a_rerun_moves_an_uncommitted_shard_to_orphans_and_reports_it(store, built, reference, tiny_onnx):
    lines = _lines(store)
    last = Path(_record(lines[-2])["shard"]["file"]).name
    _write_lines(store, lines[:-2] + [b""])
    done = _cli("extract", str(tiny_onnx), str(built[1]), "-o", str(store), "--device", "cpu", "--no-progress",
                "--shard-rows", "2")
    assert done.returncode == 0, done.stderr
    assert (store / "orphans" / last).is_file() and not (store / "shards" / last).exists()
    assert len(open_store(store)) == 16
    info = _cli("info", str(store), "--json")
    assert json.loads(info.stdout)["orphans"] == [f"orphans/{last}"]
    verified = _cli("verify", str(store))
    assert verified.returncode == 0 and f"orphans/{last}" in verified.stdout and "repair" in verified.stdout
    report = repair_store(store)  # the orphan's rows were extracted again: it stays aside
    assert report.rows == 16 and [name for name, _ in report.set_aside] == [f"orphans/{last}"]
    assert (store / "orphans" / last).is_file()
    data = _everything(store)
    assert sorted(zip(data["keys"], data["views"])) == sorted(zip(reference["keys"], reference["views"]))


def test_a_garbled_last_line_is_a_torn_tail_and_its_shard_goes_to_orphans(store, built, tiny_onnx):
    lines = _lines(store)
    last = Path(_record(lines[-2])["shard"]["file"]).name
    garbled = bytearray(lines[-2])
    garbled[20] ^= 0x01
    _write_lines(store, lines[:-2] + [bytes(garbled), b""])
    state = read_journal(store)
    assert state.torn and len(state.records) == 3
    done = _cli("verify", str(store))
    assert done.returncode == 0 and "torn" in done.stdout
    config = Manifest.load(store).config
    StoreWriter(store, config, Manifest.load(store).spec).close()
    assert (store / "orphans" / last).is_file()  # moved, not deleted


def test_repair_sets_damaged_and_foreign_files_aside_and_commits_shards_without_a_self_checksum(
        store, reference, tmp_path):
    shards = sorted((store / "shards").iterdir())
    for path in shards:  # as written before shards carried a checksum of their own
        with h5py.File(path, "r+") as f:
            del f.attrs[CONTENT_CHECKSUM_ATTR]
    (store / "orphans").mkdir()
    damaged = store / "orphans" / "damaged.h5"
    shutil.copy(_any_shard(store, reference), damaged)  # a copy whose contents were then damaged
    with h5py.File(damaged, "r+") as f:
        f["features"][next(iter(f["features"]))][0] += 1.0
    (store / "orphans" / "junk.h5").write_bytes(b"not a shard")
    shutil.rmtree(store / "index")
    (store / JOURNAL_NAME).unlink()

    report = repair_store(store)
    assert report.rows == 16 and len(report.unchecked) == 8
    assert "committed unchecked" in report.summary()
    aside = dict(report.set_aside)
    assert "its rows are already committed" in aside["orphans/damaged.h5"]
    assert "does not read" in aside["orphans/junk.h5"]
    _assert_same_rows(store, reference)

    with h5py.File(damaged, "r+") as f:  # with its own checksum, a damaged shard is refused as such
        f.attrs[CONTENT_CHECKSUM_ATTR] = "xxh3_128:0"
    assert "own checksum" in dict(repair_store(store).set_aside)["orphans/damaged.h5"]
    assert damaged.is_file()


def _any_shard(store: Path, reference: dict) -> Path:
    return sorted((store / "shards").iterdir())[0]


def test_repair_takes_the_store_lock(store):
    manifest = Manifest.load(store)
    writer = StoreWriter(store, manifest.config, manifest.spec)
    try:
        with pytest.raises(StoreLockedError):
            repair_store(store)
    finally:
        writer.close()


def test_repair_reads_a_store_written_by_an_earlier_version(tmp_path):
    copy = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "data" / "store_v1", copy)
    before = _everything(copy)
    report = repair_store(copy)
    assert report.rows == len(before["keys"]) and report.unchecked
    _assert_same_rows(copy, before)


def test_journal_header_versions(store):
    assert read_journal(store).version == 1
    _header(store, {"base": _seq(store)})  # written before headers recorded a version: still opens
    assert len(open_store(store)) == 16
    _header(store, {"base": _seq(store), "version": 3})
    with pytest.raises(StoreError, match="journal format version 3; this featurestore reads version 1"):
        open_store(store)
    _write_lines(store, [json.dumps({"base": _seq(store) + 1, "version": 1}).encode(), b""])
    with pytest.raises(StoreDamagedError, match="does not belong to this checkpoint"):
        open_store(store)


def test_a_malformed_record_is_never_written(store):
    with pytest.raises(StoreError, match="malformed record"):
        append_record(store, {"seq": 99, "shard": {"file": "shards/x.h5", "rows": 1e12, "checksum": "x"}})
    assert len(read_journal(store).records) == 4


def test_repair_names_a_committed_shard_whose_file_is_gone(store, reference):
    gone = sorted((store / "shards").iterdir())[0]
    gone.unlink()
    report = repair_store(store)
    assert report.lost == [f"shards/{gone.name}"] and report.rows == 14
    assert f"LOST shards/{gone.name}" in report.summary()
    assert verify_store(store) == []


def test_a_worker_shard_whose_rows_differ_from_its_entry_is_never_committed(store):
    manifest = Manifest.load(store)
    source = sorted((store / "shards").iterdir())[0]
    writer = StoreWriter(store, manifest.config, manifest.spec)
    copy = store / "shards" / "worker-00000.h5"  # as a worker writes it, while the driver holds the writer
    shutil.copy(source, copy)
    with h5py.File(copy) as f:
        keys, views = [k.decode() for k in f["keys"][()]], f["view"][()].tolist()
    try:
        entry = {"file": "shards/worker-00000.h5", "rows": 3, "checksum": "x"}
        fresh = ["d" * 64, "e" * 64, "f" * 64]
        with pytest.raises(StoreError, match="holds 2 rows, its entry says 3"):
            writer.commit_external(entry, fresh, [0, 0, 0], ["p"] * 3, ["a"] * 3, ["train"] * 3)
    finally:
        writer.close()
    assert len(keys) == len(views) == 2 and Manifest.load(store).rows == 16


def test_verify_checks_each_shards_own_content_checksum(store):
    from featurestore._atomic import file_checksum

    data = json.loads((store / MANIFEST_NAME).read_text())
    file = store / data["shards"][0]["file"]
    with h5py.File(file, "r+") as f:  # changed in place, and the manifest's file checksum made to match
        f["features"][next(iter(f["features"]))][0] += 1.0
    data["shards"][0]["checksum"] = file_checksum(file)
    (store / MANIFEST_NAME).write_text(json.dumps(data))
    assert any("do not match the checksum in its own attributes" in p for p in verify_store(store))


def test_repair_keeps_the_committed_shard_over_an_older_orphan_holding_the_same_rows(store, built, reference,
                                                                                     tiny_onnx):
    lines = _lines(store)
    last = Path(_record(lines[-2])["shard"]["file"]).name
    _write_lines(store, lines[:-2] + [b""])  # its commit was lost; a rerun then extracts its rows again...
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreWriter, "close", lambda self, run=None: self._release_lock())  # ...and is killed too
        extract(tiny_onnx, built[1], store, OPTS)
    again = Path(_record(_lines(store)[-2])["shard"]["file"]).name
    assert (store / "orphans" / last).is_file() and again != last
    report = repair_store(store)
    assert report.set_aside == [(f"orphans/{last}", "its rows are already committed (by an earlier shard) or repeat")]
    assert report.rows == 16 and not report.recommitted and (store / "shards" / again).is_file()
    data = _everything(store)
    assert sorted(zip(data["keys"], data["views"])) == sorted(zip(reference["keys"], reference["views"]))
