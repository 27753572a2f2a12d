"""A store and a head written by featurestore 0.1.0 keep opening, verifying and predicting alike.

The files under ``tests/fixtures/v0_1`` were written by that version (``make_fixture.py`` beside
them says how) and are never regenerated here: a store of 12 images in two layers with labels of
3 classes, an alias, a recorded failure and two shards (one in the checkpoint and its row index,
one committed by a journal record only), a ``logreg`` head fitted on it, and ``expected.json``,
what the store held and the head predicted when they were written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store, verify_store
from featurestore.journal import read_journal

FIXTURE = Path(__file__).parents[1] / "fixtures" / "v0_1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE / "store", path)
    return path


def test_the_fixture_holds_a_journal_commit_past_its_checkpoint():
    header, *records = (FIXTURE / "store" / "journal.log").read_text(encoding="utf-8").splitlines()
    assert json.loads(header) == {"base": 2, "version": 1} and len(read_journal(FIXTURE / "store").records) == 1
    assert [sorted(json.loads(line.split(" ", 1)[1])) for line in records] == [["classes", "failures", "seq", "shard"]]
    manifest = json.loads((FIXTURE / "store" / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["shards"]) == 1 and manifest["index"]["shards"] == 1


def test_an_old_store_opens_loads_the_same_arrays_and_verifies(old_store):
    before = _files(old_store)
    store = open_store(old_store)
    data = store.load()
    assert data.keys.tolist() == EXPECTED["keys"] and data.labels.tolist() == EXPECTED["labels"]
    assert data.splits.tolist() == EXPECTED["splits"] and data.views.tolist() == EXPECTED["views"]
    assert data.paths.tolist() == EXPECTED["paths"] and data.y.tolist() == EXPECTED["y"]
    assert list(store.classes) == EXPECTED["classes"] and store.layers == EXPECTED["layers"]
    assert store.fingerprint == EXPECTED["fingerprint"] and store.failures == EXPECTED["failures"]
    assert {name: values.tolist() for name, values in store.aliases().items()} == EXPECTED["aliases"]
    for name, values in data.X.items():
        assert values.dtype == np.float32
        assert hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest() == EXPECTED["features_sha256"][name]
        np.testing.assert_array_equal(values, np.array(EXPECTED["features"][name], dtype=np.float32))
    assert verify_store(old_store) == []
    assert _files(old_store) == before, "reading changed the store"


def test_an_old_store_takes_new_rows(old_store):
    from featurestore.manifest import Manifest
    from featurestore.writer import StoreWriter

    manifest = Manifest.load(old_store)
    writer = StoreWriter(old_store, manifest.config, manifest.spec)
    key = hashlib.sha256(b"a new image").hexdigest()
    writer.add_rows([key], [0], ["dog"], ["train"], ["img/new.png"],
                    {"stage1.avg": np.ones((1, 4), np.float32), "stage2.avg": np.zeros((1, 3), np.float32)})
    writer.close(run={"source": "test"})
    store = open_store(old_store)
    data = store.load()
    assert data.keys.tolist() == EXPECTED["keys"] + [key] and list(store.classes) == EXPECTED["classes"]
    np.testing.assert_array_equal(data.X["stage1.avg"][:-1], np.array(EXPECTED["features"]["stage1.avg"], np.float32))
    assert verify_store(old_store) == [] and read_journal(old_store).records == []


def test_an_old_head_loads_and_predicts_as_it_did(old_store, tmp_path):
    from heads.persist import load_head

    for name in ("head.skops", "head.skops.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    estimator, metadata = load_head(tmp_path / "head.skops")
    assert metadata["layers"] == EXPECTED["head"]["layers"] and metadata["classes"] == EXPECTED["classes"]
    X = open_store(old_store).load().matrix(metadata["layers"]).astype(np.float32)
    assert estimator.predict(X).tolist() == EXPECTED["head"]["predict"]
    np.testing.assert_allclose(estimator.predict_proba(X), EXPECTED["head"]["predict_proba"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("store", [FIXTURE / "store", Path(__file__).parent / "data" / "store_v1"])
def test_typed_metadata_gives_back_the_files_byte_for_byte(store):
    """Manifest, shard entries, the row index entry and journal records are typed; written back
    they are the bytes the earlier featurestore wrote (schema 2, and schema 1's sha256 entries)."""
    from featurestore.journal import encode_record
    from featurestore.manifest import Manifest
    from featurestore.metadata import JournalRecord, ShardEntry

    raw = (store / "manifest.json").read_bytes()
    manifest = Manifest.from_dict(json.loads(raw))
    assert all(isinstance(shard, ShardEntry) for shard in manifest.shards)
    assert json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":")).encode() == raw
    journal = store / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)[1:] if journal.exists() else []
    for line in lines:
        assert encode_record(JournalRecord.from_dict(json.loads(line[9:]))) == line


def test_a_shard_entry_is_checked_in_one_place():
    from featurestore.errors import MalformedRecordError
    from featurestore.metadata import MAX_SHARD_ROWS, ShardEntry

    entry = {"file": "shards/a.h5", "rows": 3, "checksum": "xxh3_128:00", "layout": {"f": [4096, [2]]}}
    assert ShardEntry.from_dict(entry).to_dict() == entry and ShardEntry.from_dict(entry).name == "a.h5"
    for change, message in (({"rows": "3"}, "shards[0].rows is '3', expected an integer >= 0"),
                            ({"rows": MAX_SHARD_ROWS + 1}, f"expected at most {MAX_SHARD_ROWS}"),
                            ({"checksum": None}, "shards[0].checksum is None, expected a string"),
                            ({"layout": {"f": [1, ["2"]]}}, "expected [offset, row shape]")):
        with pytest.raises(MalformedRecordError, match=re.escape(message)):
            ShardEntry.from_dict({**entry, **change}, "shards[0]")


def test_a_changed_shard_entry_writes_its_own_fields_and_keeps_unknown_ones():
    from featurestore.metadata import FeatureLayout, ShardEntry

    old = {"file": "shards/a.h5", "rows": 2, "sha256": "ab" * 32, "future": {"x": 1}}
    entry = ShardEntry.from_dict(old)
    assert entry.checksum_field == "sha256" and entry.extra == {"future": {"x": 1}} and entry.to_dict() == old
    moved = entry.moved_to("shards/b.h5").with_layout({"f": FeatureLayout(4096, (2, 3), np.dtype("float32"))})
    assert moved.to_dict() == {**old, "file": "shards/b.h5", "layout": {"f": [4096, [3]]}}
    assert moved.feature_layouts(np.dtype("float16")) == {"f": FeatureLayout(4096, (2, 3), np.dtype("float16"))}
    assert entry.to_dict() == old, "the original entry is unchanged"
