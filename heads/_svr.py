"""Support vector regression that stays within minutes on 60,000 rows: :class:`ScalableSVR`.

As the ``svm`` classifier (:class:`heads._svm.ScalableSVC`) does, through the same code
(:class:`heads._svm.ScalableKernel`), it projects wide rows on principal components, solves the
exact RBF problem up to ``exact_max_samples`` rows and a Nystroem map followed by a linear SVR above. The target is standardised inside, so ``C`` and
``epsilon`` mean the same whatever the target's unit (an angle in degrees, a price); the
prediction is mapped back, and the ONNX converter folds that map into the regressor's
coefficients.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.pipeline import Pipeline
from sklearn.svm import SVR, LinearSVR
from sklearn.utils.validation import check_is_fitted, validate_data

from ._svm import ScalableKernel, solver_iterations

__all__ = ["ScalableSVR", "scalable_svr_onnx"]


class ScalableSVR(RegressorMixin, ScalableKernel):
    """RBF support vector regression: exact up to ``exact_max_samples`` rows, Nystroem + linear above.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength.
    epsilon : float, default=0.1
        Width of the insensitive tube, in standard deviations of the training target.
    gamma : {'scale', 'auto'} or float, default='scale'
        RBF width, as :class:`~sklearn.svm.SVR` reads it (of the projected rows).
    max_dims : int or None, default=256
        Rows wider than this are projected on this many principal components first.
    exact_max_samples : int, default=10_000
        Above this many rows, a Nystroem map of ``n_components`` and a linear SVR replace the
        exact solver (whose cost grows with the square of the rows).
    n_components : int, default=1000
        Nystroem components.
    max_iter : int, default=5000
        Iterations of the linear solver.
    random_state : int or None, default=0
        Seeds the PCA and the Nystroem sample.

    Attributes
    ----------
    estimator_ : estimator
        ``[PCA ->] SVR`` or ``[PCA ->] Nystroem -> LinearSVR``, fitted on the standardised target.
    y_mean_, y_scale_ : float
        The target's mean and standard deviation (1 for a constant target).
    gamma_ : float
    n_iter_ : int
        Solver iterations.
    method_ : str
        ``"exact"``, ``"pca(256)+nystroem(1000)+linear"``, ...
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> X, y = load_diabetes(return_X_y=True)
    >>> ScalableSVR().fit(X, y).method_
    'exact'
    """

    def __init__(
        self,
        C: float = 1.0,
        epsilon: float = 0.1,
        gamma: Literal["scale", "auto"] | float = "scale",
        max_dims: int | None = 256,
        exact_max_samples: int = 10_000,
        n_components: int = 1000,
        max_iter: int = 5000,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.max_dims = max_dims
        self.exact_max_samples = exact_max_samples
        self.n_components = n_components
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> ScalableSVR:
        """Fit the exact or the approximate SVR, depending on the number of rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        ScalableSVR
            The fitted estimator.

        Raises
        ------
        HeadParamError
            If a parameter has an invalid value.
        """
        self._check_params([
            ("epsilon", isinstance(self.epsilon, Real) and self.epsilon >= 0, "a float >= 0"),
            ("max_iter", isinstance(self.max_iter, Integral) and self.max_iter >= 1, "an int >= 1"),
        ])
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_ = float(y.mean())
        scale = float(y.std())
        self.y_scale_ = scale if scale > 0 else 1.0
        target = (y - self.y_mean_) / self.y_scale_
        model = self._fit_kernel(
            X, target, lambda gamma: SVR(C=self.C, epsilon=self.epsilon, kernel="rbf", gamma=gamma),
            lambda: LinearSVR(C=self.C, epsilon=self.epsilon, loss="squared_epsilon_insensitive", dual="auto",
                              max_iter=self.max_iter, random_state=self.random_state), "svr")
        self.n_iter_ = solver_iterations(model)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X) * self.y_scale_ + self.y_mean_


def _unscaled(model: SVR | LinearSVR, mean: float, scale: float) -> SVR | LinearSVR:
    """A copy of a fitted (linear) SVR predicting ``scale * prediction + mean``."""
    model = copy.deepcopy(model)
    if isinstance(model, SVR):
        model.dual_coef_ = model.dual_coef_ * scale
        model._dual_coef_ = model.dual_coef_
        model.intercept_ = model.intercept_ * scale + mean
        model._intercept_ = model.intercept_
    else:
        model.coef_ = model.coef_ * scale
        model.intercept_ = model.intercept_ * scale + mean
    return model


def scalable_svr_onnx(head: ScalableSVR) -> list[BaseEstimator]:
    """The ONNX converter of a fitted :class:`ScalableSVR`: its model's steps, the last one's coefficients
    multiplied by the target's scale and its intercept shifted by its mean."""
    steps = [step for _, step in head.estimator_.steps] if isinstance(head.estimator_, Pipeline) \
        else [head.estimator_]
    last = steps.pop()
    if isinstance(last, Pipeline):  # Nystroem -> LinearSVR
        steps.append(last[0])
        last = last[-1]
    return [*steps, _unscaled(last, head.y_mean_, head.y_scale_)]
