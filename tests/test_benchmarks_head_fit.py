"""The head_fit benchmark fits real heads on a small store and judges the slowest against the budget.

No time is asserted: the target's verdict is whatever the machine measured.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import head_fit


def test_quick_run_times_every_head_on_a_synthetic_store(tmp_path):
    argv = ["--quick", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
            "--heads", "nb,tree,logreg"]
    assert head_fit.main(argv) == 0
    assert not list((tmp_path / "work").iterdir())  # the synthetic store is removed
    doc = json.loads((tmp_path / "results" / "head_fit.json").read_text())
    (store,) = doc["stores"]
    assert (store["train_rows"], store["test_rows"], store["features"]) == (300, 100, 32)
    assert list(store["heads"]) == ["nb", "tree", "logreg"]
    for found in store["heads"].values():
        assert len(found["samples_s"]) == 1 and found["fit_s"] > 0
        assert 0.5 < found["test_accuracy"] <= 1.0  # separable blobs: every head learns them
    assert store["heads"]["logreg"]["method"].startswith("C=")
    (target,) = doc["targets"]
    slowest = max(found["fit_s"] for found in store["heads"].values())
    assert target["id"] == "heads.fit_budget" and target["measured"] == slowest
    assert target["passed"] == (slowest <= 300)
    (tab,) = doc["tables"]
    assert tab["headers"][2:] == ["nb", "tree", "logreg"] and len(tab["rows"]) == 1


def test_a_missing_store_is_recorded_as_skipped(tmp_path):
    argv = ["--results-dir", str(tmp_path), "--stores", str(tmp_path / "absent") + ":pre_logits", "--heads", "nb"]
    assert head_fit.main(argv) == 0
    doc = json.loads((tmp_path / "head_fit.json").read_text())
    assert doc["targets"] == [] and doc["tables"][0]["rows"] == []
    assert "featurestore run examples/fashion_mnist.toml" in doc["stores"][0]["skipped"]
    assert doc["notes"] == [f"{tmp_path / 'absent'}:pre_logits: skipped: {doc['stores'][0]['skipped']}"]


def test_synthetic_size_times_the_neural_heads(tmp_path):
    argv = ["--synthetic", "600x48", "--results-dir", str(tmp_path), "--heads", "mlp,siamese"]
    assert head_fit.main(argv) == 0
    (store,) = json.loads((tmp_path / "head_fit.json").read_text())["stores"]
    assert (store["train_rows"], store["test_rows"], store["features"]) == (600, 100, 48)
    assert store["heads"]["mlp"]["method"].startswith("mlp 48-256-10, dropout 0.2, ")
    assert store["heads"]["siamese"]["method"].startswith("siamese supcon, linear 48-128, nearest prototype, ")
    for found in store["heads"].values():
        assert 0.2 < found["test_accuracy"] <= 1.0  # chance is 0.1


def test_quick_regression_run_times_every_regression_head(tmp_path):
    from benchmarks import head_fit_regression
    from heads import list_heads

    argv = ["--quick", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")]
    assert head_fit_regression.main(argv) == 0
    assert not list((tmp_path / "work").iterdir())
    doc = json.loads((tmp_path / "results" / "head_fit_regression.json").read_text())
    assert doc["benchmark"] == "head_fit_regression" and not (tmp_path / "results" / "head_fit.json").exists()
    assert doc["parameters"]["task_type"] == "regression" and doc["parameters"]["task"] == "target"
    (store,) = doc["stores"]
    assert (store["train_rows"], store["test_rows"], store["features"]) == (300, 100, 32)
    assert set(store["heads"]) == set(list_heads("regression")) >= {"ridge", "svr", "tree", "forest", "bayes",
                                                                    "xgb", "knn"}
    for found in store["heads"].values():
        assert len(found["samples_s"]) == 1 and found["fit_s"] > 0 and "test_accuracy" not in found
    # the target's linear part (z0, variance 1 of about 1.8) is in the features: the linear heads find it
    assert 0.3 < store["heads"]["ridge"]["test_r2"] < 1 and 0.3 < store["heads"]["bayes"]["test_r2"] < 1
    assert store["heads"]["ridge"]["method"].startswith("alpha=")
    (target,) = doc["targets"]
    slowest = max(found["fit_s"] for found in store["heads"].values())
    assert target["id"] == "heads.fit_budget.regression" and target["measured"] == slowest
    assert target["passed"] == (slowest <= 300)
    (tab,) = doc["tables"]
    assert "R²" in tab["title"] and tab["headers"][2:] == doc["parameters"]["heads"]


def test_regression_on_given_stores_needs_a_task(tmp_path, capsys):
    from benchmarks import head_fit

    argv = ["--task-type", "regression", "--results-dir", str(tmp_path), "--stores", str(tmp_path / "s")]
    with pytest.raises(SystemExit) as exc:
        head_fit.main(argv)
    assert exc.value.code == 2 and "needs --task NAME" in capsys.readouterr().err


def test_quick_multilabel_run_times_every_multilabel_head(tmp_path):
    from benchmarks import head_fit_multilabel
    from heads import list_heads

    argv = ["--quick", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")]
    assert head_fit_multilabel.main(argv) == 0
    assert not list((tmp_path / "work").iterdir())
    doc = json.loads((tmp_path / "results" / "head_fit_multilabel.json").read_text())
    assert doc["benchmark"] == "head_fit_multilabel" and not (tmp_path / "results" / "head_fit.json").exists()
    assert doc["parameters"]["task_type"] == "multilabel" and doc["parameters"]["task"] == "tags"
    (store,) = doc["stores"]
    assert (store["train_rows"], store["test_rows"], store["features"]) == (300, 100, 32)
    assert set(store["heads"]) == set(list_heads("multilabel")) >= {"tree", "forest", "logreg", "nb", "xgb", "knn"}
    for found in store["heads"].values():
        assert len(found["samples_s"]) == 1 and found["fit_s"] > 0 and "test_accuracy" not in found
        assert 0 < found["test_map"] <= 1
    # each label is a threshold on the latent's dimensions, which the features hold: the linear head finds
    # most of it (chance mAP is the mean prevalence, about 0.25)
    assert store["heads"]["logreg"]["test_map"] > 0.4
    (target,) = doc["targets"]
    slowest = max(found["fit_s"] for found in store["heads"].values())
    assert target["id"] == "heads.fit_budget.multilabel" and target["measured"] == slowest
    assert target["passed"] == (slowest <= 300)
    (tab,) = doc["tables"]
    assert "mAP" in tab["title"] and tab["headers"][2:] == doc["parameters"]["heads"]
