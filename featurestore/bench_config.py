"""``BenchConfig``: what ``featurestore bench`` runs, one source of its flags and of the
``[[bench]]`` keys of a pipeline file.

It lives in the core (like :mod:`featurestore.export_config`) so that the command line knows
the options without importing scikit-learn; :mod:`heads.bench` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._config import option
from .errors import OptionsError

__all__ = ["DEFAULT_HEADS", "DEFAULT_REGRESSION_HEADS", "FUSIONS", "KNOWN_FUSIONS", "BenchConfig"]

DEFAULT_HEADS = ("logreg", "svm", "tree", "nb", "xgb")
#: What a regression task's cells run when ``heads`` is left at :data:`DEFAULT_HEADS`.
DEFAULT_REGRESSION_HEADS = ("ridge", "svr", "tree", "bayes", "xgb")
VIEW_USES = ("clean", "train", "average", "both")
FUSIONS = ("concat", "attention")
#: Every fusion a bench knows: the defaults, and concat with per-block L2 or power (signed square root,
#: then L2) normalisation instead of standardisation.
KNOWN_FUSIONS = FUSIONS + ("concat-l2", "concat-power")


@dataclass(frozen=True)
class BenchConfig:
    """What to run.

    Parameters
    ----------
    heads : tuple of str
        Registered head names, or ``("all",)`` (every registered head of the task's type, resolved by
        the bench). A regression task left at the defaults runs :data:`DEFAULT_REGRESSION_HEADS`.
    fusions : tuple of str
        Fusions of all of a store's layers (``concat``, ``attention``); empty for none.
    layers : tuple of str, optional
        Only these outputs (per store); default all.
    per_layer : bool, default=True
        One cell per single layer.
    views : {'clean', 'train', 'average', 'both'}, default='clean'
        How the stores' augmented views (``extract --views``) are used: not at all, as extra
        training rows (the same label as their image), averaged with the clean row at prediction,
        or both. Stores without views use their clean rows either way.
    select : bool, default=False
        Score every cell by ``cv``-fold CV on the training split only, choose the best, refit it
        on all training rows and score it once on the test split (the test split never
        influences the choice).
    join : bool, default=True
        With several stores, also one store of the images they share (matched by content key)
        whose layers are all of theirs, benched with every fusion.
    cv : int, default=5
        Folds when a store has no test split.
    search : bool, default=False
        Small grid search per head (its ``param_grid``), inside the training data.
    n_jobs : int, optional
        Cells run in parallel (default: the number of cores).
    seed : int, default=0
    max_train_rows : int, optional
        Stratified subsample of the training rows (for quick looks).
    shots : tuple of str, default=()
        The few-shot protocol (:mod:`heads.fewshot`): training images per class, ints or ``all``
        (sorted, ``all`` last); every cell is fitted on ``seeds`` seeded draws of each and scored on
        the whole test split. Empty: the usual bench.
    seeds : int, default=5
        Draws per number of shots.
    task : str, optional
        The store task whose targets the heads learn (``featurestore info`` lists them); default the
        labels. A regression task is scored by R², MAE and RMSE and selected by R²; a multilabel task
        by mean average precision, micro/macro F1 and subset accuracy, selected by mAP. Several tasks,
        comma-separated, are benched one after another over one load of the features.
    """

    heads: tuple[str, ...] = option(DEFAULT_HEADS, "comma-separated heads, or `all`", kind="list")
    fusions: tuple[str, ...] = option(FUSIONS, "fusions of all layers ('' for none)", kind="list")
    layers: tuple[str, ...] | None = option(None, "comma-separated layers to use, by output or layer name "
                                                  "(default: all)", kind="list")
    per_layer: bool = option(True, "skip the single-layer cells", kind="negated")
    views: str = option("clean", "augmented views (stores extracted with --views): clean (ignore them), train "
                                 "(extra training rows), average (average the predictions over them), both")
    select: bool = option(False, "choose the cell by CV on the training split only, then score it once on the "
                                 "test split", kind="switch")
    join: bool = option(True, "do not also bench several stores joined by content key (their layers fused)",
                        kind="negated")
    cv: int = option(5, "folds when a store has no test split (default 5)")
    search: bool = option(False, "small grid search per head", kind="switch")
    n_jobs: int | None = option(None, "cells in parallel (default: all cores; 1 for clean fit timings)",
                                flag="--jobs")
    seed: int = option(0, "seed of every random choice (default 0)")
    max_train_rows: int | None = option(None, "stratified subsample of the training rows")
    shots: tuple[str, ...] = option((), "few-shot protocol: training images per class, e.g. 1,5,10,all (each drawn "
                                        "--seeds times; the test split whole)", kind="list")
    seeds: int = option(5, "seeded draws per --shots value (default 5)")
    task: str | None = option(None, "the store task to learn (default: the labels), or several, comma-separated, "
                                    "over one load of the features; a regression task runs the regression heads "
                                    "(R2, MAE, RMSE), a multilabel one the multilabel heads (mAP, F1)")

    def __post_init__(self) -> None:
        heads = ("all",) if tuple(self.heads) in (("all",), ("ALL",)) else tuple(self.heads)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "fusions", tuple(self.fusions))
        unknown = [f for f in self.fusions if f not in KNOWN_FUSIONS]
        if unknown:
            raise OptionsError(f"unknown fusion(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_FUSIONS)}")
        if self.cv < 2:
            raise OptionsError(f"cv must be >= 2, got {self.cv}")
        object.__setattr__(self, "shots", _shots(self.shots, self.seeds, self.select))
        if self.views not in VIEW_USES:
            raise OptionsError(f"views must be one of {', '.join(VIEW_USES)}, got {self.views!r}")


def _shots(shots, seeds: int, select: bool) -> tuple[str, ...]:
    """``--shots`` checked and sorted (``all`` last), or an OptionsError."""
    shots = tuple(str(k).strip().lower() for k in shots)
    if any(k != "all" and not (k.isdigit() and int(k) >= 1) for k in shots) or len(set(shots)) != len(shots):
        raise OptionsError(f"shots must be distinct positive ints or 'all' (e.g. 1,5,10,all), got {','.join(shots)}")
    if shots and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise OptionsError(f"seeds must be >= 1, got {seeds!r}")
    if shots and select:
        raise OptionsError("--shots and --select do not go together: the few-shot protocol scores every cell on "
                           "the test split")
    return tuple(sorted(shots, key=lambda k: float("inf") if k == "all" else int(k)))
