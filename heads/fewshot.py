"""The few-shot protocol of ``bench --shots 1,5,10,all --seeds 5``.

For every number of shots ``k`` and every seed, :func:`draw_shots` draws ``k`` training rows per class
(all of a class's rows when it has fewer); the draw depends on the labels, ``k`` and the seed only, so
every cell of a store is fitted on the same draws. Each cell is fitted on each draw and scored on the
whole test split; ``all`` fits once on every training row. :func:`run_shots` writes the bench's
usual report (one row per cell and ``k``, its metrics the mean over the draws), then ``shots.csv``
(every fit), ``shots.md`` (mean ± standard deviation per cell and ``k``) and ``shots_<store>.png``
(accuracy against shots, one line per head and layer), and adds a few-shot section to
``report.md`` and ``results.json``.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HeadDataError

__all__ = ["draw_shots", "run_shots"]


def draw_shots(y: np.ndarray, train: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """``shots`` rows of each class among the rows ``train`` (every row of a class with fewer), sorted.

    Parameters
    ----------
    y : ndarray of shape (n_rows,)
        Labels of every row.
    train : ndarray of int
        Indices of the rows to draw from.
    shots : int
        Rows per class.
    seed : int
        The draw's seed; with the same ``y``, ``train`` and ``shots`` it gives the same rows.

    Returns
    -------
    ndarray of int
        Indices into ``y``.
    """
    rng = np.random.default_rng([int(seed), int(shots)])
    labels = y[train]
    picked = [rng.choice(train[labels == c], min(shots, int((labels == c).sum())), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def _fit_draw(fit_and_score, cell, store, config, shots: str, seed: int) -> dict[str, Any]:
    train, test = np.flatnonzero(~store.test), np.flatnonzero(store.test)
    rows = train if shots == "all" else draw_shots(store.y, train, int(shots), seed)
    found = {"store": cell.store, "layers": "+".join(cell.layers), "layer": cell.layer_label, "fusion": cell.fusion,
             "head": cell.head, "shots": shots, "seed": seed, "n_train": int(len(rows))}
    try:
        result = fit_and_score(cell, store, config, [(rows, test)], "test split")
    except ValueError as exc:  # a head that cannot learn from so few rows (logreg's 3-fold sweep at 1 shot)
        return found | {"accuracy": float("nan"), "error": str(exc).splitlines()[0], "result": None}
    return found | {"accuracy": result.metrics["accuracy"], "method": result.method,
                    "fit_seconds": result.fit_seconds, "result": result}


def run_shots(data, cells, config, output: str | Path, log, *, started: float, load_seconds: float,
              fit_and_score: Callable, make_result: Callable) -> dict[str, Any]:
    """Fit every cell on every draw, score it on the test split and write the report; return ``results.json``.

    ``fit_and_score(cell, store, config, folds, evaluation)`` fits and scores one cell (the bench's
    own), and ``make_result(**fields)`` builds the bench's result of a cell; both come from
    :mod:`heads.bench`, which calls this, so that this module need not import it.

    Raises
    ------
    HeadDataError
        A store has no test split (the protocol scores on it, whole).
    """
    from joblib import Parallel, delayed

    from .report import write_report

    by_name = {d.name: d for d in data}
    for store in data:
        if store.test is None:
            raise HeadDataError(f"bench --shots scores on a test split, and store {store.path} has none: extract it "
                                "with train and test splits, or bench it without --shots")
    tasks = [(cell, k, seed) for cell in cells for k in config.shots
             for seed in ([0] if k == "all" else range(config.seeds))]
    log(f"bench --shots {','.join(config.shots)} --seeds {config.seeds}: {len(tasks)} fits of {len(cells)} cells")
    n_jobs = config.n_jobs or os.cpu_count() or 1
    fits = list(Parallel(n_jobs=n_jobs, verbose=0)(
        delayed(_fit_draw)(fit_and_score, cell, by_name[cell.store], config, k, seed) for cell, k, seed in tasks))
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for fit in fits:
        groups[(fit["store"], fit["layers"], fit["fusion"], fit["head"], fit["shots"])].append(fit)
    results, table = [], []
    for (store, layers, fusion, head, k), group in groups.items():
        accuracy = np.array([f["accuracy"] for f in group])
        done = [f["result"] for f in group if f["result"] is not None]
        row = {"store": store, "layer": group[0]["layer"], "head": head, "shots": k, "draws": len(group),
               "n_train": int(np.mean([f["n_train"] for f in group])),
               "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": float(np.std(accuracy)),
               "failed": sum(f["result"] is None for f in group),
               "error": next((f["error"] for f in group if f["result"] is None), "")}
        table.append(row)
        log(f"  {store} / {row['layer']} / {head} @ {k} shots: accuracy {row['accuracy_mean']:.4f} ± "
            f"{row['accuracy_std']:.4f} over {len(group)} draw(s)" + (f"; {row['failed']} failed" if row["failed"] else ""))
        if done:
            first = done[0]
            metrics = {m: float(np.mean([r.metrics[m] for r in done])) for m in first.metrics}
            results.append(make_result(
                cell=first.cell, metrics=metrics, method=f"{first.method} [{k} shots, mean of {len(done)}]",
                fit_seconds=float(np.mean([r.fit_seconds for r in done])),
                predict_ms_per_1000=float(np.mean([r.predict_ms_per_1000 for r in done])),
                n_train=row["n_train"], n_test=first.n_test,
                evaluation=f"test split, {k} shots per class, mean of {len(done)} draw(s)",
                confusion=first.confusion, extra={"shots": k}))
    if not results:
        raise HeadDataError("bench --shots: no head could be fitted on any draw; use more shots per class")
    output = Path(output)
    shots = {"shots": list(config.shots), "seeds": config.seeds, "table": table}
    document = write_report(output, data, config, results, load_seconds=load_seconds,
                            total_seconds=time.perf_counter() - started, extra={"shots": shots})
    _write_shots(output, config, fits, table, document)
    log(f"bench --shots: {len(fits)} fits in {time.perf_counter() - started:.1f} s; report in {output}")
    return document


def _write_shots(output: Path, config, fits: list[dict[str, Any]], table: list[dict[str, Any]],
                 document: dict[str, Any]) -> None:
    columns = ["store", "layers", "layer", "fusion", "head", "shots", "seed", "n_train", "accuracy", "fit_seconds",
               "method", "error"]
    with open(output / "shots.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(fits)
    plots = _plot(output, config, table)
    lines = [f"## Few-shot: accuracy against training images per class ({config.seeds} seeded draws each, "
             "the same for every cell; the test split whole; mean ± std over the draws)", ""]
    keys = list(dict.fromkeys((r["store"], r["layer"], r["head"]) for r in table))
    by = {(r["store"], r["layer"], r["head"], r["shots"]): r for r in table}
    lines += ["| store | layer | head | " + " | ".join(f"{k} shots" for k in config.shots) + " |",
              "|---|---|---|" + "---|" * len(config.shots)]
    for key in keys:
        cells = []
        for k in config.shots:
            r = by.get((*key, k))
            cells.append("" if r is None else "fails" if r["failed"] == r["draws"]
                         else f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    errors = sorted({f"{r['head']} at {r['shots']} shots: {r['error']}" for r in table if r["error"]})
    lines += [""] + [f"- failed: {e}" for e in errors] + ([""] if errors else [])
    lines += [f"![few-shot accuracy, {name}]({name})" for name in plots]
    text = "\n".join(lines) + "\n"
    (output / "shots.md").write_text(text)
    with open(output / "report.md", "a") as fh:
        fh.write("\n" + text)
    (output / "results.json").write_text(json.dumps(document, indent=1, default=str))


def _plot(output: Path, config, table: list[dict[str, Any]]) -> list[str]:
    """One PNG per store: accuracy (mean, std as error bars) against shots, a line per head and layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = {k: i for i, k in enumerate(config.shots)}
    written = []
    for store in dict.fromkeys(r["store"] for r in table):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lines = defaultdict(list)
        for r in table:
            if r["store"] == store and r["failed"] < r["draws"]:
                lines[(r["head"], r["layer"])].append(r)
        for (head, layer), rows in lines.items():
            rows.sort(key=lambda r: positions[r["shots"]])
            ax.errorbar([positions[r["shots"]] for r in rows], [r["accuracy_mean"] for r in rows],
                        yerr=[r["accuracy_std"] for r in rows], marker="o", capsize=3, label=f"{head} ({layer})")
        ax.set_xticks(range(len(config.shots)), [str(k) for k in config.shots])
        ax.set_xlabel("training images per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{store}: few-shot accuracy, mean ± std over {config.seeds} draws")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"shots_{store.replace('/', '_')}.png"
        fig.savefig(output / name, dpi=100)
        plt.close(fig)
        written.append(name)
    return written
