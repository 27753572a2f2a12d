"""Say which method a fitted head actually used, for reports.

Some heads choose at fit time (the ``svm`` head switches to a Nystroem approximation
on large data; ``logreg`` picks ``C`` by cross-validation). :func:`method_used` walks a
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
        ``"exact"`` or ``"nystroem(1000)+linear"`` for the ``svm`` head, ``"C=0.1 (3-fold
        sweep of 7)"`` for ``logreg``, ``"voting(logreg: ..., nb: ..., knn: ...)"`` for
        ensembles, otherwise the final estimator's class name.

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
    members = getattr(estimator, "named_estimators_", None)
    if members is not None:  # VotingClassifier / StackingClassifier
        kind = "voting" if hasattr(estimator, "voting") else "stacking"
        inner = ", ".join(f"{name}: {method_used(est)}" for name, est in members.items()
                          if est != "drop")
        return f"{kind}({inner})"
    return type(estimator).__name__
