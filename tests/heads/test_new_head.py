"""A head defined in one file (its estimator, its converter, one ``register_head`` call) is benchable,
savable and packageable, with nothing else touched: this file is that one file."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from featurestore import PackageError, open_store
from featurestore.cli import main
from heads import head_to_onnx, load_head, package_head, register_head
from heads.errors import DuplicateHeadError, HeadParamError, UnsafeHeadError
from heads.onnx_graph import Context, Graph, GraphBuilder, Piece, classifier_outputs

# --- the new head: what a user writes ------------------------------------------------------


def _unit(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)


class CentroidHead(ClassifierMixin, BaseEstimator):
    """Nearest class mean on cosine similarity; probabilities ``softmax(cos / temperature)``."""

    def __init__(self, temperature: float = 0.1) -> None:
        self.temperature = temperature

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        codes = encoder.transform(y)
        self.centroids_ = _unit(np.stack([_unit(X)[codes == k].mean(axis=0) for k in range(len(self.classes_))]))
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        logits = _unit(np.asarray(X, np.float64)) @ self.centroids_.T / self.temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def centroid_onnx(head: CentroidHead) -> list[Graph]:
    """Unit rows, cosine to each centroid, softmax: built node by node."""

    def build(context: Context) -> Piece:
        b = GraphBuilder("centroid.")
        cos = b.op("MatMul", [b.unit_rows("x", context.width), b.const(head.centroids_.T.astype(np.float32))])
        logits = b.op("Div", [cos, b.const(np.array([head.temperature], np.float32))])
        probabilities = b.op("Softmax", [logits], axis=1)
        return Piece(classifier_outputs(b, probabilities, head.classes_, context.width, context.opset), None)

    return [Graph(build)]


def centroid(temperature: float = 0.1) -> Pipeline:
    """StandardScaler + :class:`CentroidHead`."""
    return Pipeline([("scale", StandardScaler()), ("centroid", CentroidHead(temperature=temperature))])


# --- the tests -----------------------------------------------------------------------------


@contextlib.contextmanager
def registered(name: str = "centroid", **how) -> Iterator[str]:
    """``register_head(name, ..., estimator=CentroidHead, converter=centroid_onnx)`` on ``centroid``, for one
    test: the registry is process-wide, and other test modules list every head."""
    from heads import registry

    how = {"estimator": CentroidHead, "converter": centroid_onnx, **how}
    register_head(name, description="nearest class mean on cosine similarity", param_grid={
        "centroid__temperature": [0.05, 0.1]}, **how)(centroid)
    try:
        yield name
    finally:
        registry._REGISTRY.pop(name)


def test_a_head_registered_in_one_file_benches(pixels, tmp_path):
    from heads.bench import BenchConfig, run_bench

    with registered() as name:
        doc = run_bench([pixels / "store"], tmp_path / "r", BenchConfig(heads=(name,), fusions=(), cv=3, n_jobs=1),
                        log=lambda message: None)
    assert [r["head"] for r in doc["results"]] == [name]
    assert 0.0 <= doc["results"][0]["accuracy"] <= 1.0
    assert doc["results"][0]["method"] == "CentroidHead"


@pytest.mark.parametrize("search", [False, True])
def test_a_head_registered_in_one_file_saves_packages_and_predicts_the_same(pixels, tmp_path, search):
    head, classifier = tmp_path / "h.skops", tmp_path / "c.onnx"
    with registered() as name:
        assert main(["fit", str(pixels / "store"), "--head", name, "-o", str(head)] + ["--search"] * search) == 0
        estimator, meta = load_head(head)
        assert main(["package", str(pixels / "p.onnx"), str(head), "-o", str(classifier)]) == 0
        assert main(["predict", str(pixels / "p.onnx"), str(head), str(pixels / "pngs"), "-o", str(tmp_path / "a.csv"),
                     "--device", "cpu"]) == 0
        X = open_store(pixels / "store").load(meta["layers"]).matrix(meta["layers"]).astype(np.float32)
        converted = head_to_onnx(estimator, X.shape[1]).SerializeToString()
    assert main(["predict", str(classifier), str(pixels / "pngs"), "-o", str(tmp_path / "b.csv"),
                 "--device", "cpu"]) == 0  # the packaged file needs no registered head
    a, b = list(csv.DictReader(open(tmp_path / "a.csv"))), list(csv.DictReader(open(tmp_path / "b.csv")))
    assert len(a) == 4 and [(r["path"], r["label"]) for r in a] == [(r["path"], r["label"]) for r in b]
    probs = [c for c in a[0] if c.startswith("prob_")]
    np.testing.assert_allclose([[float(r[c]) for c in probs] for r in b], [[float(r[c]) for c in probs] for r in a],
                               atol=1e-5, rtol=0)

    import onnxruntime as ort  # and on every stored row, the converted head alone equals the fitted one

    session = ort.InferenceSession(converted, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"x": X})
    np.testing.assert_array_equal(label, estimator.predict(X))
    np.testing.assert_allclose(probabilities, estimator.predict_proba(X), atol=1e-5, rtol=0)


def test_its_class_is_trusted_only_while_a_head_registers_it(pixels, tmp_path):
    head = tmp_path / "h.skops"
    with registered() as name:
        assert main(["fit", str(pixels / "store"), "--head", name, "-o", str(head)]) == 0
    with pytest.raises(UnsafeHeadError, match=f"{CentroidHead.__module__}.CentroidHead"):
        load_head(head)


def test_a_class_registered_without_a_converter_saves_but_is_named_when_packaged(pixels, tmp_path):
    head = tmp_path / "h.skops"
    with registered(converter=None) as name:
        assert main(["fit", str(pixels / "store"), "--head", name, "-o", str(head)]) == 0
        load_head(head)
        with pytest.raises(PackageError, match="CentroidHead has no ONNX conversion"):
            package_head(pixels / "p.onnx", head, tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()


def test_register_head_takes_module_level_estimator_classes_only():
    class Local(CentroidHead):
        pass

    for how, error, match in [
        ({"estimator": None, "converter": centroid_onnx}, HeadParamError, "name it with"),
        ({"estimator": centroid, "converter": None}, HeadParamError, "not a scikit-learn estimator class"),
        ({"estimator": json.loads, "converter": None}, HeadParamError, "functions are never trusted"),
        ({"estimator": Local, "converter": None}, HeadParamError, "top level"),
    ]:
        with pytest.raises(error, match=match), registered("centroid-bad", **how):
            pass
    with registered("centroid-a"):
        with pytest.raises(DuplicateHeadError, match="another converter"), \
                registered("centroid-b", converter=lambda head: []):
            pass
        with registered("centroid-b"):  # the same class and converter under a second name is fine
            pass
    from heads.registry import list_heads

    assert not any(name.startswith("centroid") for name in list_heads())
