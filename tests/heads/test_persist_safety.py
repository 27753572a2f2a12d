"""A head file is hostile input: only the types our heads are made of load, nothing else is built."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import skops.io as sio
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, normalize
from sklearn.utils._testing import assert_run_python_script_without_output

from featurestore._atomic import file_sha256
from heads import UnsafeHeadError, load_head
from heads.bench import build_estimator
from heads.persist import TRUSTED_FUNCTIONS, TRUSTED_TYPES, save_head, sidecar_path
from heads.registry import list_heads, trusted_head_types

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featurestore", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def write_old_format(estimator, path: Path, metadata: dict) -> Path:
    """A head file as ``save_head`` wrote it before heads carried their facts: the estimator alone."""
    sio.dump(estimator, path)
    sidecar_path(path).write_text(json.dumps({**metadata, "head_sha256": file_sha256(path)}))
    return path


def _hostile_pipeline(marker: Path) -> Pipeline:
    """numpy.full_like fills the features with a script, numpy.take picks it, a scikit-learn test helper runs it."""
    script = f"open({str(marker)!r}, 'w').write('ran')"
    X, y = np.zeros((4, 64)), np.array([0, 1, 2, 0])
    pipe = Pipeline([
        ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": script, "dtype": f"<U{len(script)}"})),
        ("pick", FunctionTransformer(np.take, kw_args={"indices": 0})),
        ("run", FunctionTransformer(assert_run_python_script_without_output)),
        ("nb", GaussianNB()),
    ])
    for _, step in pipe.steps[:3]:
        step.fit(X)
    pipe.steps[3][1].fit(X, y)
    return pipe


def test_the_crafted_head_would_run_its_script_if_its_functions_were_trusted(tmp_path):
    """The hostile file of the next test really is one: trusted by name, predicting runs the script."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.skops"
    sio.dump(_hostile_pipeline(marker), path)
    loaded = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    with pytest.raises(ValueError):  # the script's result (None) is no feature matrix
        loaded.predict(np.zeros((1, 64)))
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_predict_refuses_a_head_that_would_run_a_script_before_building_anything(pixels, tmp_path, fmt):
    marker = tmp_path / "ran"
    head = tmp_path / "evil.skops"
    metadata = {"model_sha256": file_sha256(pixels / "p.onnx"), "layers": ["pixels"], "classes": ["0", "1", "2"],
                "fusion": "none", "head": "nb", "backbone": "pixels"}
    if fmt == "old":
        write_old_format(_hostile_pipeline(marker), head, metadata)
    else:
        save_head(_hostile_pipeline(marker), head, metadata)
    with pytest.raises(UnsafeHeadError, match="numpy.full_like.*numpy.take.*assert_run_python_script"):
        load_head(head)
    done = _cli("predict", pixels / "p.onnx", head, pixels / "pngs", "-o", tmp_path / "p.csv", "--device", "cpu")
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(head) in done.stderr and "outside the allowlist" in done.stderr
    done = _cli("package", pixels / "p.onnx", head, "-o", tmp_path / "c.onnx")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert not marker.exists()
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("func", [np.full_like, np.exp, scipy.special.expit, normalize],
                         ids=["numpy.full_like", "numpy.exp", "scipy.special.expit", "sklearn.normalize"])
def test_a_head_holding_any_library_function_is_refused(tmp_path, func):
    """numpy's and scipy's ufuncs too, which skops trusts by default."""
    X, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = Pipeline([("f", FunctionTransformer(func, kw_args={"fill_value": 0} if func is np.full_like else None)),
                         ("nb", GaussianNB())]).fit(X, y)
    head = save_head(pipe, tmp_path / "f.skops", {"classes": ["a", "b", "c"]})
    with pytest.raises(UnsafeHeadError, match="outside the allowlist") as caught:
        load_head(head)
    assert f".{func.__name__}" in str(caught.value)


def test_the_allowlist_names_classes_only():
    for name in TRUSTED_TYPES:
        module, _, attr = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), attr), type), name
    assert not any(name.startswith(("numpy.", "scipy.", "sklearn.")) for name in TRUSTED_FUNCTIONS)


def test_a_node_stored_as_a_method_or_an_unknown_loader_is_refused(tmp_path):
    import zipfile

    head = save_head(Pipeline([("nb", GaussianNB())]).fit(np.eye(3), [0, 1, 2]), tmp_path / "h.skops",
                     {"classes": ["a", "b", "c"]})
    forged = tmp_path / "forged.skops"
    with zipfile.ZipFile(head) as source, zipfile.ZipFile(forged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "schema.json":
                data = data.replace(b'"ObjectNode"', b'"ConstructorFromReduceNode"', 1)
            target.writestr(info, data)
    sidecar_path(forged).write_text(json.dumps({"classes": ["a", "b", "c"],
                                                "head_sha256": hashlib.sha256(forged.read_bytes()).hexdigest()}))
    with pytest.raises(UnsafeHeadError, match="stored as ConstructorFromReduceNode"):
        load_head(forged)


def _saved_variants():
    yield from ((head, "none", {}, False) for head in list_heads())
    yield from ((head, "none", {}, True) for head in list_heads() if head != "ensemble")
    yield "svm", "none", {"exact_max_samples": 20, "n_components": 10}, False  # the Nystroem path
    yield "ensemble", "none", {"method": "stacking"}, False
    yield "ensemble", "none", {"method": "stacking",
                               "members": ["svm", "linear-svm", "tree", "forest", "xgb", "knn"]}, False
    yield "ensemble", "none", {"members": ["tree", "forest", "xgb", "knn", "nb", "logreg"]}, False
    for fusion in ("concat", "concat-l2", "concat-power", "attention"):
        yield "nb", fusion, {}, False


@pytest.mark.parametrize("classes", [2, 3])
def test_every_registered_head_saves_and_loads_under_the_allowlist(tmp_path, classes):
    """Fits each registered head, fusion and search and loads it back: a type the list misses fails here."""
    rng = np.random.default_rng(classes)
    y = np.arange(60) % classes
    X = (rng.normal(size=(60, 9)) + y[:, None]).astype(np.float32)
    seen = set()
    for i, (head, fusion, params, search) in enumerate(_saved_variants()):
        estimator = build_estimator(head, fusion, [4, 5], 0, search, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(X, y)
        path = save_head(estimator, tmp_path / f"{i}.skops", {"head": head, "fusion": fusion,
                                                               "classes": [f"c{k}" for k in range(classes)]})
        seen.update(sio.get_untrusted_types(file=path))
        loaded, _ = load_head(path)
        np.testing.assert_array_equal(loaded.predict(X), estimator.predict(X), err_msg=f"{head} {fusion} {params}")
    assert seen <= TRUSTED_TYPES | TRUSTED_FUNCTIONS | trusted_head_types()  # mlp, siamese: registered with their heads
