"""Each multilabel head fitted on 60,000 rows x 2,000 features, against the 5-minute budget.

``python -m benchmarks.head_fit_multilabel [--quick] [--synthetic ROWSxFEATURES] [--stores PATH[:LAYER],... --task NAME]
[--heads ...]``

``benchmarks.head_fit`` with ``--task-type multilabel`` (see there): ``tree`` and ``forest`` (native
multi-output) and ``logreg``, ``nb``, ``xgb`` and ``knn`` (one-vs-rest) fitted one at a time on a
synthetic store's 7-label task, scored by test mean average precision; the target
``heads.fit_budget.multilabel`` is the slowest fit.
"""

from __future__ import annotations

from . import head_fit

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``benchmarks.head_fit`` for the multilabel heads; the exit status."""
    return head_fit.main(argv, task_type="multilabel")


if __name__ == "__main__":
    raise SystemExit(main())
