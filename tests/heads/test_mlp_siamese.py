"""The torch-trained heads ``mlp`` and ``siamese``: scikit-learn's contract, learning, determinism, save/load,
and ONNX packages that predict what the fitted heads predict."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from featurestore import open_store
from featurestore.cli import main
from heads import create_head, head_to_onnx, load_head, save_head
from heads.errors import HeadDataError, HeadParamError
from heads.mlp import MLPHead
from heads.registry import method_used, param_grid
from heads.siamese import SiameseHead

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).parents[2]
SEED = 0


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread for these small problems (torch's threads are the heads' own)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    print(f"seed={SEED}")
    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X.astype(np.float32), y, train_size=700, test_size=1000, stratify=y,
                                  random_state=SEED))


# --- scikit-learn's estimator contract ---------------------------------------------------
# Both estimators pass every check without an x-fail; the pipelines that `create_head("mlp")` and
# `create_head("siamese")` return are checked in test_heads_registry.py with the project's
# documented Pipeline x-fails.
@parametrize_with_checks([
    MLPHead(),
    MLPHead(hidden=(16, 8), dropout=0.0, validation_fraction=0.0),
    SiameseHead(),
    SiameseHead(loss="triplet", hidden=(16,), standardize=True, dim=8),
    SiameseHead(loss="contrastive", validation_fraction=0.0),
])
def test_sklearn_contract(estimator, check) -> None:
    check(estimator)


def test_importing_the_heads_does_not_import_torch() -> None:
    code = "import sys, heads.mlp, heads.siamese; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "importing heads.mlp or heads.siamese imported torch"


# --- they learn, deterministically, and leave torch as they found it ---------------------
@pytest.mark.parametrize(("name", "floor"), [("mlp", 0.95), ("siamese", 0.9)])
def test_head_learns_digits_deterministically(name, floor, digits) -> None:
    X, X_test, y, y_test = digits
    state, deterministic, threads = torch.random.get_rng_state(), torch.are_deterministic_algorithms_enabled(), \
        torch.get_num_threads()
    head = create_head(name).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic and torch.get_num_threads() == threads
    assert head.score(X_test, y_test) > floor
    again = clone(head).fit(X, y)
    for a, b in zip(head[-1].coefs_ + head[-1].intercepts_, again[-1].coefs_ + again[-1].intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(head.predict_proba(X_test).sum(axis=1), 1.0, rtol=1e-9)
    assert all(type(v).__module__ == "numpy" for v in head[-1].coefs_ + head[-1].intercepts_)


def test_method_strings_say_what_was_fitted(digits) -> None:
    X, _, y, _ = digits
    assert method_used(create_head("mlp", hidden=[32, 16], max_epochs=3).fit(X, y)).startswith(
        "mlp 64-32-16-10, dropout 0.2, ")
    for loss in ("supcon", "triplet", "contrastive"):
        method = method_used(create_head("siamese", loss=loss, dim=16, max_epochs=3).fit(X, y))
        assert method.startswith(f"siamese {loss}, linear 64-16, nearest prototype, "), method


def test_siamese_few_shot_runs_without_a_split() -> None:
    X, y = load_digits(return_X_y=True)
    few = np.concatenate([np.flatnonzero(y == k)[:3] for k in range(10)])  # 3 rows per class: no held-out part
    head = SiameseHead().fit(X[few], y[few])
    assert head.prototypes_.shape == (10, 128)
    np.testing.assert_allclose(np.linalg.norm(head.prototypes_, axis=1), 1.0, rtol=1e-9)
    assert (head.predict(X) == y).mean() > 0.6


@pytest.mark.parametrize(("estimator", "match"), [
    (MLPHead(hidden=()), "1 to 2 layer widths"),
    (MLPHead(hidden=(8, 8, 8)), "1 to 2 layer widths"),
    (MLPHead(dropout=1.0), "dropout"),
    (MLPHead(lr=0), "lr"),
    (MLPHead(batch_size=0), "batch_size"),
    (SiameseHead(loss="arcface"), "supcon, triplet, contrastive"),
    (SiameseHead(temperature=0), "temperature"),
    (SiameseHead(validation_fraction=1.0), "validation_fraction"),
])
def test_bad_parameters_are_named(estimator, match) -> None:
    X, y = load_digits(return_X_y=True)
    with pytest.raises(HeadParamError, match=match):
        estimator.fit(X[:40], y[:40])


@pytest.mark.parametrize("estimator", [MLPHead(), SiameseHead()])
def test_one_class_is_refused(estimator) -> None:
    with pytest.raises(HeadDataError, match="at least 2 classes"):
        estimator.fit(np.ones((5, 3)), np.zeros(5))


def test_param_grids_fit_the_pipelines() -> None:
    for name in ("mlp", "siamese"):
        head = create_head(name)
        head.set_params(**{key: values[-1] for key, values in param_grid(name).items()})


# --- save, load, package -------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [
    ("mlp", {}),
    ("mlp", {"hidden": [32, 16]}),
    ("siamese", {}),
    ("siamese", {"loss": "triplet", "hidden": [32], "standardize": True}),
])
def test_saved_and_packaged_heads_predict_what_the_fitted_head_does(name, params, digits, tmp_path) -> None:
    X, X_test, y, _ = digits
    head = create_head(name, **params).fit(X, y)
    path = save_head(head, tmp_path / "h.skops", {"head": name, "classes": [str(c) for c in head.classes_]})
    loaded, _ = load_head(path)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), head.predict_proba(X_test))
    session = ort.InferenceSession(head_to_onnx(loaded, X.shape[1]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"x": X_test})
    assert (label == head.predict(X_test)).mean() >= 0.999
    np.testing.assert_allclose(probabilities, head.predict_proba(X_test), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "siamese"])
def test_fit_package_predict_through_the_cli(name, pixels, tmp_path) -> None:
    head, classifier = tmp_path / "h.skops", tmp_path / "c.onnx"
    assert main(["fit", str(pixels / "store"), "--head", name, "-o", str(head)]) == 0
    estimator, meta = load_head(head)
    assert main(["package", str(pixels / "p.onnx"), str(head), "-o", str(classifier)]) == 0
    assert main(["predict", str(pixels / "p.onnx"), str(head), str(pixels / "pngs"), "-o", str(tmp_path / "a.csv"),
                 "--device", "cpu"]) == 0
    assert main(["predict", str(classifier), str(pixels / "pngs"), "-o", str(tmp_path / "b.csv"),
                 "--device", "cpu"]) == 0
    a, b = list(csv.DictReader(open(tmp_path / "a.csv"))), list(csv.DictReader(open(tmp_path / "b.csv")))
    assert len(a) == 4 and [(r["path"], r["label"]) for r in a] == [(r["path"], r["label"]) for r in b]
    probs = [c for c in a[0] if c.startswith("prob_")]
    np.testing.assert_allclose([[float(r[c]) for c in probs] for r in b], [[float(r[c]) for c in probs] for r in a],
                               atol=1e-4, rtol=0)
    X = open_store(pixels / "store").load(meta["layers"]).matrix(meta["layers"]).astype(np.float32)
    session = ort.InferenceSession(head_to_onnx(estimator, X.shape[1]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"x": X})
    assert (label == estimator.predict(X)).mean() >= 0.999
    np.testing.assert_allclose(probabilities, estimator.predict_proba(X), atol=1e-4, rtol=0)
