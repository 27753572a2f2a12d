"""The transfer benchmark runs on a few dozen Fashion-MNIST images and writes its lever table.

No accuracy or time is asserted: on so few images the numbers mean nothing. Two levers run
(pooling, several backbones): the others go through the same bench calls at more cost.
"""

from __future__ import annotations

import json

import pytest

from benchmarks._common import fashion_mnist_missing


pytestmark = pytest.mark.skipif(fashion_mnist_missing() is not None, reason="needs Debian's dataset-fashion-mnist")


@pytest.fixture(scope="module")
def document(tmp_path_factory, benchmark_cache) -> dict:
    from benchmarks import transfer

    base = tmp_path_factory.mktemp("transfer-benchmark")
    argv = ["--quick", "--results-dir", str(base / "results"), "--workdir", str(base / "work"),
            "--cache-dir", str(benchmark_cache), "--images", "40", "--test", "20", "--levers", "2,1"]
    assert transfer.main(argv) == 0
    assert not list((base / "work").iterdir())  # the scratch stores are removed
    return json.loads((base / "results" / "transfer.json").read_text())


def test_levers_compare_with_and_without(document):
    assert document["parameters"]["levers"] == [1, 2]
    rows = document["levers"]
    assert [r["lever"] for r in rows] == ["1. pooling", "1. pooling", "2. several backbones"]
    for r in rows:
        assert 0.0 <= r["without_accuracy"] <= 1.0 and 0.0 <= r["with_accuracy"] <= 1.0
        assert r["gain_points"] == pytest.approx(100 * (r["with_accuracy"] - r["without_accuracy"]))
    assert "EfficientNet-Lite0 last alone" in rows[2]["detail"]


def test_tables_quote_the_classical_entries(document):
    levers, classical = document["tables"]
    assert len(levers["rows"]) == 3 and all(len(row) == len(levers["headers"]) for row in levers["rows"])
    assert "HOG + SVM" in [row[0] for row in classical["rows"]]
    assert "zalandoresearch/fashion-mnist" in classical["title"]


def test_bad_levers_are_refused(capsys):
    from benchmarks import transfer

    with pytest.raises(SystemExit):
        transfer.main(["--levers", "6"])
    assert "expected levers among 1,2,3,4,5" in capsys.readouterr().err


def _lever_stores(root) -> tuple:
    """Two stores of the same 90 images: ``m`` (pyramid and pre_logits, one augmented view per image) and ``l``
    (pre_logits), named as the levers pipeline's layers are."""
    import numpy as np

    from featurestore import write_arrays
    from featurestore.manifest import StoreConfig
    from featurestore.spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
    from featurestore.writer import StoreWriter

    rng = np.random.default_rng(0)
    n = 90
    y = np.arange(n) % 3
    means = rng.normal(size=(3, 6))
    rows = {name: (means[y] + rng.normal(size=(n, 6))).astype(np.float32) for name in ("p", "q", "v", "w", "l")}
    splits = ["test" if i % 3 == 0 else "train" for i in range(n)]
    keys = [f"{i:064x}" for i in range(n)]
    layers = tuple(LayerSpec(name=name, output=name, channels=6, dim=6, stride=None, pooling="none")
                   for name in ("features.13.pyramid", "pre_logits"))
    spec = ModelSpec(backbone="t", weights=WeightsInfo("none", None, False), layers=layers,
                     preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3))
    writer = StoreWriter(root / "m", StoreConfig.from_spec(spec, "0" * 64, views=1, augment=("hflip",)), spec)
    for i in range(n):
        writer.add_rows([keys[i]] * 2, [0, 1], [f"c{y[i]}"] * 2, [splits[i]] * 2, [f"img{i}"] * 2,
                        {"features.13.pyramid": np.stack([rows["p"][i], rows["v"][i]]),
                         "pre_logits": np.stack([rows["q"][i], rows["w"][i]])})
    writer.close(run={"source": "test"})
    write_arrays(root / "l", {"pre_logits": rows["l"]}, labels=[f"c{v}" for v in y], splits=splits, keys=keys)
    return root / "m", root / "l"


def test_full_levers_read_the_lever_benches_and_vote_the_best_cells(tmp_path):
    from benchmarks import transfer
    from featurestore.bench_config import BenchConfig
    from heads.bench import run_bench

    m, lite = _lever_stores(tmp_path)
    levers = tmp_path / "levers"
    both = ("features.13.pyramid", "pre_logits")
    common = dict(select=True, cv=3, n_jobs=1)
    run_bench([m], levers / "mlp", BenchConfig(heads=("svm", "mlp"), layers=("features.13.pyramid",), fusions=(),
                                               **common), log=lambda *_: None)
    run_bench([m], levers / "views", BenchConfig(heads=("mlp",), layers=("features.13.pyramid",), fusions=(),
                                                 views="train", **common), log=lambda *_: None)
    run_bench([m, lite], levers / "backbones", BenchConfig(heads=("mlp",), layers=both, fusions=("concat",),
                                                           per_layer=False, **common), log=lambda *_: None)
    run_bench([m], levers / "fewshot", BenchConfig(heads=("knn", "mlp"), layers=both, fusions=(), shots=("1", "5"),
                                                   seeds=2, n_jobs=1), log=lambda *_: None)
    results = tmp_path / "results"
    results.mkdir()
    kept = {"created": "then", "command": ["python", "-m", "benchmarks.transfer"], "notes": ["Extraction: kept."],
            "parameters": {"images_train": 40, "images_test": 20, "levers": [1]},
            "levers": [transfer._row("1. pooling", "a", 0.5, "b", 0.6)]}
    (results / "transfer.json").write_text(json.dumps(kept))
    assert transfer.main(["--levers", "none", "--full-levers", str(levers), "--ensemble", "4",
                          "--results-dir", str(results)]) == 0
    document = json.loads((results / "transfer.json").read_text())
    assert document["levers"] == kept["levers"] and document["notes"][1] == "Extraction: kept."
    full = document["full_set_levers"]
    assert [r["lever"] for r in full["levers"]] == ["mlp head"] * 2 + ["flipped views", "several backbones",
                                                                        "ensemble"]
    views = full["levers"][2]
    assert views["without"] == "features.13 pyramid, mlp, clean rows" and 0 <= views["with_accuracy"] <= 1
    assert "l alone" in full["levers"][3]["detail"] and "m+l" not in full["levers"][3]["detail"]
    members, vote = full["ensemble"]["members"], full["ensemble"]["vote"]
    # every cell votes, the views bench's mlp too (it trains on the stored flipped views as rows)
    assert len(members) == 4 and all(a["cv_accuracy"] >= b["cv_accuracy"] for a, b in zip(members, members[1:]))
    assert "train" in {m["views"] for m in members}
    assert vote == ("majority" if "svm" in {m["head"] for m in members} else "soft")  # svm has no probabilities
    assert {c["bench"] for c in full["chosen"]} == {"mlp", "views", "backbones"}
    assert full["best_by_cv"]["cv_accuracy"] == max(c["cv_accuracy"] for c in full["chosen"])
    compared = {(c["layer"], c["shots"]): c for c in document["fewshot"]["compared"]}
    assert set(compared) == {(layer, k) for layer in both for k in ("1", "5")}
    assert all(c["draws"] == 2 and 0 <= c["wins"] <= 2 for c in compared.values())
    titles = [t["title"] for t in document["tables"]]
    assert titles[0].startswith("Test accuracy with and without each lever") and titles[-4].startswith("Full set (60,000")
    assert titles[-2].startswith("Few-shot on the full store") and titles[-1].startswith("Few-shot, per draw")
    # run again over its own output: the subset levers still name the run that measured them, and
    # the full-set note is written afresh, not repeated
    assert transfer.main(["--levers", "none", "--full-levers", str(levers), "--ensemble", "2",
                          "--results-dir", str(results)]) == 0
    again = json.loads((results / "transfer.json").read_text())
    assert again["parameters"]["kept_from"] == document["parameters"]["kept_from"] == "then"
    assert [n for n in again["notes"] if n.startswith("Subset levers kept from")] == [document["notes"][0]]
    assert sum(n.startswith("Full set, levers (") for n in again["notes"]) == 1
