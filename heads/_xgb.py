"""XGBoost gradient-boosted trees as a plain scikit-learn classifier.

:class:`XGBHead` encodes any labels (strings, arbitrary integers) to ``0..K-1`` itself,
trains a booster with ``xgboost.train`` on a ``QuantileDMatrix`` (``hist`` method), and
saves to / loads from XGBoost's own JSON or UBJSON format with the class labels and
hyper-parameters stored as booster attributes, so no pickle is needed to ship it.
"""

from __future__ import annotations

import json
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import HeadDataError, HeadModelFileError, HeadParamError
from .onnx_graph import Skl2onnx

__all__ = ["XGBHead", "xgb_head_onnx"]

_ATTR_CLASSES = "heads.xgb.classes"
_ATTR_DTYPE = "heads.xgb.classes_dtype"
_ATTR_PARAMS = "heads.xgb.params"


class BoosterHead(BaseEstimator):
    """What :class:`XGBHead` and :class:`heads._xgb_reg.XGBRegressorHead` share: their parameter
    checks, training a booster on a ``QuantileDMatrix``, its description, and the booster
    travelling in pickles and skops files as XGBoost's UBJSON bytes (checked when read), never
    as an xgboost object. A subclass sets ``n_estimators``, ``max_depth``, ``learning_rate``,
    ``max_bin``, ``subsample``, ``colsample_bytree``, ``n_jobs`` and ``random_state``."""

    def _check_params(self) -> None:
        checks = [
            ("n_estimators", isinstance(self.n_estimators, Integral) and self.n_estimators >= 1),
            ("max_depth", isinstance(self.max_depth, Integral) and self.max_depth >= 0),
            ("learning_rate", isinstance(self.learning_rate, Real) and self.learning_rate > 0),
            ("max_bin", isinstance(self.max_bin, Integral) and self.max_bin >= 2),
            ("subsample", isinstance(self.subsample, Real) and 0 < self.subsample <= 1),
            ("colsample_bytree", isinstance(self.colsample_bytree, Real) and 0 < self.colsample_bytree <= 1),
            ("n_jobs", self.n_jobs is None or isinstance(self.n_jobs, Integral)),
        ]
        name = type(self).__name__
        for param, ok in checks:
            if not ok:
                raise HeadParamError(f"{name} parameter {param}={getattr(self, param)!r} is out of range; "
                                     f"see {name}'s docstring for valid values")

    def _nthread(self) -> int | None:
        return self.n_jobs if self.n_jobs is not None and self.n_jobs > 0 else None

    def _train(self, X: np.ndarray, label: np.ndarray, params: dict[str, Any]) -> xgb.Booster:
        """``n_estimators`` rounds of ``params`` on ``X`` binned into ``max_bin`` histogram bins."""
        dtrain = xgb.QuantileDMatrix(X, label=label, max_bin=self.max_bin, nthread=self._nthread())
        return xgb.train(params, dtrain, num_boost_round=self.n_estimators, verbose_eval=False)

    def _describe(self) -> str:
        # the regressor has no tree_method parameter: it always grows hist trees
        return (f"xgboost {getattr(self, 'tree_method', 'hist')}, {self.n_estimators} rounds, "
                f"depth {self.max_depth}, eta {self.learning_rate:g}")

    def _booster_outputs(self, state: dict[str, Any]) -> int:
        """The class count a booster of this head's ``state`` is checked against (2: one output per row)."""
        return 2

    def __getstate__(self) -> dict[str, Any]:
        # The booster travels as XGBoost's own UBJSON bytes, so pickle and skops (whose
        # type allowlist then needs only heads.* and numpy) never see an xgboost object.
        state = dict(super().__getstate__())
        if isinstance(state.get("booster_"), xgb.Booster):
            state["booster_"] = bytes(state["booster_"].save_raw("ubj"))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.get("booster_")
        if isinstance(raw, (bytes, bytearray)):
            booster = xgb.Booster()
            booster.load_model(bytearray(raw))
            from ._xgb_check import check_booster

            check_booster(booster, n_classes=self._booster_outputs(state), where=f"<unpickled {type(self).__name__}>")
            state = {**state, "booster_": booster}
        super().__setstate__(state)


class XGBHead(ClassifierMixin, BoosterHead):
    """Gradient-boosted trees (XGBoost ``hist``) with labels encoded internally.

    Parameters
    ----------
    n_estimators : int, default=80
        Boosting rounds (one tree per class per round for more than two classes).
    max_depth : int, default=6
        Maximum tree depth.
    learning_rate : float, default=0.3
        Shrinkage (XGBoost ``eta``).
    max_bin : int, default=32
        Histogram bins per feature. Histograms are built over every feature whatever
        ``subsample``/``colsample_bytree`` say, so rounds, depth and bins set the cost.
    subsample : float, default=1.0
        Fraction of rows sampled per tree.
    colsample_bytree : float, default=1.0
        Fraction of features sampled per tree.
    n_jobs : int or None, default=None
        Threads; ``None`` lets XGBoost use all cores.
    random_state : int or None, default=0
        Seed of the row and column sampling.
    tree_method : str, default="hist"
        XGBoost tree method.

    Attributes
    ----------
    booster_ : xgboost.Booster
        The trained booster (also returned by :meth:`get_booster`).
    classes_ : ndarray of shape (n_classes,)
        The original labels; column ``k`` of :meth:`predict_proba` is ``classes_[k]``.
    method_ : str
        E.g. ``"xgboost hist, 80 rounds, depth 6, eta 0.3"``, for reports.
    n_classes_ : int
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> names = np.array(["setosa", "versicolor", "virginica"])[y]
    >>> head = XGBHead(n_estimators=10, n_jobs=1).fit(X, names)
    >>> head.predict(X[:2]).tolist()
    ['setosa', 'setosa']
    """

    def __init__(
        self,
        n_estimators: int = 80,
        max_depth: int = 6,
        learning_rate: float = 0.3,
        max_bin: int = 32,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        n_jobs: int | None = None,
        random_state: int | None = 0,
        tree_method: str = "hist",
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.tree_method = tree_method

    def _xgb_params(self, n_classes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "tree_method": self.tree_method,
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "max_bin": self.max_bin,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "seed": 0 if self.random_state is None else self.random_state,
            "verbosity": 0,
        }
        if self._nthread() is not None:
            params["nthread"] = self._nthread()
        if n_classes == 2:
            params["objective"] = "binary:logistic"
        else:
            params.update(objective="multi:softprob", num_class=n_classes)
        return params

    def fit(self, X: np.ndarray, y: np.ndarray) -> XGBHead:
        """Train the booster.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels of any hashable, sortable type.

        Returns
        -------
        XGBHead
            The fitted estimator.

        Raises
        ------
        HeadParamError
            If a parameter is out of range.
        HeadDataError
            If ``y`` holds a single class.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        self.n_classes_ = len(self.classes_)
        if self.n_classes_ < 2:
            raise HeadDataError(
                f"XGBHead needs at least 2 classes to train; got 1 class ({self.classes_[0]!r})"
            )
        self.booster_ = self._train(X, encoder.transform(y), self._xgb_params(self.n_classes_))
        self.method_ = self._describe()
        return self

    def get_booster(self) -> xgb.Booster:
        """The trained :class:`xgboost.Booster`.

        Returns
        -------
        xgboost.Booster
        """
        check_is_fitted(self)
        return self.booster_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, columns ordered as ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        proba = np.asarray(self.booster_.inplace_predict(X), dtype=np.float64)
        if self.n_classes_ == 2:
            proba = np.column_stack([1.0 - proba, proba])
        return proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _booster_outputs(self, state: dict[str, Any]) -> int:
        return len(state["classes_"])

    def save_model(self, path: str | os.PathLike[str]) -> None:
        """Write the booster in XGBoost's format, with labels and parameters inside.

        Parameters
        ----------
        path : str or os.PathLike
            ``.json`` writes JSON; any other suffix (``.ubj``) writes UBJSON.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the head is not fitted.
        HeadModelFileError
            If the class labels are not JSON-representable (str, int, float, bool).
        """
        check_is_fitted(self)
        try:
            classes = json.dumps(self.classes_.tolist())
            params = json.dumps(self.get_params())
        except TypeError as exc:
            raise HeadModelFileError(
                f"cannot save XGBHead to {os.fspath(path)!r}: labels or parameters are not "
                f"JSON-representable ({exc}); encode labels as str or int first"
            ) from exc
        booster = self.booster_.copy()
        booster.set_attr(**{_ATTR_CLASSES: classes, _ATTR_DTYPE: self.classes_.dtype.str,
                            _ATTR_PARAMS: params})
        booster.save_model(os.fspath(path))

    def load_model(self, path: str | os.PathLike[str]) -> XGBHead:
        """Load a model written by :meth:`save_model` into this head.

        The booster is checked for split and child indices out of range (a hand-edited
        file could otherwise crash prediction), but only load files you trust.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.json`` or ``.ubj`` file written by :meth:`save_model`.

        Returns
        -------
        XGBHead
            ``self``, fitted, with the saved hyper-parameters.

        Raises
        ------
        HeadModelFileError
            If the file lacks the head's metadata or its trees are inconsistent.
        """
        where = os.fspath(path)
        booster = xgb.Booster()
        try:
            booster.load_model(where)
        except xgb.core.XGBoostError as exc:
            raise HeadModelFileError(f"cannot read XGBoost model {where!r}: {exc}") from exc
        attrs = booster.attributes()
        if _ATTR_CLASSES not in attrs or _ATTR_PARAMS not in attrs:
            raise HeadModelFileError(
                f"{where!r} is an XGBoost model without XGBHead metadata (class labels); "
                "save it with XGBHead.save_model"
            )
        from ._xgb_check import check_booster  # the tree walk is only needed here

        classes = _decode_classes(json.loads(attrs[_ATTR_CLASSES]), attrs.get(_ATTR_DTYPE))
        check_booster(booster, n_classes=len(classes), where=where)
        self.set_params(**json.loads(attrs[_ATTR_PARAMS]))
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.n_features_in_ = booster.num_features()
        self.booster_ = booster
        self.method_ = self._describe()
        return self


def _decode_classes(values: list[Any], dtype: str | None) -> np.ndarray:
    if dtype is not None and np.dtype(dtype).kind in "biufU":
        return np.asarray(values, dtype=np.dtype(dtype))
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def xgb_head_onnx(head: XGBHead) -> list[Skl2onnx]:
    """The ONNX converter of a fitted :class:`XGBHead`: its booster as an XGBClassifier (classes 0..K-1),
    which onnxmltools converts; the packaged label is then mapped back to the head's classes.

    onnxmltools' converter is registered with skl2onnx on first use, as skl2onnx documents for XGBoost.
    """
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    update_registered_converter(xgb.XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    classifier = xgb.XGBClassifier()
    classifier.load_model(bytearray(head.booster_.save_raw("ubj")))
    classifier.head_classes_ = np.asarray(head.classes_)  # what the indices 0..K-1 stand for
    return [Skl2onnx(classifier)]
