"""Say which method a fitted head actually used, for reports.

Some heads choose at fit time (the ``svm`` head projects wide rows on principal components
and switches to a Nystroem approximation on large data; ``logreg`` picks ``C`` by cross-validation). :func:`method_used` walks a
fitted pipeline, ensemble or search and returns a short description.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

__all__ = ["method_used"]


def method_used(estimator: BaseEstimator) -> str:
    """A short description of the method a fitted head used.

    Parameters
    ----------
    estimator : estimator
        A fitted head from :func:`heads.create_head` (a pipeline, an ensemble, a fitted
        ``GridSearchCV`` over one), or any fitted scikit-learn classifier.

    Returns
    -------
    str
        The fitted final estimator's ``method_`` where it has one: ``"pca(256)+exact"`` or
        ``"nystroem(1000)+linear"`` (``svm``), ``"C=0.001 (3-fold sweep of 7 on 20000
        rows)"`` (``logreg``), ``"cosine k=20, temperature 0.07"`` (``knn``),
        ``"xgboost hist, 80 rounds, depth 6, eta 0.3"`` (``xgb``);
        ``"voting(logreg: ..., nb: ..., knn: ...)"`` for ensembles; otherwise the final
        estimator's class name (``"GaussianNB"``).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from heads.registry import create_head
    >>> X, y = load_iris(return_X_y=True)
    >>> method_used(create_head("svm").fit(X, y))
    'exact'
    """
    if isinstance(estimator, Pipeline):
        return method_used(estimator.steps[-1][1])
    check_is_fitted(estimator)
    best = getattr(estimator, "best_estimator_", None)
    if best is not None:  # a fitted GridSearchCV / RandomizedSearchCV
        return method_used(best)
    method = getattr(estimator, "method_", None)
    if isinstance(method, str):
        return method
    alphas = getattr(estimator, "alphas", None)
    if alphas is not None and hasattr(estimator, "alpha_"):  # RidgeCV: the ridge head's sweep
        return f"alpha={estimator.alpha_:g} (leave-one-out over {len(alphas)})"
    members = getattr(estimator, "named_estimators_", None)
    if members is not None:  # VotingClassifier / StackingClassifier
        kind = "voting" if hasattr(estimator, "voting") else "stacking"
        inner = ", ".join(f"{name}: {method_used(est)}" for name, est in members.items()
                          if est != "drop")
        return f"{kind}({inner})"
    return type(estimator).__name__
