"""The regression heads and their classification twins share one implementation of what they have
in common (parameter checks, the kernel path, booster training and transport), each error still
naming the class the user built."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from heads._knn import CosineKNN
from heads._knn_reg import KNNRegressor
from heads._svm import ScalableKernel, ScalableSVC
from heads._svr import ScalableSVR
from heads._xgb import BoosterHead, XGBHead
from heads._xgb_reg import XGBRegressorHead
from heads.errors import HeadParamError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(120, 12)).astype(np.float32)
Y_CLASS = (X[:, 0] > 0).astype(int)
Y_VALUE = X[:, 0] * 2.0 + X[:, 1]


@pytest.mark.parametrize("bad, message", [
    (ScalableSVC(C=-1), "ScalableSVC parameter C=-1 is invalid"),
    (ScalableSVR(C=-1), "ScalableSVR parameter C=-1 is invalid"),
    (ScalableSVR(epsilon=-1), "ScalableSVR parameter epsilon=-1 is invalid"),
    (XGBHead(max_bin=1), "XGBHead parameter max_bin=1 is out of range; see XGBHead's docstring"),
    (XGBRegressorHead(max_bin=1), "XGBRegressorHead parameter max_bin=1 is out of range; see XGBRegressorHead's"),
    (CosineKNN(n_neighbors=0), "CosineKNN n_neighbors=0 must be an int >= 1"),
    (KNNRegressor(weights="temperature"), "KNNRegressor weights='temperature'; valid: uniform, distance"),
])
def test_each_twin_names_itself_in_its_errors(bad, message):
    with pytest.raises(HeadParamError, match=message):
        bad.fit(X, Y_CLASS)


@pytest.mark.parametrize("head, y", [(ScalableSVC(max_dims=4, exact_max_samples=60, n_components=20), Y_CLASS),
                                     (ScalableSVR(max_dims=4, exact_max_samples=60, n_components=20), Y_VALUE)])
def test_both_kernel_machines_take_the_same_path(head, y):
    assert isinstance(head, ScalableKernel)
    head.fit(X, y)
    assert head.method_ == "pca(4)+nystroem(20)+linear" and head.estimator_.steps[0][0] == "pca"
    assert np.ndim(head.n_iter_) == 0 or len(head.n_iter_)


@pytest.mark.parametrize("head, y", [(XGBHead(n_estimators=5, n_jobs=1), Y_CLASS),
                                     (XGBRegressorHead(n_estimators=5, n_jobs=1), Y_VALUE)])
def test_both_boosters_travel_as_ubjson_and_predict_the_same_after(head, y):
    assert isinstance(head, BoosterHead)
    head.fit(X, y)
    assert head.method_ == "xgboost hist, 5 rounds, depth 6, eta " + ("0.3" if isinstance(head, XGBHead) else "0.1")
    assert isinstance(head.__getstate__()["booster_"], bytes)
    again = pickle.loads(pickle.dumps(head))
    assert np.array_equal(again.predict(X), head.predict(X))
