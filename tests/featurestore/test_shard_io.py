"""How shards are laid out and read: fixed-length utf-8 columns, raw reads at dataset offsets.

The reader takes feature rows straight from the HDF5 file (``readinto`` for blocks, a
memory map for scattered rows); these tests hold it to what h5py itself reads, for every
row order, for shards written by earlier versions (variable-length strings, h5py reads),
and for damaged files.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from featurestore import open_store, write_arrays
from featurestore.errors import StoreError, UnsafeStoreError
from featurestore.shard_buffer import layer_stats


@pytest.fixture()
def store_path(tmp_path):
    rng = np.random.default_rng(7)
    features = {"a": rng.standard_normal((50, 6)).astype(np.float32),
                "b": rng.standard_normal((50, 3)).astype(np.float32)}
    labels = ["chat noir", "café", "straße", "猫", ""] * 10
    paths = [f"images/naïve/{i:03d}-ü.jpg" for i in range(50)]
    splits = ["train", "test"] * 25
    write_arrays(tmp_path / "s", features, labels=labels, paths=paths, splits=splits, shard_rows=8)
    return tmp_path / "s", features, labels, paths, splits


def _h5py_rows(store, name: str, rows: np.ndarray) -> np.ndarray:
    """The same rows read through h5py only (the reference)."""
    parts = []
    for shard in store.manifest.shards:
        with h5py.File(store.path / shard.file, "r") as f:
            parts.append(f["features"][name][()])
    return np.concatenate(parts)[rows]


def test_non_ascii_columns_round_trip(store_path):
    path, _, labels, paths, splits = store_path
    store = open_store(path)
    assert store.paths.tolist() == paths
    assert store.labels.tolist() == labels
    assert store.splits.tolist() == splits
    assert store.paths.dtype == object


def test_string_columns_are_fixed_length_utf8(store_path):
    path = store_path[0]
    store = open_store(path)
    with h5py.File(path / store.manifest.shards[0].file, "r") as f:
        info = h5py.check_string_dtype(f["paths"].dtype)
        assert info.encoding == "utf-8" and info.length is not None


@pytest.mark.parametrize("order", ["all", "block", "sorted", "shuffled", "negative", "repeated", "one", "empty"])
def test_rows_match_h5py(store_path, order):
    path, features, *_ = store_path
    store = open_store(path)
    rng = np.random.default_rng(1)
    rows = {
        "all": np.arange(50), "block": np.arange(5, 29), "sorted": np.sort(rng.choice(50, 17, replace=False)),
        "shuffled": rng.permutation(50)[:23], "negative": np.array([-1, -50, 3, -7]),
        "repeated": np.array([4, 4, 9, 4, 40]), "one": np.array([33]), "empty": np.array([], dtype=np.int64),
    }[order]
    loaded = store.load(rows=rows)
    for name in ("a", "b"):
        np.testing.assert_array_equal(loaded.X[name], _h5py_rows(store, name, rows % 50))
        np.testing.assert_array_equal(loaded.X[name], features[name][rows])


def test_shards_with_variable_length_strings_read_the_same(store_path, tmp_path):
    """Shards written before fixed-length columns (variable-length utf-8) still read."""
    path, features, labels, paths, _ = store_path
    store = open_store(path)
    for shard in store.manifest.shards:
        with h5py.File(path / shard.file, "r+") as f:
            for column in ("labels", "split", "paths"):
                values = f[column].asstr()[()]
                del f[column]
                f.create_dataset(column, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))
    again = open_store(path)
    assert again.paths.tolist() == paths and again.labels.tolist() == labels
    np.testing.assert_array_equal(again.load(rows=np.array([3, 1, 44])).X["a"], features["a"][[3, 1, 44]])


def test_chunked_datasets_are_refused(store_path):
    """A layout the writer never produces (chunks, filters whose plugins HDF5 would load) is refused."""
    path, features, *_ = store_path
    store = open_store(path)
    for shard in store.manifest.shards:
        with h5py.File(path / shard.file, "r+") as f:
            values = f["features/a"][()]
            del f["features/a"]
            f.create_dataset("features/a", data=values, chunks=(1, values.shape[1]), compression="gzip")
    with pytest.raises(UnsafeStoreError, match="chunked or filtered layout"):  # opening reads no shard
        open_store(path).load()


def test_truncated_shard_is_a_store_error(store_path):
    path = store_path[0]
    store = open_store(path)
    file = path / store.manifest.shards[-1].file
    layout = store._layout(len(store.manifest.shards) - 1)["b"]
    data = file.read_bytes()
    file.write_bytes(data[: layout.offset + 5])
    with pytest.raises(StoreError, match="verify"):
        store.load()


def test_layer_stats_skip_non_finite_values():
    values = np.array([[1.0, np.nan, 3.0], [np.inf, -2.0, 0.0]], dtype=np.float32)
    stats = layer_stats(values)
    assert stats["nonfinite"] == 2 and stats["count"] == 6
    assert stats["sum"] == pytest.approx(2.0) and stats["sumsq"] == pytest.approx(14.0)
    assert (stats["min"], stats["max"]) == (-2.0, 3.0)
    assert stats["norm_sum"] == pytest.approx(np.sqrt(10.0) + np.sqrt(4.0))
