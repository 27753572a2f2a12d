"""bench / fit / predict / run: the heads loop over stored features, end to end."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore import ArraySource, ExtractConfig, FashionMnistSource, extract, open_store, write_arrays
from featurestore.cli import main

FAST_HEADS = "logreg,nb,tree"


def _synthetic_store(path: Path, with_test: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n, classes = 240, 3
    y = np.arange(n) % classes
    signal = rng.normal(size=(classes, 8))[y] * 2.0
    features = {
        "noise": rng.normal(size=(n, 6)).astype(np.float32),
        "signal": (signal + rng.normal(size=(n, 8))).astype(np.float32),
        "mixed": (np.concatenate([signal[:, :3], rng.normal(size=(n, 5))], 1) + rng.normal(size=(n, 8))).astype(np.float32),
    }
    splits = np.where(np.arange(n) % 4 == 0, "test", "train") if with_test else None
    write_arrays(path, features, labels=[f"c{v}" for v in y], splits=splits, shard_rows=64)
    return path


def test_bench_writes_every_report_file(tmp_path, capsys):
    store = _synthetic_store(tmp_path / "s")
    assert main(["bench", str(store), "-o", str(tmp_path / "r"), "--heads", FAST_HEADS, "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "logreg" in out and "accuracy" in out
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    # 3 single layers + concat + attention fusions, times 3 heads
    assert len(rows) == 5 * 3
    assert {r["layer"] for r in rows} >= {"noise", "signal", "mixed", "concat(3 layers)", "attention(3 layers)"}
    by = {(r["layer"], r["head"]): float(r["accuracy"]) for r in rows}
    assert by[("signal", "logreg")] > by[("noise", "logreg")] + 0.3
    assert all(r["evaluation"] == "test split" for r in rows)
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["stores"][0]["fingerprint"] == open_store(store).fingerprint
    assert set(doc["attention"]) == {"s/logreg", "s/nb", "s/tree"}
    weights = doc["attention"]["s/logreg"]
    assert max(weights, key=weights.get) == "signal"
    report = (tmp_path / "r" / "report.md").read_text()
    for section in ("## Stores", "## All results", "## Best per head", "## Accuracy by layer: s",
                    "## Attention fusion"):
        assert section in report
    assert (tmp_path / "r" / "accuracy_by_layer_s.png").stat().st_size > 1000
    assert (tmp_path / "r" / "confusion_best.png").stat().st_size > 1000


def test_bench_uses_cv_without_a_test_split(tmp_path):
    from heads.bench import BenchConfig, run_bench

    store = _synthetic_store(tmp_path / "cv", with_test=False)
    doc = run_bench([store], tmp_path / "r", BenchConfig(heads=("nb",), fusions=(), cv=3, n_jobs=1), log=lambda m: None)
    assert {r["evaluation"] for r in doc["results"]} == {"3-fold CV"}
    assert all(r["n_test"] == 80 for r in doc["results"])


def test_bench_reads_features_only(tmp_path):
    """The store's images and model are gone: a bench still runs (0 images decoded)."""
    from export import export_backbone
    from featurestore import Preprocessing

    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1.0,), color_mode="L")
    export_backbone("pixels", tmp_path / "p.onnx", preprocessing=prep)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    labels = [str(i % 2) for i in range(60)]
    extract(tmp_path / "p.onnx", ArraySource(images, labels=labels), tmp_path / "s",
            ExtractConfig(device="cpu", progress=False))
    (tmp_path / "p.onnx").unlink()
    assert main(["bench", str(tmp_path / "s"), "-o", str(tmp_path / "r"), "--heads", "nb", "--cv", "3",
                 "--jobs", "1"]) == 0


@pytest.fixture(scope="module")
def fmnist_store(tmp_path_factory):
    """A pixels store of 300 Fashion-MNIST training and 40 test images."""
    from export import export_backbone

    root = tmp_path_factory.mktemp("fm")
    export_backbone("pixels", root / "pixels.onnx", image_size=28, grayscale=True)
    options = ExtractConfig(device="cpu", progress=False)
    extract(root / "pixels.onnx", FashionMnistSource("train", limit=300), root / "store", options)
    extract(root / "pixels.onnx", FashionMnistSource("test", limit=40), root / "store", options)
    return root


def test_fit_then_predict_png_files_matches_the_store_pipeline(fmnist_store, tmp_path, capsys):
    from heads.persist import load_head

    root = fmnist_store
    head = tmp_path / "head.skops"
    assert main(["fit", str(root / "store"), "--head", "logreg", "-o", str(head)]) == 0
    assert "test split accuracy" in capsys.readouterr().out
    estimator, meta = load_head(head)
    assert meta["store_fingerprint"] == open_store(root / "store").fingerprint

    test_items = list(FashionMnistSource("test", limit=20))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, item in enumerate(test_items):
        Image.fromarray(item.array).save(folder / f"{i:02d}.png")
    assert main(["predict", str(root / "pixels.onnx"), str(head), str(folder), "-o", str(tmp_path / "p.csv"),
                 "--device", "cpu"]) == 0
    predicted = {Path(r["path"]).name: r["label"] for r in csv.DictReader(open(tmp_path / "p.csv"))}

    store = open_store(root / "store")
    test = store.load(split="test")
    by_path = dict(zip(test.paths.tolist(), range(len(test))))
    rows = [by_path[item.path] for item in test_items]
    expected = estimator.predict(test.matrix(meta["layers"])[rows])
    assert [predicted[f"{i:02d}.png"] for i in range(20)] == [store.classes[v] for v in expected]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_predict_refuses_a_pickle_without_loading_it(fmnist_store, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    for name in ("head.pkl", "head.skops"):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(_Payload(str(marker)), fh)
        code = main(["predict", str(fmnist_store / "pixels.onnx"), str(tmp_path / name),
                     str(fmnist_store / "store"), "-o", str(tmp_path / "p.csv"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 1
        assert "pickles are never loaded" in err or "not a skops archive" in err
    assert not marker.exists()


def test_predict_refuses_a_head_of_another_model(fmnist_store, tmp_path, capsys):
    from export import export_backbone

    head = tmp_path / "head.skops"
    assert main(["fit", str(fmnist_store / "store"), "--head", "nb", "-o", str(head)]) == 0
    export_backbone("pixels", tmp_path / "other.onnx", image_size=28)
    code = main(["predict", str(tmp_path / "other.onnx"), str(head), "fashion-mnist:test", "-o",
                 str(tmp_path / "p.csv")])
    assert code == 1
    assert "trained on a store of model" in capsys.readouterr().err


def test_pipeline_runs_then_skips_everything(tmp_path, capsys):
    toml = tmp_path / "p.toml"
    toml.write_text(f"""
workdir = "{tmp_path / 'work'}"

[[export]]
name = "pixels"
backbone = "pixels"
image_size = 28
grayscale = true

[[extract]]
name = "fm"
model = "pixels"
sources = ["fashion-mnist:train", "fashion-mnist:test"]
limit = 60

[[bench]]
name = "report"
stores = ["fm"]
heads = ["nb", "logreg"]
""")
    assert main(["run", str(toml)]) == 0
    first = capsys.readouterr().out
    assert "3 steps: 3 ran, 0 skipped" in first and "report:" in first
    assert len(open_store(tmp_path / "work" / "fm")) == 120
    assert main(["run", str(toml)]) == 0
    assert "3 steps: 0 ran, 3 skipped" in capsys.readouterr().out
    log = (tmp_path / "work" / "pipeline.log").read_text()
    assert log.count("summary:") == 2


def test_predict_refuses_a_damaged_head_file_in_one_line(fmnist_store, tmp_path):
    import subprocess
    import sys
    import zipfile

    head = tmp_path / "xgb.skops"
    assert main(["fit", str(fmnist_store / "store"), "--head", "xgb", "-o", str(head)]) == 0
    with zipfile.ZipFile(head) as archive:  # the booster's bytes: the largest member
        member = max(archive.infolist(), key=lambda info: info.compress_size)
    data = bytearray(head.read_bytes())
    middle = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    head.write_bytes(bytes(data))
    predictions = tmp_path / "p.csv"
    predictions.write_text("earlier predictions\n")

    done = subprocess.run([sys.executable, "-m", "featurestore", "predict", str(fmnist_store / "pixels.onnx"),
                           str(head), "fashion-mnist:test", "-o", str(predictions), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"featurestore predict: error: head file {head} has changed since it was saved (its sha256 is not the one "
        f"in {head.name}.json); it is damaged or was replaced: restore the original or refit the head"]
    assert predictions.read_text() == "earlier predictions\n", "a refused head must not touch the output"


def test_any_loader_failure_is_a_head_model_file_error(fmnist_store, tmp_path):
    import hashlib
    import zipfile

    from heads import HeadModelFileError, load_head
    from heads.persist import sidecar_path

    head = tmp_path / "nb.skops"
    assert main(["fit", str(fmnist_store / "store"), "--head", "nb", "-o", str(head)]) == 0
    broken = tmp_path / "broken.skops"
    with zipfile.ZipFile(head) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            target.writestr(info, b"{not json" if info.filename == "schema.json" else source.read(info))
    metadata = json.loads(sidecar_path(head).read_text())
    metadata["head_sha256"] = hashlib.sha256(broken.read_bytes()).hexdigest()  # a sidecar that vouches for it
    sidecar_path(broken).write_text(json.dumps(metadata))
    with pytest.raises(HeadModelFileError, match=rf"cannot read head file {broken}: JSONDecodeError"):
        load_head(broken)
    sidecar_path(broken).write_text("{")
    with pytest.raises(HeadModelFileError, match="is not valid JSON"):
        load_head(broken)


def test_bench_and_fit_resolve_layers_alike_and_refuse_unknown_names(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "export"))
    from export import export_backbone
    from images import write_good_images
    from tiny_models import tiny_net

    model = tmp_path / "tiny.onnx"
    export_backbone(tiny_net(), model, layers="stages,last", image_size=32)
    for label, seed in (("a", 0), ("b", 100)):
        write_good_images(tmp_path / "imgs" / label, n=10, seed=seed)
    store = tmp_path / "store"
    extract(model, tmp_path / "imgs", store, ExtractConfig(device="cpu", progress=False))

    # a layer name (features.4) and an output name (pre_logits), in bench as in fit
    args = ["bench", str(store), "-o", str(tmp_path / "r"), "--heads", "nb", "--fusions", "", "--cv", "2",
            "--jobs", "1", "--layers", "features.4,pre_logits"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert sorted(r["layer"] for r in rows) == ["features.4.avg", "pre_logits"]
    assert main(["fit", str(store), "--head", "nb", "--layers", "features.4,pre_logits",
                 "-o", str(tmp_path / "h.skops")]) == 0
    assert json.loads((tmp_path / "h.skops.json").read_text())["layers"] == ["features.4.avg", "pre_logits"]
    capsys.readouterr()

    assert main(args[:-1] + ["features.4,stage9"]) == 1
    err = capsys.readouterr().err
    assert "layer(s) 'stage9' in none of the stores" in err and "features.4.avg" in err
    assert len(list(csv.DictReader(open(tmp_path / "r" / "results.csv")))) == 2, "a refused bench writes nothing"


def test_shard_rows_below_one_is_an_error(tmp_path, capsys):
    from featurestore.errors import OptionsError

    with pytest.raises(OptionsError, match="shard_rows must be an integer >= 1, got 0"):
        ExtractConfig(shard_rows=0)
    with pytest.raises(OptionsError, match="shard_rows must be an integer >= 1, got -3"):
        write_arrays(tmp_path / "s", {"f": np.arange(8, dtype=np.float32).reshape(4, 2)}, shard_rows=-3)
    assert not (tmp_path / "s").exists()
    assert main(["extract", "nothing.onnx", "fashion-mnist:test", "-o", str(tmp_path / "s"), "--shard-rows", "0"]) == 1
    assert "shard_rows must be an integer >= 1, got 0" in capsys.readouterr().err


def test_report_weights_column_says_none_for_the_pixels_baseline(fmnist_store, tmp_path):
    assert main(["bench", str(fmnist_store / "store"), "-o", str(tmp_path / "r"), "--heads", "nb", "--jobs", "1"]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    stores = report[report.index("## Stores"):report.index("## All results")]
    assert "| store | pixels | none |" in stores and "pretrained" not in stores
    assert json.loads((tmp_path / "r" / "results.json").read_text())["stores"][0]["weights_source"] == "none"


def test_bench_shots_on_a_fashion_mnist_store_through_the_cli(fmnist_store, tmp_path):
    out = tmp_path / "r"
    assert main(["bench", str(fmnist_store / "store"), "-o", str(out), "--heads", "knn,mlp", "--fusions", "",
                 "--shots", "5,1", "--seeds", "2", "--jobs", "1"]) == 0
    fits = list(csv.DictReader(open(out / "shots.csv")))
    assert len(fits) == 2 * 2 * 2 and not any(f["error"] for f in fits)
    assert {f["n_train"] for f in fits if f["shots"] == "5"} == {"50"}  # 5 images of each of the 10 classes
    doc = json.loads((out / "results.json").read_text())
    assert {r["n_test"] for r in doc["results"]} == {40}  # the test split whole
    table = {(r["head"], r["shots"]): r for r in doc["shots"]["table"]}
    assert set(table) == {(h, k) for h in ("knn", "mlp") for k in ("1", "5")}
    assert table[("mlp", "5")]["draws"] == 2 and table[("knn", "5")]["accuracy_mean"] > 0.3  # chance is 0.1
    assert "## Few-shot" in (out / "report.md").read_text() and (out / "shots_store.png").stat().st_size > 1000


def test_bench_joins_stores_of_the_same_images_by_content_key(tmp_path):
    """Two backbones' stores over the same images (here: each holding half of the signal): the
    joined store's fusion cells see both halves; rows are matched by key, not by position."""
    from heads.bench import BenchConfig, run_bench

    rng = np.random.default_rng(0)
    n, classes = 300, 3
    y = np.arange(n) % classes
    signal = rng.normal(size=(classes, 8))[y] * 1.2 + rng.normal(size=(n, 8))
    keys = [f"{i:064x}" for i in range(n)]
    labels = [f"c{v}" for v in y]
    splits = np.where(np.arange(n) % 4 == 0, "test", "train")
    write_arrays(tmp_path / "a", {"half": signal[:, :4].astype(np.float32)}, labels=labels, splits=splits, keys=keys)
    order = rng.permutation(n)[: n - 10]  # another order, and 10 images the first store has alone
    write_arrays(tmp_path / "b", {"other": signal[order, 4:].astype(np.float32)}, labels=[labels[i] for i in order],
                 splits=splits[order], keys=[keys[i] for i in order])
    config = BenchConfig(heads=("logreg",), fusions=("concat",), n_jobs=1)
    doc = run_bench([tmp_path / "a", tmp_path / "b"], tmp_path / "r", config, log=lambda m: None)
    rows = {(r["store"], r["layer"]): r for r in doc["results"]}
    assert set(rows) == {("a", "half"), ("b", "other"), ("a+b", "concat(2 layers)")}
    joined = rows[("a+b", "concat(2 layers)")]
    assert joined["layers"] == "a/half+b/other" and joined["n_test"] == int((splits[order] == "test").sum())
    assert joined["accuracy"] > max(rows[("a", "half")]["accuracy"], rows[("b", "other")]["accuracy"]) + 0.05
    assert [s["name"] for s in doc["stores"]] == ["a", "b", "a+b"] and doc["stores"][2]["rows"] == n - 10
    alone = run_bench([tmp_path / "a", tmp_path / "b"], tmp_path / "r2", BenchConfig(heads=("logreg",), fusions=("concat",),
                                                                               n_jobs=1, join=False), log=lambda m: None)
    assert {r["store"] for r in alone["results"]} == {"a", "b"}


def test_bench_select_chooses_by_cv_on_the_training_split_only(tmp_path, capsys):
    """A layer that predicts the training rows perfectly but is noise on the test rows, and one with a
    moderate signal everywhere: scored on the test split the second wins; --select must choose the
    first (the test split never influences the choice) and report its test score honestly."""
    rng = np.random.default_rng(0)
    n, classes = 400, 2
    y = np.arange(n) % classes
    test = (np.arange(n) // 2) % 4 == 0  # a quarter of the rows, both classes
    noise = rng.normal(size=(n, 4))
    on_train = np.where(test[:, None], noise, y[:, None] * 3.0 + rng.normal(size=(n, 4)))
    steady = y[:, None] * 1.0 + rng.normal(size=(n, 4))
    write_arrays(tmp_path / "s", {"train_signal": on_train.astype(np.float32), "steady": steady.astype(np.float32)},
                 labels=[f"c{v}" for v in y], splits=np.where(test, "test", "train"))
    assert main(["bench", str(tmp_path / "s"), "-o", str(tmp_path / "r"), "--heads", "logreg", "--fusions", "",
                 "--select", "--cv", "3", "--jobs", "1"]) == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    selection = doc["selection"]
    assert selection["layer"] == "train_signal" and selection["cv_accuracy"] > 0.95
    assert selection["test_accuracy"] < 0.7  # it is noise on the test rows, and that is what gets reported
    assert selection["n_train"] == 300 and selection["n_test"] == 100
    assert {r["evaluation"] for r in doc["results"]} == {"3-fold CV on the training split"}
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Selected by CV on the training split" in report and "test accuracy" in report
    assert main(["bench", str(tmp_path / "s"), "-o", str(tmp_path / "r2"), "--heads", "logreg", "--fusions", "",
                 "--jobs", "1"]) == 0  # without --select the grid is scored on the test split
    rows = {r["layer"]: r["accuracy"] for r in json.loads((tmp_path / "r2" / "results.json").read_text())["results"]}
    assert rows["steady"] > 0.7 > rows["train_signal"]


def _store_with_views(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A store whose every image has a clean row and one augmented view (a noisier copy)."""
    from featurestore.manifest import StoreConfig
    from featurestore.spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
    from featurestore.writer import StoreWriter

    rng = np.random.default_rng(1)
    n = 240
    y = np.arange(n) % 3
    clean = (rng.normal(size=(3, 6))[y] + rng.normal(size=(n, 6)) * 1.5).astype(np.float32)
    view = (clean + rng.normal(size=(n, 6)) * 1.5).astype(np.float32)
    test = np.arange(n) % 4 == 0
    spec = ModelSpec(backbone="t", weights=WeightsInfo("none", None, False),
                     layers=(LayerSpec(name="f", output="f", channels=6, dim=6, stride=None, pooling="none"),),
                     preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3))
    writer = StoreWriter(path, StoreConfig.from_spec(spec, "0" * 64, views=1, augment=("hflip",)), spec)
    for i in range(n):
        writer.add_rows([f"{i:064x}"] * 2, [0, 1], [f"c{y[i]}"] * 2, ["test" if test[i] else "train"] * 2,
                        [f"img{i}"] * 2, {"f": np.stack([clean[i], view[i]])})
    writer.close(run={"source": "test"})
    return clean, view, y, test


def test_bench_uses_augmented_views_as_training_rows_or_averages_over_them(tmp_path):
    from heads.bench import BenchConfig, run_bench
    from heads.registry import create_head

    clean, view, y, test = _store_with_views(tmp_path / "s")
    results = {}
    for use in ("clean", "train", "average", "both"):
        doc = run_bench([tmp_path / "s"], tmp_path / use, BenchConfig(heads=("logreg",), views=use, n_jobs=1),
                        log=lambda m: None)
        results[use] = doc["results"][0]
    n_train = int((~test).sum())
    assert [results[u]["n_train"] for u in ("clean", "train", "average", "both")] == [n_train, 2 * n_train,
                                                                                   n_train, 2 * n_train]
    assert {r["n_test"] for r in results.values()} == {int(test.sum())}  # views never add test rows
    # "average": the clean head's probabilities averaged over each test image's clean row and view
    head = create_head("logreg").fit(clean[~test], y[~test])
    averaged = (head.predict_proba(clean[test]) + head.predict_proba(view[test])) / 2
    assert results["average"]["accuracy"] == pytest.approx(np.mean(averaged.argmax(axis=1) == y[test]))
    assert results["clean"]["accuracy"] == pytest.approx(np.mean(head.predict(clean[test]) == y[test]))
