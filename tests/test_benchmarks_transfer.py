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
