"""``bench --shots K,... --seeds N``: seeded draws of K training rows per class, the same for every cell, each
cell fitted on each draw and scored on the whole test split; mean ± std in the report, with a plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from featurestore import write_arrays
from featurestore.bench_config import BenchConfig
from featurestore.cli import main
from featurestore.errors import OptionsError
from heads.fewshot import draw_shots


def _store(path: Path, with_test: bool = True) -> Path:
    rng = np.random.default_rng(0)
    n, classes = 150, 3
    y = np.arange(n) % classes
    signal = rng.normal(size=(classes, 8))[y] * 2.0
    features = {"signal": (signal + rng.normal(size=(n, 8))).astype(np.float32),
                "noise": rng.normal(size=(n, 4)).astype(np.float32)}
    splits = np.where(np.arange(n) % 5 == 0, "test", "train") if with_test else None
    write_arrays(path, features, labels=[f"c{v}" for v in y], splits=splits)
    return path


def test_draws_are_k_per_class_seeded_and_take_all_of_a_small_class() -> None:
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    train = np.arange(1, 22)  # row 0 is not a training row
    rows = draw_shots(y, train, 3, seed=0)
    assert np.bincount(y[rows]).tolist() == [3, 3, 2] and set(rows) <= set(train)
    np.testing.assert_array_equal(rows, draw_shots(y, train, 3, seed=0))
    assert any(not np.array_equal(rows, draw_shots(y, train, 3, seed=s)) for s in range(1, 4))


def test_bench_shots_through_the_cli(tmp_path, capsys) -> None:
    store, out = _store(tmp_path / "s"), tmp_path / "r"
    assert main(["bench", str(store), "-o", str(out), "--heads", "logreg,knn,siamese", "--fusions", "",
                 "--layers", "signal", "--shots", "all,5,1", "--seeds", "3", "--jobs", "1"]) == 0
    fits = list(csv.DictReader(open(out / "shots.csv")))
    assert len(fits) == 3 * (3 + 3 + 1)
    for head in ("logreg", "knn", "siamese"):  # the same draws for every cell
        assert [(f["shots"], f["seed"], f["n_train"]) for f in fits if f["head"] == head] == \
            [(f["shots"], f["seed"], f["n_train"]) for f in fits if f["head"] == "knn"]
    assert {f["n_train"] for f in fits if f["shots"] == "5"} == {"15"}
    assert {f["n_train"] for f in fits if f["shots"] == "all"} == {"120"}
    assert all(f["error"] for f in fits if f["head"] == "logreg" and f["shots"] == "1")  # its 3-fold sweep
    doc = json.loads((out / "results.json").read_text())
    assert doc["shots"]["shots"] == ["1", "5", "all"] and doc["shots"]["seeds"] == 3
    table = {(r["head"], r["shots"]): r for r in doc["shots"]["table"]}
    assert table[("knn", "5")]["draws"] == 3 and table[("knn", "all")]["draws"] == 1
    assert table[("siamese", "5")]["accuracy_mean"] > 0.5  # chance is 1/3
    report = (out / "report.md").read_text()
    assert "## Few-shot" in report and "| signal | logreg | fails |" in report and " ± " in report
    assert (out / "shots_s.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "Few-shot: accuracy against training images per class" in page and "5 shots" in page
    assert page.count("<svg") >= 2 and " ± " in page
    assert "5 shots" in (out / "shots.md").read_text()


def test_bench_shots_needs_a_test_split(tmp_path, capsys) -> None:
    store = _store(tmp_path / "s", with_test=False)
    assert main(["bench", str(store), "-o", str(tmp_path / "r"), "--heads", "knn", "--fusions", "",
                 "--shots", "1", "--seeds", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has none" in err[0] and str(store) in err[0]


@pytest.mark.parametrize(("how", "match"), [
    ({"shots": ("0",)}, "positive ints"), ({"shots": ("5", "5")}, "distinct"), ({"shots": ("few",)}, "positive"),
    ({"shots": ("5",), "seeds": 0}, "seeds"), ({"shots": ("5",), "select": True}, "do not go together"),
])
def test_bad_shots_are_option_errors(how, match) -> None:
    with pytest.raises(OptionsError, match=match):
        BenchConfig(**how)
