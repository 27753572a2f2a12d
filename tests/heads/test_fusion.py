"""Tests of the fusion transformers: :class:`ConcatFusion` and :class:`AttentionFusion`."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_score,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from heads.attention import AttentionFusion
from heads.fusion import ConcatFusion

torch = pytest.importorskip("torch")

REPO = Path(__file__).parents[2]
SEED = 0
WIDTHS = (16, 32, 64)
SIGNAL = 1  # index of the block that carries the class signal


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Run this module's BLAS calls (LogisticRegression) on one thread, then restore.

    The problems here are small: on a shared 2-core box, a second OpenBLAS worker
    waiting for a core turns each small call into a scheduler time slice (a
    LogisticRegression fit went from 0.2 s to 24 s). The estimators under test
    do not rely on this: AttentionFusion caps its own OpenMP threads.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def make_blocks(seed: int, n: int = 3000, n_classes: int = 4, sep: float = 0.35):
    """Three blocks side by side; only block ``SIGNAL`` has class-dependent means."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    blocks = [rng.normal(size=(n, w)) for w in WIDTHS]
    centers = rng.normal(size=(n_classes, WIDTHS[SIGNAL])) * sep
    blocks[SIGNAL] += centers[y]
    return np.hstack(blocks), y


def signal_columns() -> slice:
    start = sum(WIDTHS[:SIGNAL])
    return slice(start, start + WIDTHS[SIGNAL])


# --------------------------------------------------------------- scikit-learn contract
@parametrize_with_checks(
    [
        ConcatFusion(),
        ConcatFusion(norm="l2"),
        AttentionFusion(),
        AttentionFusion(mode="scalar_mix"),
    ]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_importing_attention_does_not_import_torch():
    code = "import sys, heads.attention, heads.fusion; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "importing heads.attention imported torch"


# ------------------------------------------------------------------------ ConcatFusion
@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ([2, 2], "sum to 4, but X has 5 features"),
        ([2, 0, 3], "positive int"),
        ([2.5, 2.5], "positive int"),
        ([], "empty"),
        ("23", "sequence of positive ints"),
    ],
)
def test_concat_rejects_bad_blocks(blocks, match):
    X = np.ones((4, 5))
    with pytest.raises(ValueError, match=match):
        ConcatFusion(blocks=blocks).fit(X)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1.0]}, "1 weight"),
        ({"weights": [1.0, -1.0]}, "non-negative"),
        ({"weights": [1.0, np.nan]}, "finite"),
        ({"norm": "max"}, "norm must be one of"),
    ],
)
def test_concat_rejects_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConcatFusion(blocks=[2, 3], **kwargs).fit(np.ones((4, 5)))


def test_concat_standardize_uses_training_statistics():
    rng = np.random.default_rng(SEED)
    X = rng.normal(3.0, 2.0, size=(50, 6))
    fuse = ConcatFusion(blocks=[2, 4]).fit(X)
    Xt = fuse.transform(X)
    np.testing.assert_allclose(Xt.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Xt.std(0), 1, rtol=1e-12)
    np.testing.assert_allclose(fuse.transform(X[:5] + 1.0)[:, 0], Xt[:5, 0] + 1.0 / fuse.scale_[0])
    assert fuse.blocks_ == (2, 4) and fuse.n_features_in_ == 6


def test_concat_l2_gives_unit_norm_blocks():
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(20, 7))
    X[3, 2:] = 0.0  # a row that is zero in the second block stays zero
    Xt = ConcatFusion(blocks=[2, 5], norm="l2").fit_transform(X)
    np.testing.assert_allclose(np.linalg.norm(Xt[:, :2], axis=1), 1.0, rtol=1e-12)
    norms = np.linalg.norm(Xt[:, 2:], axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-12)
    assert norms[3] == 0.0


@pytest.mark.parametrize("norm", ["none", "standardize", "l2"])
def test_concat_weights_multiply_blocks(norm):
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(30, 9))
    plain = ConcatFusion(blocks=[3, 2, 4], norm=norm).fit_transform(X)
    weighted = ConcatFusion(blocks=[3, 2, 4], norm=norm, weights=[2.0, 0.0, 0.5]).fit_transform(X)
    np.testing.assert_allclose(weighted, plain * np.repeat([2.0, 0.0, 0.5], [3, 2, 4]))


def test_concat_none_keeps_values_and_float32():
    X = np.random.default_rng(SEED).normal(size=(10, 4)).astype(np.float32)
    Xt = ConcatFusion(norm="none").fit_transform(X)
    assert Xt.dtype == np.float32
    np.testing.assert_array_equal(Xt, X)
    assert ConcatFusion().fit_transform(X.astype(np.float64)).dtype == np.float64


def test_concat_in_pipeline_and_cv_fits_inside_each_fold():
    X, y = make_blocks(SEED, n=600)
    X[:, :16] *= 100.0  # a loud noise block: the fold's own statistics must tame it
    pipe = Pipeline([("fuse", ConcatFusion(blocks=list(WIDTHS))), ("clf", LogisticRegression())])
    cv = StratifiedKFold(3, shuffle=True, random_state=SEED)
    scores = cross_val_score(pipe, X, y, cv=cv)
    print(f"seed={SEED} ConcatFusion+LogisticRegression cv accuracies={np.round(scores, 3)}")
    assert scores.min() > 0.5  # chance is 0.25
    result = cross_validate(pipe, X, y, cv=cv, return_estimator=True, return_indices=True)
    for fitted, train in zip(result["estimator"], result["indices"]["train"]):
        np.testing.assert_allclose(fitted.named_steps["fuse"].mean_, X[train].mean(0))
    assert clone(pipe).set_params(fuse__norm="l2").fit(X, y).score(X, y) > 0.5


# --------------------------------------------------------------------- AttentionFusion
@pytest.fixture(scope="module")
def synthetic():
    X, y = make_blocks(SEED)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=SEED, stratify=y)
    scaler = StandardScaler().fit(Xtr[:, signal_columns()])
    base = LogisticRegression(max_iter=2000).fit(scaler.transform(Xtr[:, signal_columns()]), ytr)
    base_acc = base.score(scaler.transform(Xte[:, signal_columns()]), yte)
    return Xtr, Xte, ytr, yte, base_acc


@pytest.mark.parametrize("mode", ["attention", "scalar_mix"])
def test_attention_finds_the_signal_block(synthetic, mode):
    """Product requirement: the weight goes to the one informative block, and the
    fused vector is as good as that block alone."""
    Xtr, Xte, ytr, yte, base_acc = synthetic
    fuse = AttentionFusion(blocks=list(WIDTHS), mode=mode, random_state=SEED).fit(Xtr, ytr)
    clf = LogisticRegression(max_iter=2000).fit(fuse.transform(Xtr), ytr)
    acc = clf.score(fuse.transform(Xte), yte)
    weights = fuse.attention_weights_
    print(
        f"seed={SEED} mode={mode} weights={np.round(weights, 3)} epochs={fuse.n_epochs_} "
        f"fused_acc={acc:.3f} signal_block_acc={base_acc:.3f}"
    )
    assert weights.shape == (3,)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[SIGNAL] > 0.8
    assert acc >= base_acc - 0.02


def test_attention_is_deterministic_and_leaves_torch_state_alone():
    X, y = make_blocks(SEED, n=400)
    rng_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    first = AttentionFusion(blocks=list(WIDTHS), dim=16, n_heads=2, random_state=3).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    second = AttentionFusion(blocks=list(WIDTHS), dim=16, n_heads=2, random_state=3).fit(X, y)
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    np.testing.assert_array_equal(first.attention_weights_, second.attention_weights_)
    other = AttentionFusion(blocks=list(WIDTHS), dim=16, n_heads=2, random_state=4).fit(X, y)
    assert not np.array_equal(first.transform(X), other.transform(X))


def test_attention_fits_inside_cv_folds():
    X, y = make_blocks(SEED, n=900)
    pipe = Pipeline(
        [
            ("fuse", AttentionFusion(blocks=list(WIDTHS), dim=16, n_heads=2)),
            ("clf", LogisticRegression()),
        ]
    )
    cv = StratifiedKFold(3, shuffle=True, random_state=SEED)
    result = cross_validate(pipe, X, y, cv=cv, return_estimator=True, return_indices=True)
    print(f"seed={SEED} AttentionFusion+LogisticRegression cv accuracies={result['test_score']}")
    assert result["test_score"].min() > 0.5  # chance is 0.25
    for fitted, train in zip(result["estimator"], result["indices"]["train"]):
        fuse = fitted.named_steps["fuse"]
        np.testing.assert_allclose(fuse.mean_, X[train].mean(0))
        assert fuse.attention_weights_[SIGNAL] > 0.5
    scores = cross_val_score(clone(pipe).set_params(fuse__mode="scalar_mix"), X, y, cv=cv)
    assert scores.min() > 0.5


def test_attention_string_labels_and_attributes():
    X, y = make_blocks(SEED, n=300, n_classes=3)
    labels = np.array(["cat", "dog", "eel"])[y]
    fuse = AttentionFusion(blocks=list(WIDTHS), dim=8, n_heads=2, max_epochs=5).fit(X, labels)
    np.testing.assert_array_equal(fuse.classes_, ["cat", "dog", "eel"])
    out = fuse.transform(X)
    assert out.shape == (300, 8) and out.dtype == np.float32
    assert fuse.blocks_ == WIDTHS and fuse.n_features_in_ == sum(WIDTHS)
    assert 1 <= fuse.n_epochs_ <= 5
    assert list(fuse.get_feature_names_out())[:2] == ["attentionfusion0", "attentionfusion1"]
    restored = pickle.loads(pickle.dumps(fuse))
    np.testing.assert_array_equal(restored.transform(X), out)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blocks": [16, 32]}, "sum to 48, but X has 112 features"),
        ({"dim": 10, "n_heads": 4}, "not divisible"),
        ({"mode": "mean"}, "mode must be one of"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"lr": 0.0}, "lr must be"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_attention_rejects_bad_params(kwargs, match):
    X, y = make_blocks(SEED, n=40)
    params = {"blocks": list(WIDTHS), **kwargs}
    with pytest.raises(ValueError, match=match):
        AttentionFusion(**params).fit(X, y)


def test_attention_needs_two_classes():
    X, _ = make_blocks(SEED, n=40)
    with pytest.raises(ValueError, match="at least 2 classes"):
        AttentionFusion(blocks=list(WIDTHS)).fit(X, np.zeros(40, dtype=int))


def test_attention_head_saves_as_numpy_and_predicts_the_same(tmp_path):
    """A head with attention fusion saves with skops (no torch type in the file) and loads back exact."""
    from heads.persist import load_head, save_head

    X, y = make_blocks(5, n=600)
    head = Pipeline([("fuse", AttentionFusion(blocks=list(WIDTHS), max_epochs=5, random_state=0)),
                     ("clf", LogisticRegression(max_iter=200))]).fit(X, y)
    path = save_head(head, tmp_path / "attention.skops", {"fusion": "attention"})
    import skops.io as sio

    assert not [t for t in sio.get_untrusted_types(file=path) if t.startswith("torch")]
    loaded, meta = load_head(path)
    assert meta == {"fusion": "attention", "head_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert "module_" not in vars(loaded.named_steps["fuse"])
    np.testing.assert_array_equal(loaded.predict_proba(X[:50]), head.predict_proba(X[:50]))
    np.testing.assert_array_equal(loaded.named_steps["fuse"].attention_weights_,
                                  head.named_steps["fuse"].attention_weights_)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(head)).predict(X[:50]), head.predict(X[:50]))
