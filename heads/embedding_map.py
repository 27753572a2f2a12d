"""A 2-D map of a store's rows (one layer): PCA, then t-SNE or UMAP, drawn as one self-contained page.

Points are coloured by label, or by a task's value (``task``): a class, or for a regression
task the value on a colour scale (in quantile bins, which also stratify the sample); hovering
one shows its thumbnail, path and label or value, and a click keeps it shown. Above
``max_points`` rows the map is drawn from a stratified, seeded sample, and the page says so.
Only features are read to place the points; the only images decoded are the thumbnails the
page carries (at most ``max_thumbnails``).

How well the map keeps neighbourhoods is measured and shown: the accuracy of a 10-nearest-
neighbour vote on the 2-D points (5-fold CV over the labelled points), next to the same
vote in the PCA space the map started from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featurestore import open_store
from featurestore.errors import BackendUnavailableError, OptionsError

from ._html import category_colour, colour, esc, fmt, json_script, page
from .errors import HeadDataError

__all__ = ["METHODS", "DEFAULT_METHOD", "EmbeddingMap", "embed", "stratified_sample", "build_map", "render_map",
           "write_map"]

#: Ways to place points in 2-D: ``tsne`` (scikit-learn's Barnes-Hut t-SNE), ``umap`` (umap-learn,
#: optional), ``pca`` (the first two principal components; instant, for a first look).
METHODS = ("tsne", "umap", "pca")
DEFAULT_METHOD = "tsne"
#: Rows above this are subsampled (stratified by label, seeded).
DEFAULT_MAX_POINTS = 10_000
#: Thumbnails embedded in the page (a seeded choice among the points).
DEFAULT_MAX_THUMBNAILS = 2_000
#: Principal components kept before t-SNE or UMAP.
PCA_DIMS = 50


@dataclass
class EmbeddingMap:
    """A store's rows placed in 2-D, and how they were chosen and placed.

    Attributes
    ----------
    coords : numpy.ndarray
        ``(points, 2)`` float coordinates.
    rows : numpy.ndarray
        The store row of each point.
    labels : numpy.ndarray of str
        Each point's label, or its class or value bin of ``task`` (``""``: none).
    paths : numpy.ndarray of str
        Where each point's image was first seen.
    total_rows : int
        Clean rows of the store (of ``split``, when given) before subsampling.
    """

    store: str
    layer: str
    method: str
    coords: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    total_rows: int
    dims: int
    pca_dims: int
    seed: int
    split: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: the task the points are coloured by (None: the rows' labels)
    task: str | None = None
    #: a regression task's value of each point (NaN: none); ``labels`` then holds its quantile bin
    values: np.ndarray | None = None
    #: the labels in legend order (None: sorted); for a regression task, its value bins from low to high
    order: tuple[str, ...] | None = None
    #: 10-NN accuracy (5-fold CV over the labelled points) in 2-D and in the PCA space; None when unlabelled
    knn_accuracy_2d: float | None = None
    knn_accuracy_input: float | None = None

    @property
    def subsampled(self) -> bool:
        return len(self.rows) < self.total_rows


def stratified_sample(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` positions of ``labels``, every label in proportion to its count (largest
    remainders get the rounding), chosen at random with ``seed``; sorted. All positions when
    there are no more than ``limit``."""
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse)
    exact = counts * limit / n
    quota = np.floor(exact).astype(np.int64)
    short = limit - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    picked = [rng.choice(np.flatnonzero(inverse == k), size=q, replace=False) for k, q in enumerate(quota) if q]
    return np.sort(np.concatenate(picked))


def embed(X: np.ndarray, method: str = DEFAULT_METHOD, seed: int = 0, progress: bool = False,
          pca_dims: int = PCA_DIMS) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Place the rows of ``X`` in 2-D: standardised, PCA to ``pca_dims``, then ``method``.

    Returns
    -------
    coords : numpy.ndarray
        ``(rows, 2)``.
    reduced : numpy.ndarray
        The PCA space the method started from.
    seconds : dict
        Wall seconds of each step.

    Raises
    ------
    OptionsError
        An unknown method, or fewer than 3 rows.
    BackendUnavailableError
        ``umap`` without umap-learn installed.
    """
    from sklearn.decomposition import PCA
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise OptionsError(f"map method {method!r} is not one of {', '.join(METHODS)}")
    if len(X) < 3:
        raise OptionsError(f"a map needs at least 3 rows, got {len(X)}")
    seconds = {}
    start = time.perf_counter()
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
    reduced = PCA(min(pca_dims, *X.shape), random_state=seed).fit_transform(X).astype(np.float32)
    seconds["pca"] = time.perf_counter() - start
    start = time.perf_counter()
    if method == "pca":
        coords = reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 2 - reduced.shape[1])))
    elif method == "tsne":
        coords = _tsne(reduced, seed, progress)
    else:
        try:
            import umap
        except ImportError:
            raise BackendUnavailableError("map --method umap needs umap-learn: pip install umap-learn "
                                          "(or use --method tsne)") from None
        bar = tqdm(total=1, desc="umap", disable=not progress)
        coords = umap.UMAP(n_neighbors=min(15, len(reduced) - 1), random_state=seed, n_jobs=1).fit_transform(reduced)
        bar.update()
        bar.close()
    seconds[method] = time.perf_counter() - start
    return np.asarray(coords, dtype=np.float64), reduced, seconds


def _tsne(reduced: np.ndarray, seed: int, progress: bool) -> np.ndarray:
    """scikit-learn's Barnes-Hut t-SNE; the bar follows its optimiser through its verbose report."""
    import contextlib
    import io

    from sklearn.manifold import TSNE
    from tqdm.auto import tqdm

    perplexity = float(min(30.0, max(2.0, (len(reduced) - 1) / 3.0)))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1, max_iter=1000)
    with tqdm(total=1000, desc="t-SNE", unit="it", disable=not progress) as bar:
        stream = _Progress(bar) if progress else io.StringIO()
        with contextlib.redirect_stdout(stream):
            if progress:
                tsne.set_params(verbose=2)
            coords = tsne.fit_transform(reduced)
        bar.update(bar.total - bar.n)
    return coords


class _Progress:
    """A stdout for scikit-learn's verbose t-SNE: its ``Iteration N`` lines move a progress bar, the rest is dropped."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def write(self, text: str) -> int:
        import re

        for match in re.finditer(r"Iteration (\d+)", text):
            done = min(int(match.group(1)), self.bar.total)
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)
        return len(text)

    def flush(self) -> None:
        pass


def _knn_accuracy(points: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """10-NN accuracy by 5-fold CV over the labelled points (None with fewer than 2 labelled classes)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labelled = labels != ""
    y = labels[labelled]
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=int(min(10, counts.min())))
    return float(np.mean(cross_val_score(knn, points[labelled], y, cv=folds)))


#: Colour bins of a regression task's values (quantiles of the rows' values).
VALUE_BINS = 8


def _value_bins(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each value's quantile bin as a label (``""`` for NaN), and the bin labels from low to high."""
    present = np.isfinite(values)
    if not present.any():
        return np.full(len(values), "", dtype=object), ()
    edges = np.unique(np.quantile(values[present], np.linspace(0, 1, VALUE_BINS + 1)))
    if len(edges) == 1:
        names = (f"{edges[0]:.4g}",)
        return np.where(present, names[0], ""), names
    names = tuple(f"{low:.4g} to {high:.4g}" for low, high in zip(edges[:-1], edges[1:]))
    index = np.clip(np.searchsorted(edges, np.where(present, values, edges[0]), side="right") - 1, 0, len(names) - 1)
    return np.where(present, np.asarray(names, dtype=object)[index], ""), names


def _task_labels(store, task: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """Labels of ``rows`` for ``task`` (class, or value bin), the regression values, and the legend order."""
    targets = store.targets(task)
    if targets.type == "classification":
        classes = np.asarray(targets.classes + ("",), dtype=object)
        return classes[targets.y[rows]].astype(str), None, tuple(targets.classes)
    if targets.type == "regression":
        values = targets.y[rows]
        labels, names = _value_bins(values)
        return labels.astype(str), values, names
    raise OptionsError(f"task {task!r} of store {store.path} is {targets.type}: a map is coloured by a "
                       "classification or regression task (see `featurestore info` for its tasks)")


def build_map(store_path: str | Path, layer: str, *, method: str = DEFAULT_METHOD,
              max_points: int = DEFAULT_MAX_POINTS, seed: int = 0, split: str | None = None,
              progress: bool = False, task: str | None = None) -> EmbeddingMap:
    """Place the clean rows of one layer of a store in 2-D (see :func:`embed`).

    With ``task``, points are coloured (and the sample stratified) by that task's class, or for a
    regression task by its value in :data:`VALUE_BINS` quantile bins; the 10-NN scores are then of
    those classes or bins.

    Raises
    ------
    OptionsError
        ``max_points`` below 3, an unknown method, fewer than 3 rows, a multilabel task.
    featurestore.errors.TaskNotInStoreError
        The store has no such task.
    HeadDataError
        A drawn row holds NaN or infinite values.
    featurestore.errors.StoreError
        The store cannot be read, or has no such layer.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 3:
        raise OptionsError(f"max_points must be an integer >= 3, got {max_points!r}")
    store = open_store(store_path)
    output = store.output_name(layer)
    candidates = store.rows(split, view=0)
    values = order = None
    if task is None:
        labels = store.labels[candidates]
    else:
        labels, values, order = _task_labels(store, task, candidates)
    drawn = stratified_sample(labels, max_points, seed)
    picked = candidates[drawn]
    start = time.perf_counter()
    data = store.load([output], rows=picked)
    read = time.perf_counter() - start
    X = data.X[output]
    bad = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1)
    if bad.any():
        raise HeadDataError(f"store {store_path}, layer {output}: {int(bad.sum())} of the {len(X)} rows drawn hold "
                            "NaN or infinite values; a map needs finite features (featurestore verify checks the "
                            "store)")
    coords, reduced, seconds = embed(X, method, seed=seed, progress=progress)
    point_labels = np.asarray(data.labels if task is None else labels[drawn]).astype(str)
    result = EmbeddingMap(store=str(store_path), layer=output, method=method, coords=coords, rows=picked,
                          labels=point_labels, paths=np.asarray(data.paths).astype(str), total_rows=len(candidates),
                          dims=int(np.prod(X.shape[1:])), pca_dims=reduced.shape[1], seed=seed, split=split,
                          seconds={"read": read, **seconds}, task=task,
                          values=None if values is None else values[drawn], order=order)
    result.knn_accuracy_2d = _knn_accuracy(coords, point_labels, seed)
    result.knn_accuracy_input = _knn_accuracy(reduced, point_labels, seed)
    return result


def write_map(store_path: str | Path, layer: str, output: str | Path, *, method: str = DEFAULT_METHOD,
              max_points: int = DEFAULT_MAX_POINTS, max_thumbnails: int = DEFAULT_MAX_THUMBNAILS,
              thumbnail_size: int = 64, seed: int = 0, split: str | None = None,
              progress: bool = False, task: str | None = None) -> EmbeddingMap:
    """:func:`build_map`, then its page with thumbnails of at most ``max_thumbnails`` points, written to ``output``.

    Returns
    -------
    EmbeddingMap
    """
    from featurestore.utils import write_bytes_atomic
    from featurestore.thumbnails import make_thumbnails

    if isinstance(max_thumbnails, bool) or not isinstance(max_thumbnails, int) or max_thumbnails < 0:
        raise OptionsError(f"max_thumbnails must be an integer >= 0, got {max_thumbnails!r}")
    result = build_map(store_path, layer, method=method, max_points=max_points, seed=seed, split=split,
                       progress=progress, task=task)
    shown = stratified_sample(result.labels, max_thumbnails, seed) if max_thumbnails else np.arange(0)
    start = time.perf_counter()
    made = make_thumbnails([result.paths[i] for i in shown], size=thumbnail_size, progress=progress)
    result.seconds["thumbnails"] = time.perf_counter() - start
    thumbnails = {int(shown[i]): uri for i, uri in made.images.items()}
    html = render_map(result, thumbnails, {"asked": len(shown), "missing": made.missing,
                                           "unreadable": made.unreadable})
    write_bytes_atomic(Path(output), html.encode())
    return result


def render_map(result: EmbeddingMap, thumbnails: dict[int, str], thumbnail_counts: dict[str, int]) -> str:
    """The page of a map: the points on a canvas, a legend, and a panel for the point under the mouse."""
    present = set(result.labels.tolist()) - {""}
    classes = ([c for c in result.order if c in present] if result.order is not None else sorted(present))
    index = {c: i for i, c in enumerate(classes)}
    has_unlabelled = bool((result.labels == "").any())
    codes = [index.get(label, len(classes)) for label in result.labels.tolist()]
    low, high = result.coords.min(0), result.coords.max(0)
    span = np.maximum(high - low, 1e-12)
    unit = (result.coords - low) / span
    counts = np.bincount(codes, minlength=len(classes) + 1).tolist()
    legend_names = classes + ([f"(no {result.task})" if result.task else "(unlabelled)"] if has_unlabelled else [])
    if result.values is not None:  # a regression task: its value bins on the viridis scale, low to high
        colours = [colour(i, 0, max(len(classes) - 1, 1))[0] for i in range(len(classes))] + ["#9aa3af"]
    else:
        colours = [category_colour(i) for i in range(len(classes))] + ["#9aa3af"]
    data = {"x": [round(float(v), 4) for v in unit[:, 0]], "y": [round(float(v), 4) for v in unit[:, 1]],
            "c": codes, "classes": legend_names, "colours": colours[:len(legend_names)], "paths": result.paths.tolist(),
            "thumbs": {str(k): v for k, v in thumbnails.items()}}
    if result.values is not None:
        data["v"] = [None if not np.isfinite(v) else float(f"{v:.6g}") for v in result.values.tolist()]
    by = (f"task {result.task}" + (" value bins" if result.values is not None else "")) if result.task else "label"
    sample = (f"{len(result.rows):,} of {result.total_rows:,} rows, a stratified sample (by {by}, seed "
              f"{result.seed})" if result.subsampled else f"all {result.total_rows:,} rows")
    skipped = thumbnail_counts["missing"] + thumbnail_counts["unreadable"]
    thumbs_note = (f"Thumbnails for {len(thumbnails):,} of {len(result.rows):,} points"
                   + (f" ({skipped} of the {thumbnail_counts['asked']:,} asked for skipped: "
                      f"{thumbnail_counts['missing']} no longer on disk, {thumbnail_counts['unreadable']} unreadable)"
                      if skipped else "") + ".")
    method = {"tsne": "t-SNE (scikit-learn)", "umap": "UMAP (umap-learn)", "pca": "PCA"}[result.method]
    quality = ""
    if result.knn_accuracy_2d is not None:
        what = ("label" if not result.task else "value bin" if result.values is not None else "class")
        quality = (f"Neighbourhoods kept: a 10-nearest-neighbour vote finds the {what} of "
                   f"{fmt(result.knn_accuracy_2d, 3)} of the {'points with a value' if result.task else 'labelled points'} in 2-D (5-fold CV), {fmt(result.knn_accuracy_input, 3)} in the "
                   f"{result.pca_dims}-dimensional PCA space it started from.")
    timing = "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
    legend = "".join(f"<li><span class='dot' style='background:{colours[i] if i < len(classes) else colours[-1]}'>"
                     f"</span>{esc(name)} <span class='muted'>({counts[i] if i < len(classes) else counts[-1]:,})"
                     f"</span></li>" for i, name in enumerate(legend_names))
    body = (f"<h1>Embedding map: {esc(Path(result.store).name)} / {esc(result.layer)}</h1>"
            f"<p class='muted small' id='about'>{esc(result.store)}: {esc(sample)}"
            f"{' of split ' + esc(result.split) if result.split else ''}; the layer's {result.dims:,} dimensions "
            f"standardised, reduced to {result.pca_dims} by PCA, then placed in 2-D by {esc(method)}. "
            + (f"Coloured by task {esc(result.task)}"
               + (f" (its values in {len(classes)} quantile bins, low to high)" if result.values is not None else "")
               + ". " if result.task else "")
            + f"{esc(thumbs_note)} {esc(timing)}.</p>"
            + (f"<p id='quality'>{esc(quality)}</p>" if quality else "")
            + "<div class='maprow'><canvas id='map' width='900' height='720'></canvas><div class='side'>"
            "<div class='card' id='info'><span class='muted'>Hover over a point to see its image; click to keep "
            "it.</span></div>"
            f"<ul class='legend' id='legend'>{legend}</ul></div></div>"
            + json_script("map-data", data))
    style = ("<style>.maprow{display:flex;gap:16px;align-items:flex-start}canvas{background:#fff;"
             "border:1px solid #dde1e7;border-radius:6px;max-width:100%}.side{width:260px}"
             ".legend{list-style:none;padding:0;margin:8px 0;font-size:13px}.legend li{margin:2px 0}"
             ".dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px}"
             "#info img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;display:block;"
             "background:#eee;margin-bottom:6px}</style>")
    return page(f"Embedding map: {Path(result.store).name} / {result.layer}", style + body, _MAP_SCRIPT)


_MAP_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('map-data').textContent);
  var canvas = document.getElementById('map'), ctx = canvas.getContext('2d');
  var info = document.getElementById('info'), pad = 12, n = data.x.length, pinned = -1;
  var radius = n > 20000 ? 1.2 : n > 5000 ? 1.8 : n > 1000 ? 2.5 : 3.5;
  function px(i) { return pad + data.x[i] * (canvas.width - 2 * pad); }
  function py(i) { return canvas.height - pad - data.y[i] * (canvas.height - 2 * pad); }
  function draw(mark) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 0.75;
    for (var i = 0; i < n; i++) {
      ctx.fillStyle = data.colours[data.c[i]];
      ctx.beginPath(); ctx.arc(px(i), py(i), radius, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    if (mark >= 0) {
      ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px(mark), py(mark), radius + 5, 0, 2 * Math.PI); ctx.stroke();
    }
    canvas.setAttribute('data-points', String(n));
  }
  function show(i) {
    info.textContent = '';
    var thumb = data.thumbs[String(i)];
    if (thumb) {
      var img = document.createElement('img'); img.src = thumb; img.alt = data.paths[i]; info.appendChild(img);
    } else {
      var none = document.createElement('div'); none.className = 'muted small';
      none.textContent = '(no thumbnail for this point)'; info.appendChild(none);
    }
    var label = document.createElement('div'); label.className = 'big';
    label.textContent = (data.v && data.v[i] !== null) ? String(data.v[i]) : data.classes[data.c[i]];
    info.appendChild(label);
    var path = document.createElement('div'); path.className = 'path'; path.textContent = data.paths[i];
    info.appendChild(path);
    draw(i);
  }
  function nearest(event) {
    var box = canvas.getBoundingClientRect();
    var x = (event.clientX - box.left) * canvas.width / box.width, y = (event.clientY - box.top) * canvas.height / box.height;
    var best = -1, bestD = 100;
    for (var i = 0; i < n; i++) {
      var dx = px(i) - x, dy = py(i) - y, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }
  canvas.addEventListener('mousemove', function (event) {
    if (pinned >= 0) return;
    var i = nearest(event); if (i >= 0) show(i);
  });
  canvas.addEventListener('click', function (event) {
    var i = nearest(event);
    pinned = (i === pinned) ? -1 : i;
    if (i >= 0) show(i);
  });
  draw(-1);
  for (var first in data.thumbs) { show(parseInt(first, 10)); break; }  /* a first example, until the mouse moves */
})();
"""
