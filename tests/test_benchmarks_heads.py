"""The heads-loop benchmark runs in ``--quick`` mode and writes results JSON with the expected fields.

No timing is asserted: the numbers of a quick run mean nothing. The script runs in-process
through ``main(argv)`` on a few dozen Fashion-MNIST images and two fast heads, with its results,
scratch files and exported model under ``tmp_path``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks._common import fashion_mnist_missing
from featurestore.sources import FashionMnistSource

HEADS = ("nb", "tree")
TRAIN, TEST = 20, 10


pytestmark = pytest.mark.skipif(fashion_mnist_missing() is not None, reason="needs Debian's dataset-fashion-mnist")


@pytest.fixture(scope="module")
def document(tmp_path_factory, benchmark_cache) -> dict:
    pytest.importorskip("torchvision", reason="the re-extract baseline runs torchvision's MobileNetV2")
    from benchmarks import heads

    base = tmp_path_factory.mktemp("heads-benchmark")
    argv = ["--quick", "--repeats", "1", "--results-dir", str(base / "results"), "--workdir", str(base / "work"),
            "--cache-dir", str(benchmark_cache), "--images", str(TRAIN), "--test", str(TEST),
            "--heads", ",".join(HEADS)]
    assert heads.main(argv) == 0
    assert not list((base / "work").iterdir())  # the scratch store is removed
    return json.loads((base / "results" / "heads.json").read_text())


def test_run_metadata(document):
    assert document["benchmark"] == "heads" and document["quick"] is True and document["repeats"] == 1
    assert document["machine"]["cpu"]["usable_cores"] >= 1
    params = document["parameters"]
    assert params["heads"] == list(HEADS) and params["reextract_repeats"] == 1
    assert 0 < params["images_train"] <= TRAIN and 0 < params["images_test"] <= TEST


def test_tables_are_rectangular(document):
    assert len(document["tables"]) == 3
    for tab in document["tables"]:
        assert tab["rows"] and all(len(row) == len(tab["headers"]) for row in tab["rows"])
    assert [row[0] for row in document["tables"][0]["rows"]] == list(HEADS)


def test_both_loops_timed_per_head(document):
    for name in ("ours", "re-extract"):
        stats = document["variants"][name]
        assert len(stats["samples_s"]) == 1 and stats["work"] == len(HEADS) and stats["unit"] == "head"
        assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]
    for head in HEADS:
        for variant in ("ours", "re-extract"):
            lap = document["per_head"][head][variant]
            assert 0.0 <= lap["accuracy"] <= 1.0
            assert lap["features_s"] >= 0 and lap["fit_score_s"] >= 0
            assert lap["seconds"] == pytest.approx(lap["features_s"] + lap["fit_score_s"])


def test_ratio_target_and_one_off_cost(document):
    (target,) = document["targets"]
    assert target["id"] == "heads.vs_reextract" and isinstance(target["passed"], bool)
    assert target["measured"] == pytest.approx(document["ratio"]["value"])
    low, high = target["paired_range"]
    assert low <= high and np.isfinite(target["measured"]) and target["note"]
    one_off = document["one_off_extraction"]
    assert one_off["images"] == TRAIN + TEST and one_off["seconds"] > 0
    even = document["break_even_experiments"]
    assert even is None or even >= 1


def test_image_features_is_a_transformer(tmp_path):
    """The baseline's first step fits into a scikit-learn Pipeline and returns one row per image."""
    pytest.importorskip("torchvision")
    from benchmarks.heads import ImageFeatures
    from sklearn.base import clone

    images = np.stack([item.array for item in FashionMnistSource("test", limit=2)])
    step = clone(ImageFeatures(engine="torch", batch_size=1))
    features = step.fit(images).transform(images)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    assert step.seconds_ > 0
    with pytest.raises(ValueError, match="engine"):
        ImageFeatures(engine="tensorflow").fit(images)


def test_skips_without_dataset(tmp_path, monkeypatch):
    """Without Fashion-MNIST the script records why it measured nothing and exits 0."""
    from benchmarks import heads

    monkeypatch.setenv("FEATURESTORE_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    assert heads.main(["--quick", "--results-dir", str(tmp_path / "results"), "--cache-dir",
                       str(tmp_path / "cache")]) == 0
    doc = json.loads((tmp_path / "results" / "heads.json").read_text())
    assert "Fashion-MNIST" in doc["skipped"] and doc["targets"] == [] and doc["tables"] == []
    assert not (tmp_path / "cache").exists()  # nothing exported
