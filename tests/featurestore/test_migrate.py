"""Stores written by schema 1 keep opening; `featurestore migrate` and the next writer upgrade them in place.

The fixture ``data/store_v1`` was committed by the schema-1 writer (``data/make_store_v1.py``):
5 images with two views each in 3 shards, a non-ASCII label, an alias and a failure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore import migrate_store, open_store, verify_store
from featurestore.cli import main
from featurestore.journal import JOURNAL_NAME, read_journal
from featurestore.manifest import STORE_SCHEMA_VERSION, Manifest
from featurestore.writer import StoreWriter

DATA = Path(__file__).parent / "data"
KEYS = [f"{i:064x}" for i in range(1, 6)]


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(DATA / "store_v1", path)
    return path


def _check_content(path: Path) -> None:
    store = open_store(path)
    data = store.load(view=None)
    assert data.keys.tolist() == [k for k in KEYS for _ in (0, 1)]
    assert data.views.tolist() == [0, 1] * 5
    assert data.labels.tolist() == [lab for lab in ["cat", "dog", "émeu", "cat", "dog"] for _ in (0, 1)]
    assert data.splits.tolist() == [s for s in ["train", "test", "", "train", "test"] for _ in (0, 1)]
    assert data.paths.tolist() == [f"img/{i}.png" for i in range(5) for _ in (0, 1)]
    np.testing.assert_array_equal(data.X["a"], np.load(DATA / "store_v1_a.npy", allow_pickle=False))
    np.testing.assert_array_equal(data.X["b"], np.load(DATA / "store_v1_b.npy", allow_pickle=False))
    assert store.aliases()["paths"].tolist() == ["img/copy-of-0.png"]
    assert [f["path"] for f in store.failures] == ["img/bad.png"]
    assert store.classes == ("cat", "dog", "émeu")
    assert verify_store(path) == []


def test_a_schema_1_store_opens_as_it_is(old_store):
    before = {p: p.read_bytes() for p in old_store.rglob("*") if p.is_file()}
    _check_content(old_store)
    assert Manifest.load(old_store).schema_version == 1
    assert {p: p.read_bytes() for p in old_store.rglob("*") if p.is_file()} == before, "reading changed the store"


def test_migrate_upgrades_in_place_keeping_every_row_and_shard(old_store, capsys):
    shards = {p.name: p.read_bytes() for p in (old_store / "shards").iterdir()}
    assert main(["migrate", str(old_store)]) == 0
    assert "upgraded from store schema 1 to 2" in capsys.readouterr().out
    manifest = json.loads((old_store / "manifest.json").read_text())
    assert manifest["schema_version"] == STORE_SCHEMA_VERSION
    assert manifest["index"]["rows"] == 10 and manifest["index"]["shards"] == 3
    assert all("layout" in shard and "sha256" in shard for shard in manifest["shards"])
    assert {p.name: p.read_bytes() for p in (old_store / "shards").iterdir()} == shards, "shards must stay as they are"
    assert read_journal(old_store).records == [] and (old_store / JOURNAL_NAME).is_file()
    _check_content(old_store)
    assert migrate_store(old_store) == STORE_SCHEMA_VERSION  # already upgraded: nothing to do
    assert main(["migrate", str(old_store)]) == 0
    assert "already at store schema 2" in capsys.readouterr().out


def test_the_next_writer_upgrades_and_appends(old_store):
    manifest = Manifest.load(old_store)
    writer = StoreWriter(old_store, manifest.config, manifest.spec, shard_rows=4)
    assert Manifest.load(old_store).schema_version == STORE_SCHEMA_VERSION  # upgraded on open
    key = f"{9:064x}"
    writer.add_rows([key], [0], ["dog"], ["train"], ["img/new.png"],
                    {"a": np.ones((1, 6), np.float32), "b": np.zeros((1, 3), np.float32)})
    writer.close(run={"source": "test"})
    store = open_store(old_store)
    assert len(store) == 11 and store.keys.tolist()[-1] == key
    np.testing.assert_array_equal(store.load(rows=[-1]).X["a"], np.ones((1, 6), np.float32))
    assert verify_store(old_store) == []
