"""One contract suite for the store, run on every way a store is written.

Each case of the ``store_case`` fixture builds a small real store and, independently of the
store, what it must hold (keys, labels, splits, paths, feature values per key):

- ``cli``: a three-conv torch model exported to ONNX on the fly and ``featurestore extract``
  run over a ``root/<split>/<class>/<image>`` folder; the expected features come from
  decoding each file and running the ONNX model ourselves;
- ``arrays``: :func:`featurestore.write_arrays` over seeded random float32 matrices;
- ``old``: the same arrays as a schema-1 store, committed as a fixture (``data/store_v1_arrays``,
  written by ``data/make_store_v1_arrays.py`` with the featurestore that wrote schema 1), read as it is;
- ``upgraded``: a copy of that fixture after ``featurestore migrate``;
- ``ray``: the ``cli`` case's folder extracted on a local Ray instance (rows in commit order).

Every test in :class:`TestStoreContract` runs on every case; a store layout that breaks the
contract fails the same test for every layout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import xxhash

from featurestore import FeatureModel, decode_image, join_stores, open_store, write_arrays
from featurestore.cli import main
from featurestore.errors import LayerNotInStoreError, StoreError
from featurestore.manifest import STORE_SCHEMA_VERSION
from images import write_good_images

SHARD_ROWS = 3
ARRAYS_SEED = 20240611
IMAGE_SIZE = (40, 36)
#: (split, class, number of images, seed of the first image): 10 images, 2 classes, 2 splits.
FOLDER_LAYOUT = (("train", "cat", 3, 0), ("train", "dog", 3, 10), ("test", "cat", 2, 20), ("test", "dog", 2, 30))
ROW_COLUMNS = ("keys", "labels", "split", "view", "paths")
ALIAS_COLUMNS = ("keys", "paths", "labels", "split")


# --- fixtures ------------------------------------------------------------------------------
def _tiny_models():
    """``tests/export/tiny_models.py``, loaded by path (tests/export is not on sys.path here)."""
    path = Path(__file__).parents[1] / "export" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("_store_contract_tiny_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """TinyNet exported at 32x32 with its stages and pre-logits as outputs."""
    from export import export_backbone

    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_backbone(_tiny_models().tiny_net(), path, layers="stages,last", image_size=32)
    return path


def _write_folder(root: Path) -> list[Path]:
    files = []
    for split, cls, n, seed in FOLDER_LAYOUT:
        files += write_good_images(root / split / cls, n=n, size=IMAGE_SIZE, seed=seed)
    return files


@pytest.fixture(scope="module")
def cli_case(tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("cli_case")
    root, store = base / "images", base / "store"
    files = sorted(_write_folder(root), key=lambda p: p.relative_to(root).parts)
    status = main(["extract", str(tiny_model), str(root), "-o", str(store), "--shard-rows", str(SHARD_ROWS),
                   "--device", "cpu", "--no-progress"])
    assert status == 0

    model = FeatureModel(tiny_model, device="cpu")
    batch = np.stack([decode_image(path, model.spec.preprocessing) for path in files])
    outputs = model.run(batch)
    keys = [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]
    assert len(set(keys)) == len(keys), "the fixture images must all differ"
    expected = {
        "keys": keys,
        "labels": {k: p.parent.name for k, p in zip(keys, files)},
        "splits": {k: p.parent.parent.name for k, p in zip(keys, files)},
        "paths": {k: str(p) for k, p in zip(keys, files)},
        "features": {k: {out: values[i] for out, values in outputs.items()} for i, k in enumerate(keys)},
        "dims": {layer.output: layer.dim for layer in model.spec.layers},
        "layer_names": {layer.output: layer.name for layer in model.spec.layers},
        "classes": ("cat", "dog"),
        "dtype": np.dtype("float32"),
    }
    return store, expected


def _content_key(row: np.ndarray) -> str:
    """sha256 of a float32 vector as documented by ``content_key``: ``dtype.str|shape|`` then its bytes."""
    row = np.ascontiguousarray(row, dtype=np.float32)
    return hashlib.sha256(f"{row.dtype.str}|{row.shape}|".encode() + row.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def arrays_case(tmp_path_factory) -> tuple[Path, dict]:
    print(f"arrays case seed: {ARRAYS_SEED}")
    rng = np.random.default_rng(ARRAYS_SEED)
    n = 10
    features = {"l1": rng.standard_normal((n, 5)).astype(np.float32),
                "l2": rng.standard_normal((n, 7)).astype(np.float32)}
    labels = ["a", "b"] * (n // 2)
    splits = ["train"] * 6 + ["test"] * 4
    rng.shuffle(splits)
    paths = [f"row{i:02d}.npy" for i in range(n)]
    store = tmp_path_factory.mktemp("arrays_case") / "store"
    write_arrays(store, features, labels=labels, splits=splits, paths=paths, shard_rows=SHARD_ROWS)
    keys = [_content_key(np.concatenate([features["l1"][i], features["l2"][i]])) for i in range(n)]
    expected = {
        "keys": keys,
        "labels": dict(zip(keys, labels)),
        "splits": dict(zip(keys, splits)),
        "paths": dict(zip(keys, paths)),
        "features": {k: {out: values[i] for out, values in features.items()} for i, k in enumerate(keys)},
        "dims": {"l1": 5, "l2": 7},
        "layer_names": {"l1": "l1", "l2": "l2"},
        "classes": ("a", "b"),
        "dtype": np.dtype("float32"),
    }
    return store, expected


V1_ARRAYS = Path(__file__).parent / "data" / "store_v1_arrays"


@pytest.fixture(scope="module")
def old_case(arrays_case, tmp_path_factory) -> tuple[Path, dict]:
    """The arrays case as a schema-1 store (a read-only copy of the committed fixture)."""
    store = tmp_path_factory.mktemp("old_case") / "store"
    shutil.copytree(V1_ARRAYS, store)
    assert _manifest(store)["schema_version"] == 1
    return store, {**arrays_case[1], "schema": 1}


@pytest.fixture(scope="module")
def upgraded_case(arrays_case, tmp_path_factory) -> tuple[Path, dict]:
    store = tmp_path_factory.mktemp("upgraded_case") / "store"
    shutil.copytree(V1_ARRAYS, store)
    assert main(["migrate", str(store)]) == 0
    return store, arrays_case[1]


@pytest.fixture(scope="module")
def ray_case(tiny_model, cli_case, tmp_path_factory) -> tuple[Path, dict]:
    ray = pytest.importorskip("ray")
    from featurestore import ExtractConfig
    from featurestore.distributed import RayOptions, extract_distributed

    root = cli_case[0].parent / "images"
    store = tmp_path_factory.mktemp("ray_case") / "store"
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        extract_distributed(tiny_model, root, store, ExtractConfig(batch_size=SHARD_ROWS, shard_rows=SHARD_ROWS,
                                                                     device="cpu", progress=False),
                            RayOptions(workers=2, cpus_per_worker=0.5))
    finally:
        ray.shutdown()
    return store, {**cli_case[1], "ordered": False}


@pytest.fixture(params=["cli", "arrays", "old", "upgraded",
                        pytest.param("ray", marks=[pytest.mark.distributed, pytest.mark.filterwarnings(
                            "ignore::DeprecationWarning:ray.*")])])
def store_case(request) -> tuple[Path, dict]:
    """(store path, what the store must hold, computed without reading it)."""
    return request.getfixturevalue(f"{request.param}_case")


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def _info(store: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["info", str(store), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- the contract -----------------------------------------------------------------------------
class TestStoreContract:
    def test_open_rows_and_keys(self, store_case):
        path, exp = store_case
        store = open_store(path)
        keys = store.keys.tolist()
        assert len(store) == len(exp["keys"])
        assert len(set(keys)) == len(keys)
        assert all(len(k) == 64 and set(k) <= set("0123456789abcdef") for k in keys)
        assert set(keys) == set(exp["keys"])

    def test_row_order_is_the_source_order(self, store_case):
        path, exp = store_case
        if not exp.get("ordered", True):
            pytest.skip("Ray commits shards as workers finish them")
        assert open_store(path).keys.tolist() == exp["keys"]

    def test_layers_dims_and_dtype(self, store_case):
        path, exp = store_case
        store = open_store(path)
        assert store.layers == list(exp["dims"])
        assert store.dims == exp["dims"]
        assert store.dtype == exp["dtype"]
        fs = store.load()
        assert list(fs.X) == store.layers
        for name, dim in exp["dims"].items():
            assert fs.X[name].shape == (len(store), dim)
            assert fs.X[name].dtype == store.dtype
        assert fs.matrix().shape == (len(store), sum(exp["dims"].values()))

    def test_feature_set_is_aligned_and_matches_labels_and_splits(self, store_case):
        path, exp = store_case
        store = open_store(path)
        fs = store.load()
        n = len(store)
        assert len(fs) == n
        for column in (fs.keys, fs.labels, fs.splits, fs.views, fs.paths, fs.y):
            assert len(column) == n
        assert fs.classes == exp["classes"] == store.classes
        assert (fs.views == 0).all()
        for key, label, split, path_, y in zip(fs.keys.tolist(), fs.labels.tolist(), fs.splits.tolist(),
                                               fs.paths.tolist(), fs.y.tolist()):
            assert label == exp["labels"][key]
            assert split == exp["splits"][key]
            assert path_ == exp["paths"][key]
            assert fs.classes[y] == label

    def test_features_per_key_equal_the_independent_computation(self, store_case):
        path, exp = store_case
        fs = open_store(path).load()
        for i, key in enumerate(fs.keys.tolist()):
            for out, want in exp["features"][key].items():
                np.testing.assert_array_equal(fs.X[out][i], want.astype(fs.X[out].dtype), err_msg=f"{key} {out}")

    def test_load_one_layer(self, store_case):
        path, exp = store_case
        store = open_store(path)
        full = store.load()
        last = store.layers[-1]
        for request in (last, [last], [exp["layer_names"][last]]):
            fs = store.load(layers=request)
            assert list(fs.X) == [last]
            np.testing.assert_array_equal(fs.X[last], full.X[last])
            np.testing.assert_array_equal(fs.keys, full.keys)

    def test_unknown_layer_raises_a_key_error_naming_the_layers(self, store_case):
        path, _ = store_case
        store = open_store(path)
        with pytest.raises(KeyError) as info:
            store.load(layers=["no_such_layer"])
        assert isinstance(info.value, LayerNotInStoreError)
        message = str(info.value)
        assert "no_such_layer" in message
        assert all(name in message for name in store.layers)

    def test_splits_partition_the_rows(self, store_case):
        path, exp = store_case
        store = open_store(path)
        full = store.load()
        train, test = store.load(split="train"), store.load(split="test")
        assert len(train) + len(test) == len(store)
        assert set(train.keys.tolist()).isdisjoint(test.keys.tolist())
        assert set(train.keys.tolist()) == {k for k, s in exp["splits"].items() if s == "train"}
        assert set(test.keys.tolist()) == {k for k, s in exp["splits"].items() if s == "test"}
        for part, split in ((train, "train"), (test, "test")):
            assert (part.splits == split).all()
            rows = store.rows(split)
            for name in store.layers:
                np.testing.assert_array_equal(part.X[name], full.X[name][rows])

    def test_unknown_split_raises_naming_the_splits(self, store_case):
        path, _ = store_case
        store = open_store(path)
        with pytest.raises(StoreError) as info:
            store.load(split="validation")
        message = str(info.value)
        assert "validation" in message and "train" in message and "test" in message

    @pytest.mark.parametrize("order", ["shuffled", "reversed", "across_shards", "repeated", "empty"])
    def test_load_rows_in_the_given_order(self, store_case, order):
        path, _ = store_case
        store = open_store(path)
        full = store.load()
        n = len(store)
        rows = {
            "shuffled": np.random.default_rng(7).permutation(n),
            "reversed": np.arange(n)[::-1],
            "across_shards": np.arange(SHARD_ROWS - 1, 2 * SHARD_ROWS + 1),
            "repeated": np.array([1, 1, n - 1, 0, n - 1]),
            "empty": np.array([], dtype=np.int64),
        }[order]
        fs = store.load(rows=rows)
        assert fs.keys.tolist() == full.keys[rows].tolist()
        assert fs.labels.tolist() == full.labels[rows].tolist()
        assert fs.y.tolist() == full.y[rows].tolist()
        for name in store.layers:
            assert fs.X[name].shape == (len(rows), store.dims[name])
            np.testing.assert_array_equal(fs.X[name], full.X[name][rows])

    def test_load_negative_rows_index_like_numpy(self, store_case):
        path, _ = store_case
        store = open_store(path)
        full = store.load()
        rows = np.array([-1, 0, -2])
        fs = store.load(rows=rows)
        assert fs.keys.tolist() == full.keys[rows].tolist()
        for name in store.layers:
            np.testing.assert_array_equal(fs.X[name], full.X[name][rows])

    def test_rows_for_keys_round_trips(self, store_case):
        path, exp = store_case
        store = open_store(path)
        wanted = list(reversed(exp["keys"]))
        rows = store.rows_for_keys(wanted)
        assert store.keys[rows].tolist() == wanted
        assert store.rows_for_keys([]).tolist() == []

    def test_rows_for_missing_key_raises_key_error(self, store_case):
        path, _ = store_case
        store = open_store(path)
        try:
            store.rows_for_keys(["0" * 64])
        except KeyError:
            return
        except StoreError as exc:
            raise AssertionError(f"rows_for_keys raised {type(exc).__name__}, not a KeyError: {exc}") from None
        raise AssertionError("rows_for_keys accepted a missing key")

    def test_join_store_with_itself_aligns_keys(self, store_case):
        path, _ = store_case
        first, second = open_store(path), open_store(path)
        full = first.load()
        joined = join_stores([first, second])
        assert joined.keys.tolist() == full.keys.tolist()
        names = [Path(path).name, Path(path).name + "_"]  # as the bench names them
        assert set(joined.X) == {f"{store}/{name}" for store in names for name in first.layers}
        for store in names:
            for name in first.layers:
                np.testing.assert_array_equal(joined.X[f"{store}/{name}"], full.X[name])
        train = join_stores([first, second], split="train")
        assert train.keys.tolist() == first.load(split="train").keys.tolist()

    def test_join_aligns_a_store_with_reordered_rows(self, store_case, tmp_path):
        path, exp = store_case
        store = open_store(path)
        full = store.load()
        order = np.random.default_rng(3).permutation(len(store))
        other = write_arrays(tmp_path / "other", {"f": full.matrix()[order].astype(np.float32)},
                             keys=full.keys[order].tolist(), labels=full.labels[order].tolist(), shard_rows=4,
                             name="other")
        joined = join_stores([store, other])
        assert joined.keys.tolist() == full.keys.tolist()
        np.testing.assert_array_equal(joined.X["other/f"], full.matrix().astype(np.float32))

    def test_join_selects_layers_by_output_or_layer_name_and_refuses_unknown_ones(self, store_case, tmp_path):
        path, _ = store_case
        store = open_store(path)
        full = store.load()
        other = write_arrays(tmp_path / "other", {"f": full.matrix().astype(np.float32)},
                             keys=full.keys.tolist(), labels=full.labels.tolist(), name="other")
        first_layer = store.spec.layers[0]
        joined = join_stores([store, other], layers=[first_layer.name, "f"])  # a layer name and an output name
        assert set(joined.X) == {f"{Path(path).name}/{first_layer.output}", "other/f"}
        with pytest.raises(LayerNotInStoreError, match=r"layer\(s\) 'nope' in none of the stores"):
            join_stores([store, other], layers=["f", "nope"])
        with pytest.raises(KeyError, match=f"none of the layers f is in store {path}"):
            join_stores([store, other], layers=["f"])  # the first store would contribute nothing

    def test_stratified_split(self, store_case):
        path, exp = store_case
        store = open_store(path)
        tags = store.stratified_split(test_size=0.3, seed=5)
        assert tags.shape == (len(store),)
        assert set(tags.tolist()) <= {"train", "test"}
        np.testing.assert_array_equal(tags, store.stratified_split(test_size=0.3, seed=5))
        np.testing.assert_array_equal(tags, open_store(path).stratified_split(test_size=0.3, seed=5))
        for cls in exp["classes"]:
            in_class = store.labels == cls
            n_test = int((tags[in_class] == "test").sum())
            assert abs(n_test - 0.3 * in_class.sum()) <= 1, (cls, n_test, int(in_class.sum()))
        side: dict[str, str] = {}
        for key, tag in zip(store.keys.tolist(), tags.tolist()):
            assert side.setdefault(key, tag) == tag
        with pytest.raises(StoreError):
            store.stratified_split(test_size=1.0)

    def test_shards_are_plain_hdf5(self, store_case):
        path, exp = store_case
        manifest = _manifest(path)
        assert manifest["schema_version"] == exp.get("schema", STORE_SCHEMA_VERSION)
        assert len(manifest["fingerprint"]) == 64
        keys, features = [], {name: [] for name in exp["dims"]}
        for shard in manifest["shards"]:
            file = path / shard["file"]
            if "checksum" in shard:
                assert shard["checksum"] == "xxh3_128:" + xxhash.xxh3_128(file.read_bytes()).hexdigest()
            else:  # written before schema 2
                assert hashlib.sha256(file.read_bytes()).hexdigest() == shard["sha256"]
            with h5py.File(file, "r") as f:
                for column in ROW_COLUMNS:
                    assert isinstance(f[column], h5py.Dataset)
                    assert f[column].shape == (shard["rows"],), column
                assert f["keys"].dtype == np.dtype("S64")
                assert f["view"].dtype == np.uint16
                assert set(f["features"]) == set(exp["dims"])
                for name, dim in exp["dims"].items():
                    assert f["features"][name].shape == (shard["rows"], dim)
                    assert f["features"][name].dtype == exp["dtype"]
                    features[name].append(f["features"][name][()])
                lengths = {len(f["aliases"][column]) for column in ALIAS_COLUMNS}
                assert lengths == {shard.get("aliases", 0)}
                assert f.attrs["fingerprint"] == manifest["fingerprint"]
                assert int(f.attrs["featurestore_store_schema"]) in (1, manifest["schema_version"])
                keys += f["keys"][()].astype(str).tolist()
                labels = f["labels"].asstr()[()].tolist()
                assert labels == [exp["labels"][k] for k in f["keys"][()].astype(str).tolist()]
        assert sum(shard["rows"] for shard in manifest["shards"]) == len(keys)
        assert keys == exp["keys"] if exp.get("ordered", True) else sorted(keys) == sorted(exp["keys"])
        for name in exp["dims"]:
            stacked = np.concatenate(features[name])
            want = np.stack([exp["features"][k][name] for k in keys])
            np.testing.assert_array_equal(stacked, want)

    def test_shards_hold_at_most_shard_rows(self, store_case):
        path, exp = store_case
        rows = [shard["rows"] for shard in _manifest(path)["shards"]]
        assert max(rows) <= SHARD_ROWS, rows
        fewest = -(-len(exp["keys"]) // SHARD_ROWS)
        assert len(rows) == fewest if exp.get("ordered", True) else len(rows) >= fewest, rows

    def test_verify_passes(self, store_case, capsys):
        path, _ = store_case
        assert main(["verify", str(path)]) == 0
        assert "OK" in capsys.readouterr().out

    def test_verify_names_a_damaged_shard(self, store_case, tmp_path, capsys):
        path, _ = store_case
        copy = tmp_path / "copy"
        shutil.copytree(path, copy)
        shards = _manifest(copy)["shards"]
        shard = shards[len(shards) // 2]["file"]
        file = copy / shard
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
        capsys.readouterr()
        assert main(["verify", str(copy)]) == 1
        err = capsys.readouterr().err
        assert shard in err
        others = [s["file"] for s in shards if s["file"] != shard]
        assert not any(other in err for other in others)
        assert main(["verify", str(path)]) == 0

    def test_info_json_agrees_with_the_store(self, store_case, capsys):
        path, exp = store_case
        info = _info(path, capsys)
        store = open_store(path)
        assert info["rows"] == len(store) == len(exp["keys"])
        assert info["images"] == len(exp["keys"])
        assert info["fingerprint"] == store.fingerprint == _manifest(path)["fingerprint"]
        assert info["classes"] == dict(Counter(exp["labels"].values()))
        assert info["splits"] == dict(Counter(exp["splits"].values()))
        assert list(info["layers"]) == store.layers
        assert {name: st["dim"] for name, st in info["layers"].items()} == exp["dims"]
        assert info["shards"] == len(store.manifest.shards)
        assert info["dtype"] == str(exp["dtype"])
        assert info["duplicates"] == {} and info["leakage"] == {} and info["label_conflicts"] == {}
        assert info["failures"] == []
        for name, st in info["layers"].items():
            values = np.stack([exp["features"][k][name] for k in exp["keys"]]).astype(np.float64)
            assert st["mean"] == pytest.approx(values.mean(), rel=1e-6, abs=1e-9)
            assert st["min"] == pytest.approx(values.min()) and st["max"] == pytest.approx(values.max())


# --- duplicates, label conflicts, leakage -------------------------------------------------------
def test_duplicate_content_across_splits_and_classes(tiny_model, tmp_path, capsys):
    root, store_path = tmp_path / "images", tmp_path / "store"
    train = write_good_images(root / "train" / "classA", n=3, size=IMAGE_SIZE, seed=0)
    write_good_images(root / "test" / "classB", n=2, size=IMAGE_SIZE, seed=10)
    copy = root / "test" / "classB" / "copy_of_train.jpg"
    shutil.copyfile(train[0], copy)
    key = hashlib.sha256(train[0].read_bytes()).hexdigest()

    assert main(["extract", str(tiny_model), str(root), "-o", str(store_path), "--shard-rows", str(SHARD_ROWS),
                 "--device", "cpu", "--no-progress"]) == 0
    assert "1 duplicate content" in capsys.readouterr().out
    store = open_store(store_path)
    assert len(store) == 5
    assert store.keys.tolist().count(key) == 1
    row = int(store.rows_for_keys([key])[0])
    # Sorted paths put test/ before train/: the copy is where the content was first seen.
    assert (store.paths[row], store.labels[row], store.splits[row]) == (str(copy), "classB", "test")

    info = _info(store_path, capsys)
    assert info["rows"] == 5
    assert set(info["duplicates"]) == {key}
    assert sorted(info["duplicates"][key]) == sorted([str(copy), str(train[0])])
    assert info["label_conflicts"] == {key: ["classA", "classB"]}
    assert info["leakage"] == {key: ["test", "train"]}
    assert main(["verify", str(store_path)]) == 0


def test_rerun_seeing_only_known_content_keeps_the_store_valid(tiny_model, tmp_path, capsys):
    """A second run whose only new fact is an alias commits a shard without rows; it must still verify."""
    first, second, store_path = tmp_path / "first", tmp_path / "second", tmp_path / "store"
    files = write_good_images(first / "cat", n=2, size=IMAGE_SIZE, seed=40)
    (second / "dog").mkdir(parents=True)
    shutil.copyfile(files[0], second / "dog" / "same.jpg")
    for source in (first, second):
        assert main(["extract", str(tiny_model), str(source), "-o", str(store_path), "--device", "cpu",
                     "--no-progress"]) == 0
    assert main(["verify", str(store_path)]) == 0
    store = open_store(store_path)
    assert len(store) == 2
    key = hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert store.label_conflicts() == {key: ["cat", "dog"]}
    for shard in _manifest(store_path)["shards"]:
        with h5py.File(store_path / shard["file"], "r") as f:
            assert set(f["features"]) == set(store.layers)
    np.testing.assert_array_equal(store.load().keys, store.keys)
