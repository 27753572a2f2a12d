"""Each default ``bench`` head fitted on a store's whole training split, against the 5-minute budget.

``python -m benchmarks.head_fit [--quick] [--synthetic ROWSxFEATURES] [--stores PATH[:LAYER],...] [--heads ...]
[--task-type regression|multilabel] [--task NAME]``

Stores: by default the two ``pre_logits`` stores that ``featurestore run
examples/fashion_mnist.toml`` writes under ``runs/fashion_mnist`` (60,000 training rows x 1,280
features each): MobileNetV2 with its ImageNet weights, and the same architecture untrained,
whose features are the slow case for lbfgs. A store that is not there is recorded as skipped,
with the command that makes it. ``--quick`` writes a synthetic store of 300 training and 100
test rows instead (its numbers mean nothing); ``--synthetic 60000x3000`` writes one of that size (and a
sixth as many test rows): 10 classes, rectified random projections of noisy class means, for fit
times at a given width when no store of it is at hand. Default heads: ``bench``'s, then ``mlp`` and
``siamese``.

For every store and head: ``heads.create_head(name)`` fitted on the ``train`` split (timed),
then scored on the ``test`` split. Each fit runs alone, ``--repeats`` times (default 1: a fit
takes minutes), since the budget is about one fit on a quiet machine. The target is the
slowest head's median fit time.

``--task-type regression`` times the regression heads (``ridge``, ``svr``, ``tree``, ``forest``,
``bayes``, ``xgb``, ``knn``) instead, scored by test R², against the same budget at 60,000 rows x
2,000 features (target ``heads.fit_budget.regression``, results ``head_fit_regression.json``; ``python -m
benchmarks.head_fit_regression`` is the same run). No stored pipeline has a numeric target,
so by default it writes a synthetic store of that size whose task ``target`` is a smooth nonlinear
function of the 32-dimensional latent the features are projected from, plus noise; ``--stores`` with
``--task NAME`` fits a store's own regression task instead.

``--task-type multilabel`` does the same for the multilabel heads (``tree`` and ``forest`` native,
``logreg``, ``nb``, ``xgb`` and ``knn`` one-vs-rest), scored by test mean average precision (mAP, over
the labels), target ``heads.fit_budget.multilabel``, results ``head_fit_multilabel.json`` (``python -m
benchmarks.head_fit_multilabel``). Its synthetic store's task ``tags`` has 7 labels, each on where a
nonlinear function of two of the latent's dimensions plus noise passes a threshold (prevalences 5%
to 50%); a row none of them reaches gets its nearest one, since a label set names at least one label.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ._common import REPO_ROOT, Variant, make_parser, measure, parse_args, run_and_report, scratch_dir, table
from ._common import train_test_matrices
from .targets import evaluate, get_target

__all__ = ["DEFAULT_STORES", "main", "run"]

DEFAULT_STORES = ("runs/fashion_mnist/fmnist_mobilenet_v2:pre_logits",
                  "runs/fashion_mnist/fmnist_mobilenet_v2_random:pre_logits")
"""The example pipeline's stores, relative to the repository root."""

_MAKE_STORES = "featurestore run examples/fashion_mnist.toml"
_NEURAL_HEADS = ("mlp", "siamese")  # measured besides bench's default heads
_SCORE = {"classification": "test_accuracy", "regression": "test_r2", "multilabel": "test_map"}  # by task type
_TARGET = {"classification": "heads.fit_budget", "regression": "heads.fit_budget.regression",
           "multilabel": "heads.fit_budget.multilabel"}
_RESULTS = {"classification": "head_fit", "regression": "head_fit_regression",
            "multilabel": "head_fit_multilabel"}  # <name>.json, by task type
_WHAT = {"classification": "test accuracy", "regression": "test R²", "multilabel": "test mAP"}
_REGRESSION_SIZE = (60_000, 2_000)  # the regression and multilabel heads' default synthetic store
_SYNTHETIC_TASK = {"regression": "target", "multilabel": "tags"}  # the synthetic store's task, by type
_PREVALENCE = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)  # of the synthetic multilabel task's labels


def _size(text: str) -> tuple[int, int]:
    """``"60000x3000"`` -> (60000, 3000)."""
    rows, _, features = text.lower().partition("x")
    try:
        size = int(rows), int(features)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxFEATURES such as 60000x3000; got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"rows and features must be positive; got {text!r}")
    return size


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """``PATH[:LAYER]`` -> (path, layer); a relative path is taken from the repository root."""
    path, _, layer = spec.partition(":")
    resolved = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    return resolved, layer or None


def _synthetic_store(root: Path, seed: int, size: tuple[int, int] | None = None) -> str:
    """A 10-class store: Gaussian blobs (300 train / 100 test rows x 32 features) for ``--quick``, or
    ``size = (train rows, features)`` rectified projections of 32-dimensional noisy class means."""
    from featurestore import write_arrays

    rng = np.random.default_rng(seed)
    if size is None:
        labels = rng.integers(0, 10, 400)
        features = rng.normal(size=(10, 32))[labels] + rng.normal(size=(400, 32))
        n_train = 300
    else:
        n_train, width = size
        labels = rng.integers(0, 10, n_train + n_train // 6)
        latent = rng.normal(size=(10, 32))[labels] + 1.5 * rng.normal(size=(len(labels), 32))
        features = np.maximum(latent.astype(np.float32) @ rng.normal(size=(32, width)).astype(np.float32)
                              + rng.normal(size=(len(labels), width)).astype(np.float32), 0)
    write_arrays(root / "synthetic", {"features": features.astype(np.float32)}, labels=[str(v) for v in labels],
                 splits=["train"] * n_train + ["test"] * (len(labels) - n_train))
    return f"{root / 'synthetic'}:features"


def _latent(rng: np.random.Generator, size: tuple[int, int] | None) -> tuple[int, np.ndarray]:
    """Training rows and the 32-dimensional standard normal latent of every row (a sixth as many test
    rows as ``size``'s training rows, or 300 + 100 for ``--quick``)."""
    n_train = (size or (300, 32))[0]
    return n_train, rng.normal(size=(n_train + (n_train // 6 if size else 100), 32)).astype(np.float32)


def _write_latent_store(root: Path, rng: np.random.Generator, latent: np.ndarray, n_train: int,
                        size: tuple[int, int] | None) -> list[str]:
    """Write ``root/synthetic``: the latent slightly noisy (``--quick``: heads learn its linear part in
    300 rows) or ``size[1]`` rectified random projections of it; rows named ``row000000``, ...; returns
    the names."""
    from featurestore import write_arrays

    n = len(latent)
    if size is None:
        features = latent + 0.1 * rng.normal(size=(n, 32)).astype(np.float32)
    else:
        features = np.maximum(latent @ rng.normal(size=(32, size[1])).astype(np.float32)
                              + rng.normal(size=(n, size[1])).astype(np.float32), 0)
    paths = [f"row{i:06d}" for i in range(n)]
    write_arrays(root / "synthetic", {"features": features}, paths=paths,
                 splits=["train"] * n_train + ["test"] * (n - n_train))
    return paths


def _regression_store(root: Path, seed: int, size: tuple[int, int] | None = None) -> str:
    """A store with the regression task ``target``: 300 train / 100 test rows of a noisy 32-dimensional
    standard normal latent for ``--quick``, or ``size = (train rows, features)`` (and a sixth as many test
    rows) of rectified random projections of it. The target is ``z0 + sin(2 z1) + z2 z3 / 2`` plus noise
    (standard deviation 0.3), attached by path through the ``label`` machinery."""
    from featurestore.tasks import attach_task

    rng = np.random.default_rng(seed)
    n_train, latent = _latent(rng, size)
    target = latent[:, 0] + np.sin(2 * latent[:, 1]) + latent[:, 2] * latent[:, 3] / 2 + 0.3 * rng.normal(size=len(latent))
    paths = _write_latent_store(root, rng, latent, n_train, size)
    table = root / "target.csv"
    table.write_text("path,target\n" + "".join(f"{p},{v!r}\n" for p, v in zip(paths, target.tolist())))
    attach_task(root / "synthetic", table, task="target", task_type="regression")
    return f"{root / 'synthetic'}:features"


def _multilabel_store(root: Path, seed: int, size: tuple[int, int] | None = None) -> str:
    """A store with the multilabel task ``tags``, on the rows and features :func:`_regression_store` makes.
    Label ``k`` (of 7) is on where ``z[2k] + sin(2 z[2k+1])`` plus noise (standard deviation 0.5) passes
    the quantile that gives it the prevalence :data:`_PREVALENCE` lists; a row with no label gets the
    one its score came nearest to. Attached by path through the ``label`` machinery."""
    from featurestore.tasks import attach_task

    rng = np.random.default_rng(seed)
    n_train, latent = _latent(rng, size)
    n, k = len(latent), len(_PREVALENCE)
    scores = latent[:, 0:2 * k:2] + np.sin(2 * latent[:, 1:2 * k:2]) + 0.5 * rng.normal(size=(n, k))
    margin = scores - np.diagonal(np.quantile(scores, 1 - np.asarray(_PREVALENCE), axis=0))
    on = margin > 0
    on[np.arange(n), np.argmax(margin, axis=1)] = True  # a label set names at least one label
    paths = _write_latent_store(root, rng, latent, n_train, size)
    table = root / "tags.csv"
    table.write_text("path,tags\n" + "".join(
        f"{p},{'|'.join(f'tag{j}' for j in np.flatnonzero(row))}\n" for p, row in zip(paths, on)))
    attach_task(root / "synthetic", table, task="tags", task_type="multilabel")
    return f"{root / 'synthetic'}:features"


def _test_score(head: Any, X_test: np.ndarray, y_test: np.ndarray, task_type: str) -> float:
    """``head.score`` (accuracy, R²), or for a multilabel head its test mAP."""
    if task_type == "multilabel":
        from heads.bench import _score_multilabel

        return _score_multilabel(head, X_test, y_test)[0]["map"]
    return float(head.score(X_test, y_test))


def _fit_store(spec: str, heads: list[str], repeats: int, task_type: str = "classification",
               task: str | None = None) -> dict[str, Any]:
    """Fit seconds and test score (accuracy, R² for regression, mAP for multilabel) of every head on one
    store (or why it was skipped)."""
    from heads import create_head
    from heads.registry import method_used

    path, layer = _split_spec(spec)
    if not path.is_dir():
        return {"store": spec, "skipped": f"no store at {path}; `{_MAKE_STORES}` writes it"}
    X, y, X_test, y_test = train_test_matrices(path, [layer] if layer else None, task=task)
    score = _SCORE[task_type]
    found: dict[str, Any] = {"store": spec, "train_rows": int(X.shape[0]), "features": int(X.shape[1]),
                             "test_rows": int(X_test.shape[0]), "heads": {}}
    for name in heads:
        fitted: dict[str, Any] = {}  # the last repeat's head, scored below

        def fit(_: object, name: str = name, fitted: dict[str, Any] = fitted) -> None:
            fitted["head"] = create_head(name, task_type).fit(X, y)

        stats = measure([Variant(name, fit)], repeats)[name]
        head = fitted["head"]
        found["heads"][name] = {"fit_s": stats["median_s"], "samples_s": stats["samples_s"],
                                "method": method_used(head), score: _test_score(head, X_test, y_test, task_type)}
        print(f"  {spec} / {name}: fit {stats['median_s']:.1f} s, {score.replace('_', ' ')} "
              f"{found['heads'][name][score]:.4f} ({found['heads'][name]['method']})", flush=True)
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit every head on every store; return the results document."""
    target_id, score = _TARGET[args.task_type], _SCORE[args.task_type]
    budget = get_target(target_id).threshold
    task = args.task
    with scratch_dir(args, "head-fit") as work:
        if args.task_type in _SYNTHETIC_TASK and args.stores is None:
            size = args.synthetic or (None if args.quick else _REGRESSION_SIZE)
            make = _regression_store if args.task_type == "regression" else _multilabel_store
            specs, task = [make(work, args.seed, size)], _SYNTHETIC_TASK[args.task_type]
        elif args.synthetic is not None:
            specs = [_synthetic_store(work, args.seed, args.synthetic)]
        elif args.quick and args.stores is None:
            specs = [_synthetic_store(work, args.seed)]
        else:
            specs = list(args.stores or DEFAULT_STORES)
        stores = [_fit_store(spec, args.heads, args.repeats, args.task_type, task) for spec in specs]
    measured = [s for s in stores if "heads" in s]
    rows = [[s["store"], f"{s['train_rows']} x {s['features']}",
             *(f"{s['heads'][h]['fit_s']:.1f} ({s['heads'][h][score]:.3f})" for h in args.heads)]
            for s in measured]
    notes = [f"{s['store']}: skipped: {s['skipped']}" for s in stores if "skipped" in s]
    targets = []
    if measured:
        fits = [(s["heads"][h]["fit_s"], s["store"], h) for s in measured for h in args.heads]
        slowest, store, head = max(fits)
        over = [f"{h} on {st} ({t:.0f} s)" for t, st, h in sorted(fits, reverse=True) if t > budget]
        note = f"slowest: {head} on {store}, {slowest:.0f} s"
        note += f"; over the {budget:g} s budget: {', '.join(over)}" if over else ""
        targets.append(evaluate(target_id, slowest, note=note))
    what = _WHAT[args.task_type]
    return {
        "parameters": {"stores": specs, "heads": list(args.heads), "budget_s": budget,
                       "task_type": args.task_type, "task": task},
        "stores": stores, "targets": targets, "notes": notes,
        "tables": [table(f"Fit seconds ({what}) of each head on the whole training split, one fit at a time",
                         ["store", "train rows x features", *args.heads], rows)],
    }


def main(argv: list[str] | None = None, task_type: str = "classification") -> int:
    """Run the benchmark; ``task_type`` is ``--task-type``'s default (``head_fit_regression`` passes
    ``"regression"``, ``head_fit_multilabel`` ``"multilabel"``). Results go to ``head_fit.json``, or
    ``head_fit_regression.json`` / ``head_fit_multilabel.json``."""
    from featurestore.bench_config import DEFAULT_HEADS
    from heads import list_heads

    parser = make_parser(_RESULTS[task_type], __doc__.splitlines()[0])
    parser.add_argument("--stores", type=lambda text: text.split(","),
                        help="comma-separated PATH[:LAYER] (default: the example pipeline's pre_logits stores; "
                             "with --quick a synthetic store)")
    heads = [*DEFAULT_HEADS, *(name for name in _NEURAL_HEADS if name not in DEFAULT_HEADS)]
    parser.add_argument("--heads", type=lambda text: text.split(","), default=heads,
                        help=f"comma-separated registered heads (default: {','.join(heads)})")
    parser.add_argument("--synthetic", type=_size, metavar="ROWSxFEATURES",
                        help="fit on a synthetic store of this many training rows and features instead")
    parser.add_argument("--task-type", choices=tuple(_TARGET), default=task_type,
                        help="which heads: classification (default), regression or multilabel (default "
                             "heads: every head of that type; default store: synthetic, 60000x2000)")
    parser.add_argument("--task", help="the stores' task to fit (default: their labels; the synthetic "
                                       "regression store's is 'target', the multilabel one's 'tags')")
    args = parse_args(parser, argv)
    args.repeats = args.repeats or 1
    if args.task_type != "classification" and args.heads is heads:
        args.heads = list_heads(args.task_type)
    if args.task_type != "classification" and args.stores is not None and args.task is None:
        parser.error(f"--stores with --task-type {args.task_type} needs --task NAME: those stores' "
                     f"{args.task_type} task")
    return run_and_report(_RESULTS[args.task_type], args, run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
