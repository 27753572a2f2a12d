"""Head steps converted node by node (Nystroem, cosine k-NN, L2 concat fusion, voting and stacking)
equal scikit-learn on the same rows, run with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import VotingClassifier
from sklearn.pipeline import Pipeline

from featurestore import PackageError
from featurestore.cli.package import _head_graph
from heads.fusion import ConcatFusion
from heads.registry import create_head

OPSET = 17
BLOCKS = [5, 7]


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=1300, n_features=12, n_informative=8, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    X[:3, :5] = X[300:303, :5] = 0.0  # rows whose first block is zero (L2 fusion must keep them zero)
    y = np.array([2, 5, 7])[y]  # class labels that are not 0..K-1
    return X[:300], y[:300], X[300:], y[300:]


def _run(estimator, X):
    model = _head_graph(estimator, X.shape[1], OPSET)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {session.get_inputs()[0].name: X})
    return label, probabilities


def _check(estimator, data, probabilities: bool = True) -> None:
    X, y, X_new, _ = data
    estimator.fit(X, y)
    label, proba = _run(estimator, X_new)
    agree = np.mean(label == estimator.predict(X_new))
    assert agree >= 0.999, agree
    if probabilities:
        np.testing.assert_allclose(proba, estimator.predict_proba(X_new), atol=1e-4, rtol=0)


def test_l2_concat_fusion(data):
    fusion = ConcatFusion(blocks=BLOCKS, norm="l2", weights=[1.0, 0.5])
    _check(Pipeline([("fusion", fusion), ("head", create_head("logreg"))]), data)
    _check(Pipeline([("fusion", ConcatFusion(blocks=BLOCKS, norm="none", weights=[2.0, 1.0])),
                     ("head", create_head("nb"))]), data)
    _check(Pipeline([("fusion", ConcatFusion(blocks=BLOCKS, norm="power")), ("head", create_head("logreg"))]), data)


def test_svm_on_the_nystroem_path(data):
    head = create_head("svm", exact_max_samples=100, n_components=60)
    _check(head, data, probabilities=False)
    assert head[-1].method_ == "nystroem(60)+linear"


def test_svm_exact(data):
    _check(create_head("svm"), data, probabilities=False)


@pytest.mark.parametrize("exact_max_samples", [60_000, 100])
def test_svm_after_pca(data, exact_max_samples):
    head = create_head("svm", max_dims=6, exact_max_samples=exact_max_samples, n_components=60)
    _check(head, data, probabilities=False)
    assert head[-1].method_.startswith("pca(6)+")


@pytest.mark.parametrize("weights", ["temperature", "uniform", "distance"])
def test_cosine_knn(data, weights):
    _check(create_head("knn", n_neighbors=7, weights=weights), data)


def test_knn_with_exact_matches_under_distance_weights(data):
    X, y, _, _ = data
    head = create_head("knn", n_neighbors=5, weights="distance").fit(X, y)
    label, proba = _run(head, X[:50])  # every query is a training row: its exact match decides
    np.testing.assert_array_equal(label, head.predict(X[:50]))
    np.testing.assert_allclose(proba, head.predict_proba(X[:50]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["voting", "stacking"])
def test_ensembles(data, method):
    _check(create_head("ensemble", method=method), data)


def test_two_class_stacking_drops_a_column_as_scikit_learn_does(data):
    X, y, X_new, _ = data
    keep = y != 7
    head = create_head("ensemble", method="stacking").fit(X[keep], y[keep])
    label, proba = _run(head, X_new)
    np.testing.assert_array_equal(label, head.predict(X_new))
    np.testing.assert_allclose(proba, head.predict_proba(X_new), atol=1e-4, rtol=0)


def test_what_does_not_convert_is_named(data):
    X, y, _, _ = data
    hard = VotingClassifier([("a", create_head("logreg")), ("b", create_head("nb"))], voting="hard").fit(X, y)
    with pytest.raises(PackageError, match="voting='hard'"):
        _head_graph(hard, X.shape[1], OPSET)
    stacked = create_head("ensemble", members=("logreg", "linear-svm"), method="stacking").fit(X, y)
    with pytest.raises(PackageError, match="decision_function"):
        _head_graph(stacked, X.shape[1], OPSET)


@pytest.mark.parametrize("mode", ["attention", "scalar_mix"])
def test_attention_fusion(data, mode):
    from heads.attention import AttentionFusion

    fusion = AttentionFusion(blocks=BLOCKS, mode=mode, max_epochs=5, random_state=0)
    _check(Pipeline([("fusion", fusion), ("head", create_head("logreg"))]), data)
