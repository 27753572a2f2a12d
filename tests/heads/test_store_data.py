"""One vocabulary for loaded features: a bench's :class:`heads.store_data.StoreData` reads its rows
through the :class:`featurestore.FeatureSet` it holds, by the same names."""

from __future__ import annotations

import pickle

import numpy as np

from featurestore import write_arrays
from heads.bench import load_store_data
from heads.joined import join_store_data


def _store(path, name="a"):
    rng = np.random.default_rng(0)
    labels = ["cat", "dog", ""] * 4
    splits = ["test" if i % 4 == 0 else "train" for i in range(12)]
    return write_arrays(path / name, {"f": rng.normal(size=(12, 3)).astype(np.float32)}, labels=labels,
                        splits=splits, keys=[f"k{i}" for i in range(12)], paths=[f"img{i}.png" for i in range(12)])


def test_feature_set_take_keeps_every_column_aligned(tmp_path):
    data = _store(tmp_path).load()
    rows = np.array([5, 0, 3])
    part = data.take(rows)
    assert part.keys.tolist() == ["k5", "k0", "k3"] and part.paths.tolist() == ["img5.png", "img0.png", "img3.png"]
    assert part.labels.tolist() == ["", "cat", "cat"] and part.splits.tolist() == ["train", "test", "train"]
    assert np.array_equal(part.X["f"], data.X["f"][rows]) and part.y.tolist() == [-1, 0, 0]
    assert part.test.tolist() == [False, True, False] and data.take(np.array([0, 4])).test is None
    again = pickle.loads(pickle.dumps(part))  # keys and paths travel decoded: no closure over the store
    assert again.keys.tolist() == part.keys.tolist() and again.paths.tolist() == part.paths.tolist()
    assert np.array_equal(again.X["f"], part.X["f"]) and again.classes == part.classes


def test_with_targets_names_each_row_by_its_target(tmp_path):
    data = _store(tmp_path).load().take(np.arange(2))
    regression = data.with_targets("size", "regression", np.array([1.5, 2.0]), ())
    assert regression.labels.tolist() == ["1.5", "2.0"] and regression.task == "size"
    assert regression.task_type == "regression" and regression.keys.tolist() == ["k0", "k1"]


def test_store_data_reads_its_feature_set_by_the_same_names(tmp_path):
    _store(tmp_path, "a"), _store(tmp_path, "b")
    a, b = load_store_data([tmp_path / "a", tmp_path / "b"])
    features = a.features
    assert a.X is features.X and a.y is features.y and a.classes == features.classes == ("cat", "dog")
    assert a.keys.tolist() == features.keys.tolist() == [f"k{i}" for i in range(12) if i % 3 != 2]
    assert a.paths.tolist() == features.paths.tolist() and a.layers == ["f"] and a.X["f"].dtype == np.float32
    assert np.array_equal(a.test, a.splits == "test") and a.task is None and a.task_type == "classification"
    assert a.augmented is None and a.augmented_views(["f"]) is None
    joined = join_store_data([a, b])
    assert joined.layers == ["a/f", "b/f"] and joined.joined and joined.keys.tolist() == a.keys.tolist()
    assert np.array_equal(joined.test, a.test) and np.array_equal(joined.y, a.y)


def test_augmented_views_are_the_stored_views_of_the_same_rows(tmp_path):
    from export import export_backbone
    from featurestore import ArraySource, ExtractConfig, Preprocessing, extract, open_store

    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1.0,), color_mode="L")
    export_backbone("pixels", tmp_path / "p.onnx", preprocessing=prep)
    images = np.random.default_rng(1).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    extract(tmp_path / "p.onnx", ArraySource(images, labels=["a", "b", "a", "b", "a", ""]), tmp_path / "s",
            ExtractConfig(device="cpu", progress=False, views=2, augment=("hflip", "crop")))
    (data,) = load_store_data([tmp_path / "s"], use_views=True)
    store = open_store(tmp_path / "s")
    layer = data.layers[0]
    views = data.augmented_views([layer])
    assert views.shape == (2,) + data.X[layer].shape and data.augmented.views.tolist() == [1] * 5 + [2] * 5
    for v in (1, 2):
        stored = store.load([layer], rows=store.rows_for_keys(data.keys.tolist(), view=v)).X[layer]
        assert np.array_equal(views[v - 1], stored.astype(np.float32))
