"""An RBF support-vector classifier that stays affordable on large feature sets.

Exact kernel SVMs cost between O(n^2) and O(n^3) to fit and O(n_support) per
prediction, so above ``exact_max_samples`` rows :class:`ScalableSVC` fits a linear SVM
on a Nystroem approximation of the same RBF kernel instead (Williams & Seeger, 2001):
``n_components`` landmark rows drawn at random give an explicit feature map whose inner
products approximate the kernel. The fitted ``method_`` says which path was taken.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import HeadParamError

__all__ = ["ScalableSVC"]


class ScalableSVC(ClassifierMixin, BaseEstimator):
    """RBF SVM, exact up to ``exact_max_samples`` rows, Nystroem + linear SVM above.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, for both paths.
    gamma : {"scale", "auto"} or float, default="scale"
        RBF kernel coefficient, as in :class:`sklearn.svm.SVC`: ``"scale"`` is
        ``1 / (n_features * X.var())`` computed from the training data, ``"auto"`` is
        ``1 / n_features``. The Nystroem path computes the same value.
    exact_max_samples : int, default=10_000
        Largest training set fitted with the exact kernel SVM; larger ones use the
        approximation.
    n_components : int, default=1000
        Nystroem landmarks (clipped to the number of rows).
    max_iter : int, default=5000
        Iteration cap of the linear SVM on the Nystroem path.
    random_state : int or None, default=0
        Seeds the choice of landmarks and the linear solver.

    Attributes
    ----------
    estimator_ : sklearn.svm.SVC or sklearn.pipeline.Pipeline
        The fitted model: an ``SVC`` or a ``Nystroem`` -> ``LinearSVC`` pipeline.
    method_ : str
        ``"exact"`` or ``"nystroem(<n>)+linear"``.
    gamma_ : float
        The kernel coefficient actually used.
    n_iter_ : int or ndarray
        Solver iterations (per class pair for the exact path).
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> ScalableSVC(exact_max_samples=100, n_components=50).fit(X, y).method_
    'nystroem(50)+linear'
    """

    def __init__(
        self,
        C: float = 1.0,
        gamma: Literal["scale", "auto"] | float = "scale",
        exact_max_samples: int = 10_000,
        n_components: int = 1000,
        max_iter: int = 5000,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.gamma = gamma
        self.exact_max_samples = exact_max_samples
        self.n_components = n_components
        self.max_iter = max_iter
        self.random_state = random_state

    def _check_params(self) -> None:
        checks = [
            ("C", isinstance(self.C, Real) and self.C > 0, "a float > 0"),
            ("exact_max_samples", isinstance(self.exact_max_samples, Integral)
             and self.exact_max_samples >= 0, "an int >= 0"),
            ("n_components", isinstance(self.n_components, Integral)
             and self.n_components >= 1, "an int >= 1"),
            ("gamma", self.gamma in ("scale", "auto")
             or (isinstance(self.gamma, Real) and not isinstance(self.gamma, str)
                 and self.gamma > 0), "'scale', 'auto' or a float > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise HeadParamError(
                    f"ScalableSVC parameter {name}={getattr(self, name)!r} is invalid; "
                    f"expected {expected}"
                )

    def _gamma_value(self, X: np.ndarray) -> float:
        if self.gamma == "auto":
            return 1.0 / X.shape[1]
        if self.gamma == "scale":
            var = float(X.var())
            return 1.0 / (X.shape[1] * var) if var != 0 else 1.0
        return float(self.gamma)

    def fit(self, X: np.ndarray, y: np.ndarray) -> ScalableSVC:
        """Fit the exact or the approximate SVM, depending on the number of rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        ScalableSVC
            The fitted estimator.

        Raises
        ------
        HeadParamError
            If a parameter has an invalid value.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.gamma_ = self._gamma_value(X)
        if X.shape[0] <= self.exact_max_samples:
            self.estimator_ = SVC(C=self.C, kernel="rbf", gamma=self.gamma_)
            self.method_ = "exact"
        else:
            n_components = min(self.n_components, X.shape[0])
            self.estimator_ = Pipeline([
                ("nystroem", Nystroem(kernel="rbf", gamma=self.gamma_,
                                      n_components=n_components,
                                      random_state=self.random_state)),
                ("linear", LinearSVC(C=self.C, dual="auto", max_iter=self.max_iter,
                                     random_state=self.random_state)),
            ])
            self.method_ = f"nystroem({n_components})+linear"
        self.estimator_.fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_iter_ = self.estimator_[-1].n_iter_ if self.method_ != "exact" else (
            self.estimator_.n_iter_)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """One-vs-rest decision values (``(n_samples,)`` for two classes).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X)
