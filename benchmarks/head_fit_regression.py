"""Each regression head fitted on 60,000 rows x 2,000 features, against the 5-minute budget.

``python -m benchmarks.head_fit_regression [--quick] [--synthetic ROWSxFEATURES] [--stores PATH[:LAYER],... --task NAME]
[--heads ...]``

``benchmarks.head_fit`` with ``--task-type regression`` (see there): ``ridge``, ``svr``, ``tree``,
``forest``, ``bayes``, ``xgb`` and ``knn`` fitted one at a time on a synthetic store's regression
task, scored by test R²; the target ``heads.fit_budget.regression`` is the slowest fit.
"""

from __future__ import annotations

from . import head_fit

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``benchmarks.head_fit`` for the regression heads; the exit status."""
    return head_fit.main(argv, task_type="regression")


if __name__ == "__main__":
    raise SystemExit(main())
