"""Read a store: keys, labels, splits, layers, and features loaded shard by shard into preallocated arrays."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import CHECKSUM_PREFIX
from .columns import RowColumns
from .errors import (KeyNotInStoreError, LayerNotInStoreError, RowIndexError, StoreDamagedError, StoreError,
                     TaskNotInStoreError)
from .manifest import Manifest, StoreConfig
from .row_index import read_row_index
from .metadata import FeatureLayout, ShardEntry
from .hdf5_checks import check_feature_layouts, open_shard
from .shard_read import read_columns, read_layouts
from .store_paths import open_store_file, shard_file
from .spec import ModelSpec
from .task_files import RowTargets, row_targets, task_values

__all__ = ["FeatureSet", "FeatureStore", "join_stores", "open_store", "resolve_layers", "store_names"]


@dataclass(frozen=True)
class FeatureSet:
    """Rows loaded from a store: one array per layer plus the row metadata, all aligned.

    Attributes
    ----------
    X : dict of str to numpy.ndarray
        ``(rows, dim)`` per layer (output name).
    keys, labels, splits, paths : numpy.ndarray of str
        Per row; ``""`` where there is no label or split. ``keys`` and ``paths`` are decoded
        on first use.
    views : numpy.ndarray of int
        0 for the clean image, k for the k-th augmented view.
    y : numpy.ndarray
        Without a task: index of the label in ``classes`` (int), -1 where unlabelled. With a
        task (``load(task=...)``, only rows with a value): the class index (classification),
        the float target (regression), or a ``(rows, len(classes))`` 0/1 ``uint8`` matrix
        (multilabel).
    classes : tuple of str
        Class names, or the label names of a multilabel task (the columns of ``y``); empty for
        a regression task.
    key_source, path_source : callable
        Return ``keys`` and ``paths``.
    task : str or None
        The task ``y`` is for (None: the labels, as ``load()`` without a task gives them).
    task_type : {'classification', 'regression', 'multilabel'}
    """

    X: dict[str, np.ndarray]
    labels: np.ndarray
    splits: np.ndarray
    views: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    key_source: Callable[[], np.ndarray] = field(repr=False, compare=False)
    path_source: Callable[[], np.ndarray] = field(repr=False, compare=False)
    task: str | None = None
    task_type: str = "classification"

    def __len__(self) -> int:
        return len(self.y)

    @cached_property
    def keys(self) -> np.ndarray:
        """Content key of each row (decoded from the stored bytes on first use)."""
        return self.key_source()

    @cached_property
    def paths(self) -> np.ndarray:
        """Where each row's content was first seen (decoded on first use: most experiments never ask)."""
        return self.path_source()

    def matrix(self, layers: Sequence[str] | None = None) -> np.ndarray:
        """Concatenate the given layers (default: all, in store order) into one ``(rows, D)`` array."""
        names = list(layers) if layers is not None else list(self.X)
        return np.concatenate([self.X[name].reshape(len(self), -1) for name in names], axis=1)

    @property
    def test(self) -> np.ndarray | None:
        """Which rows are in the ``test`` split (a bool mask), or None when the rows do not divide
        into test rows and other rows (no test split to score on)."""
        test = self.splits == "test"
        return test if test.any() and not test.all() else None

    def take(self, rows: np.ndarray) -> FeatureSet:
        """The rows ``rows`` (indices, in that order, or a bool mask) of every column alike.

        Parameters
        ----------
        rows : numpy.ndarray
            Row indices or a bool mask of ``len(self)``.

        Returns
        -------
        FeatureSet
            ``keys`` and ``paths`` still decoded on first use.
        """
        return FeatureSet(X={name: values[rows] for name, values in self.X.items()}, labels=self.labels[rows],
                          splits=self.splits[rows], views=self.views[rows], y=self.y[rows], classes=self.classes,
                          key_source=partial(_rows_of, self._source("keys"), rows),
                          path_source=partial(_rows_of, self._source("paths"), rows),
                          task=self.task, task_type=self.task_type)

    def _source(self, column: str) -> Callable[[], np.ndarray]:
        """What returns ``keys`` or ``paths``: the column if already decoded, else its source (not
        ``self``, whose features a subset need not keep alive)."""
        if column in self.__dict__:
            return partial(np.asarray, self.__dict__[column])
        return self.key_source if column == "keys" else self.path_source

    def with_targets(self, task: str, task_type: str, y: np.ndarray, classes: tuple[str, ...]) -> FeatureSet:
        """The same rows with ``y`` and ``classes`` of ``task`` (one target per row, as
        :meth:`FeatureStore.load` with ``task`` gives them), ``labels`` naming each row's target."""
        return replace(self, labels=_target_labels(task_type, y, classes), y=y, classes=classes, task=task,
                       task_type=task_type)

    def __reduce__(self):
        """Pickled with its keys and paths decoded (a closure over the open store does not travel to
        another process)."""
        return (_feature_set, (self.X, self.labels, self.splits, self.views, self.y, self.classes, self.keys,
                               self.paths, self.task, self.task_type))


def _rows_of(source: Callable[[], np.ndarray], rows: np.ndarray) -> np.ndarray:
    return source()[rows]


def _target_labels(task_type: str, y: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Each row's target as a label string: its class, its value (``repr``), its labels joined by ``|``."""
    if task_type == "classification":
        return np.array(classes, dtype=object)[y] if len(y) else np.array([], dtype=object)
    if task_type == "regression":
        return np.array([repr(v) for v in y.tolist()], dtype=object).reshape(-1)
    names = np.array(classes, dtype=object)
    return np.array(["|".join(names[np.flatnonzero(r)]) for r in y], dtype=object).reshape(-1)


def _feature_set(X, labels, splits, views, y, classes, keys, paths, task, task_type) -> FeatureSet:
    """A :class:`FeatureSet` from decoded columns (what :meth:`FeatureSet.__reduce__` pickles)."""
    return FeatureSet(X=X, labels=labels, splits=splits, views=views, y=y, classes=classes,
                      key_source=partial(np.asarray, keys), path_source=partial(np.asarray, paths),
                      task=task, task_type=task_type)


class FeatureStore:
    """A store opened for reading (see :func:`open_store`).

    Opening reads ``manifest.json``, ``journal.log`` and the row index: three files however
    many shards the store has (plus the shards committed since the last checkpoint, and every
    shard of a schema-1 store). Feature bytes are read only by :meth:`load`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        missing = None
        for _ in range(20):
            self.manifest = Manifest.load(self.path)
            try:
                columns = self._read_columns()
                break
            except FileNotFoundError:
                index = self.manifest.index.file if self.manifest.index is not None else None
                if index is not None and index == missing:  # the same checkpoint twice: not a writer's doing
                    raise StoreDamagedError(f"{self.path}: its row index {index} is missing; run "
                                            f"`featurestore repair {self.path}` to rebuild it") from None
                missing = index
                continue  # a writer replaced the row index after we read the manifest: read again
        else:
            raise StoreError(f"{self.path}: its row index kept being replaced while being read; try again")
        self.spec: ModelSpec = self.manifest.spec
        self._dtype = np.dtype(self.manifest.config.dtype)
        self._rows = columns
        self._keys: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._splits: np.ndarray | None = None
        self._checked: set[tuple[int, str]] = set()  # (shard, layer) whose recorded layout the file confirmed
        self._row_of: dict[tuple[str, int], int] | None = None
        self._task_values: dict[str, dict[str, Any]] = {}  # task -> key -> value, read on first use

    def _read_columns(self) -> RowColumns:
        index = self.manifest.index
        covered = index.shards if index else 0
        shards = self.manifest.shards
        dtype = np.dtype(self.manifest.config.dtype)
        parts: list[RowColumns] = []
        self._shard_rows = [shard.rows for shard in shards]
        self._layouts: list[dict[str, FeatureLayout] | None] = [None] * len(shards)  # built on first use
        if index:
            parts.append(read_row_index(self.path, index))
            if len(parts[0]) != sum(self._shard_rows[:covered]):
                raise StoreDamagedError(f"row index of {self.path} holds {len(parts[0])} rows, its shards "
                                        f"{sum(self._shard_rows[:covered])}; run `featurestore verify`")
        for s in range(covered, len(shards)):
            shard = shards[s]
            columns, layout = self._read(shard, read_columns)
            if len(columns) != shard.rows:
                raise StoreDamagedError(f"shard {shard.file} of {self.path} has {len(columns)} rows, "
                                        f"its commit says {shard.rows}; the store is damaged: run "
                                        f"`featurestore repair {self.path}`")
            parts.append(columns)
            self._layouts[s] = shard.feature_layouts(dtype) or layout
        return RowColumns.concatenate(parts)

    def _layout(self, s: int) -> dict[str, FeatureLayout]:
        """Where shard ``s``'s feature datasets lie: as its entry records, or read from the file (schema 1)."""
        layout = self._layouts[s]
        if layout is None:
            shard = self.manifest.shards[s]
            layout = shard.feature_layouts(self._dtype)
            if layout is None:
                layout = self._read(shard, read_layouts)
            self._layouts[s] = layout
        return layout

    def _read(self, shard: ShardEntry, reader):
        file = shard_file(self.path, shard.file)
        try:
            return reader(file)
        except (OSError, KeyError) as exc:
            raise StoreError(f"cannot read shard {file}: {exc}; run `featurestore verify {self.path}`") from None

    # --- what is stored -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, rows={len(self)}, layers={self.layers})"

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def config(self) -> StoreConfig:
        """What the rows depend on: model sha256, layers, preprocessing, views, augmentations, dtype."""
        return self.manifest.config

    @property
    def layers(self) -> list[str]:
        """Output names of the stored layers, in model order."""
        return [layer.output for layer in self.spec.layers]

    @property
    def dims(self) -> dict[str, int]:
        return {layer.output: layer.dim for layer in self.spec.layers}

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def keys(self) -> np.ndarray:
        """Content key of each row (str)."""
        if self._keys is None:
            self._keys = _as_str(self._rows.keys)
        return self._keys

    @property
    def labels(self) -> np.ndarray:
        """Each row's label (str, ``""`` if none): as extracted, updated by the task ``label`` once one
        is attached (``featurestore label``)."""
        if self._labels is None:
            labels = self._rows.labels
            if "label" in self.manifest.tasks:
                values = self._values("label")
                labels = np.array([values.get(k, lab) for k, lab in zip(self.keys.tolist(), labels.tolist())],
                                  dtype=object).reshape(-1)
            self._labels = labels
        return self._labels

    @property
    def splits(self) -> np.ndarray:
        if self._splits is None:
            self._splits = self._rows.splits
        return self._splits

    @property
    def views(self) -> np.ndarray:
        return self._rows.views

    @property
    def paths(self) -> np.ndarray:
        return self._rows.paths

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels rows carry, sorted."""
        if "label" in self.manifest.tasks:
            return tuple(sorted({lab for lab in self.labels.tolist() if lab}))
        return self.manifest.classes

    @property
    def tasks(self) -> dict[str, str]:
        """Task name -> type: ``label`` (classification) where rows carry labels, and every task attached."""
        out = {"label": "classification"} if self.manifest.classes else {}
        out.update({name: task.type for name, task in self.manifest.tasks.items()})
        return out

    def _values(self, name: str) -> dict[str, Any]:
        """Key -> value of an attached task (read once)."""
        if name not in self._task_values:
            try:
                self._task_values[name] = task_values(self.path, self.manifest.tasks[name])
            except FileNotFoundError as exc:
                raise StoreError(f"{self.path}: task {name!r} was updated while this store was open ({exc.filename} "
                                 "is gone); open the store again") from None
        return self._task_values[name]

    def targets(self, task: str) -> RowTargets:
        """Each row's value for ``task`` (see :class:`~featurestore.task_files.RowTargets`).

        The task ``label`` is the rows' labels (:attr:`labels`); any other is read from its files.

        Raises
        ------
        TaskNotInStoreError
            The store has no such task.
        """
        if task not in self.tasks:
            raise TaskNotInStoreError(f"task {task!r} is not in store {self.path}; tasks: "
                                      f"{', '.join(self.tasks) or '(none)'} (attach one with `featurestore label`)")
        if task == "label":
            labels = self.labels
            classes = self.classes
            code = {c: i for i, c in enumerate(classes)}
            y = np.array([code.get(lab, -1) for lab in labels.tolist()], dtype=np.int64).reshape(-1)
            return RowTargets("classification", y >= 0, y, classes)
        return row_targets(self.keys, self.manifest.tasks[task].type, self._values(task))

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Inputs that gave no row: ``path``, ``key``, ``error``, ``message`` each."""
        return [failure.to_dict() for failure in self.manifest.failures]

    def output_name(self, name: str) -> str:
        """The output name of a layer given by its output name or its layer name."""
        for layer in self.spec.layers:
            if name in (layer.output, layer.name):
                return layer.output
        raise LayerNotInStoreError(
            f"layer {name!r} is not in store {self.path}; available: {', '.join(self.layers)}")

    def check_shards(self) -> None:
        """Check every shard's feature datasets against the layout the manifest records, as
        :meth:`load` does for the shards it reads (see :func:`~featurestore.hdf5_checks.check_feature_layouts`).

        Raises
        ------
        UnsafeStoreError, StoreDamagedError
        """
        for s, shard in enumerate(self.manifest.shards):
            self._check_layouts(s, shard_file(self.path, shard.file), self._layout(s))

    def _check_layouts(self, s: int, file: Path, names: Any) -> None:
        """Check the layouts of shard ``s``'s layers ``names`` not checked yet (once per opened store)."""
        layouts = self._layout(s)
        unchecked = {name: layouts[name] for name in names if (s, name) not in self._checked and name in layouts}
        if unchecked:
            check_feature_layouts(file, unchecked, set(layouts))
            self._checked.update((s, name) for name in unchecked)

    # --- loading ----------------------------------------------------------------------------
    def rows(self, split: str | None = None, view: int | None = 0) -> np.ndarray:
        """Indices of the rows of ``split`` (None: all) and ``view`` (None: all views)."""
        mask = np.ones(len(self), dtype=bool)
        if split is not None:
            if split not in set(self.splits.tolist()):
                present = sorted({s for s in self.splits.tolist() if s}) or ["(none)"]
                raise StoreError(f"split {split!r} is not in store {self.path}; splits: {', '.join(present)}")
            mask &= self.splits == split
        if view is not None:
            mask &= self.views == view
        return np.flatnonzero(mask)

    def rows_for_keys(self, keys: Sequence[str], view: int = 0) -> np.ndarray:
        """Row indices of ``keys`` (in that order) at ``view``; KeyError for a missing key."""
        if self._row_of is None:
            self._row_of = {(k, int(v)): i for i, (k, v) in enumerate(zip(self.keys.tolist(), self.views.tolist()))}
        try:
            return np.array([self._row_of[(k, view)] for k in keys], dtype=np.int64)
        except KeyError as exc:
            raise KeyNotInStoreError(f"key {exc.args[0][0]!r} (view {view}) is not in store {self.path}") from None

    def load(self, layers: Sequence[str] | str | None = None, split: str | None = None, view: int | None = 0,
             rows: np.ndarray | None = None, check: bool = True, task: str | None = None) -> FeatureSet:
        """Load features and row metadata.

        Every shard read whole, all its rows first to last in one block and all its layers (a
        load of the whole store, or of a split or view that covers the shard), is checked
        against its checksum in the manifest as it is read: its whole file is hashed (xxh3-128)
        while the feature bytes go straight into the returned arrays, and a mismatch raises
        :class:`~featurestore.errors.StoreDamagedError` naming the shard. Reads of part of a
        shard (some of its layers, scattered rows, a split or view that covers part of it) are
        not checked, since that would mean reading the whole file (5x the bytes for one layer
        of five); ``featurestore verify`` checks every shard.

        Parameters
        ----------
        layers : str or sequence of str, optional
            Output or layer names (default: every stored layer).
        split : str, optional
            Only rows of this split.
        view : int or None, default=0
            Only this view (0 = clean images); None loads every view.
        rows : numpy.ndarray, optional
            Explicit row indices (any order); overrides ``split`` and ``view``.
        check : bool, default=True
            Check the checksum of every shard read whole (see above); False skips it.
        task : str, optional
            Load only the rows that have a value for this task (see :attr:`tasks`), with ``y``
            and ``classes`` for it (see :class:`FeatureSet`); rows without a value are left out.

        Returns
        -------
        FeatureSet

        Raises
        ------
        StoreDamagedError
            A shard read whole differs from its checksum, or a shard's feature datasets are not
            where or of the shape the manifest records (checked before any array is allocated).
        TaskNotInStoreError
            ``task`` is not one of the store's tasks.
        """
        wanted = self.layers if layers is None else ([layers] if isinstance(layers, str) else list(layers))
        names = [self.output_name(n) for n in wanted]
        selected = self._check_rows(rows) if rows is not None else self.rows(split, view)
        targets = None
        if task is not None:
            targets = self.targets(task)
            selected = selected[targets.present[selected]]
        plan = self._plan(selected)
        shapes = self._checked_row_shapes(names, plan)  # before allocating: the manifest is untrusted
        out = {name: _page_aligned_empty((len(selected),) + shapes[name], self.dtype) for name in names}
        self._fill(out, plan, check)
        raw_keys = self._rows.keys[selected]
        if targets is not None:
            y = targets.y[selected]
            return FeatureSet(X=out, labels=_target_labels(targets.type, y, targets.classes),
                              splits=self.splits[selected], views=self.views[selected], y=y,
                              classes=targets.classes, key_source=lambda: _as_str(raw_keys),
                              path_source=lambda: self.paths[selected], task=task, task_type=targets.type)
        if "label" in self.manifest.tasks:  # labels updated by a task: coded from the strings
            targets = self.targets("label")
            return FeatureSet(X=out, labels=self.labels[selected], splits=self.splits[selected],
                              views=self.views[selected], y=targets.y[selected], classes=targets.classes,
                              key_source=lambda: _as_str(raw_keys), path_source=lambda: self.paths[selected])
        classes = self.classes
        lookup = {c: i for i, c in enumerate(classes)}
        rows = self._rows
        y_of_code = np.array([lookup.get(name, -1) for name in rows.label_names.tolist()] or [-1], dtype=np.int64)
        return FeatureSet(
            X=out, labels=self.labels[selected], splits=self.splits[selected],
            views=self.views[selected], y=y_of_code[rows.label_codes[selected]], classes=classes,
            key_source=lambda: _as_str(raw_keys), path_source=lambda: self.paths[selected],
        )

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        """Row indices as int64, negative ones counted from the end like numpy; IndexError-like error if out of range."""
        selected = np.asarray(rows, dtype=np.int64).reshape(-1)
        selected = np.where(selected < 0, selected + len(self), selected)
        if len(selected) and (selected.min() < 0 or selected.max() >= len(self)):
            raise RowIndexError(f"row indices must lie in [-{len(self)}, {len(self)}) for store {self.path}")
        return selected

    def _row_shape(self, name: str) -> tuple[int, ...]:
        """A layer's row shape, from the first shard holding rows (pooling 'none' keeps maps)."""
        for s, rows in enumerate(self._shard_rows):
            if rows:
                layout = self._layout(s)
                if name in layout:
                    return layout[name].shape[1:]
        return (self.dims[name],)

    def _plan(self, selected: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(shard, positions in the result, rows inside the shard) of every shard holding selected rows."""
        if not len(selected):
            return []
        starts = np.concatenate([[0], np.cumsum(self._shard_rows)])
        shard_of = np.searchsorted(starts, selected, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(len(self._shard_rows) + 1))
        return [(s, order[bounds[s]:bounds[s + 1]], selected[order[bounds[s]:bounds[s + 1]]] - starts[s])
                for s in range(len(self._shard_rows)) if bounds[s + 1] > bounds[s]]

    def _checked_row_shapes(self, names: list[str], plan: list[tuple[int, np.ndarray, np.ndarray]]
                            ) -> dict[str, tuple[int, ...]]:
        """Each layer's row shape, once every shard to be read has confirmed its recorded layout.

        A manifest recording a wider row than its shards hold would otherwise allocate the
        result (rows x that width) before any shard is opened.
        """
        shapes: dict[str, tuple[int, ...]] = {}
        for s, _, _ in plan:
            file = shard_file(self.path, self.manifest.shards[s].file)
            with self._reading(file):
                self._check_layouts(s, file, names)
            layouts = self._layout(s)
            for name in names:
                if name in layouts and shapes.setdefault(name, layouts[name].shape[1:]) != layouts[name].shape[1:]:
                    raise StoreDamagedError(f"shard {file}: layer {name} has rows of shape {layouts[name].shape[1:]}, "
                                            f"other shards {shapes[name]}; the store is damaged (run `featurestore "
                                            f"verify {self.path}`)")
        return {name: shapes[name] if name in shapes else self._row_shape(name) for name in names}

    @contextmanager
    def _reading(self, file: Path) -> Iterator[None]:
        """Turn what reading a damaged shard raises into one StoreError naming it."""
        try:
            yield
        except StoreError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot read shard {file}: {exc}; run `featurestore verify {self.path}`") from None

    def _fill(self, out: dict[str, np.ndarray], plan: list[tuple[int, np.ndarray, np.ndarray]],
              check: bool = True) -> None:
        """Read each shard once, straight into the preallocated arrays.

        A block of consecutive rows is one ``readinto`` at the dataset's offset in the file
        (no intermediate copy); scattered rows are gathered from a read-only memory map of
        the dataset, touching only the pages those rows lie on. A shard read whole, with
        ``check``, is read front to back and hashed on the way (:func:`_fill_checked`).
        """
        for s, dest, local in plan:
            shard = self.manifest.shards[s]
            file = shard_file(self.path, shard.file)
            with self._reading(file):
                layouts = self._layout(s)
                raw = {name: layouts.get(name) for name in out}
                raw = {name: layout for name, layout in raw.items() if layout is not None
                       and layout.offset is not None and layout.dtype == out[name].dtype}
                whole = (_is_range(dest) and _is_range(local) and local[0] == 0 and len(local) == self._shard_rows[s]
                         and set(out) >= set(layouts))  # every row of every layer: the file is read anyway
                if check and whole:
                    _fill_checked(file, shard, {name: (layout, out[name][dest[0]:dest[-1] + 1])
                                                for name, layout in raw.items()})
                for name, array in out.items():
                    if name not in raw:
                        _fill_h5py(file, name, array, dest, local)
                    elif not (check and whole):
                        _fill_raw(file, raw[name], array, dest, local)

    # --- splits, duplicates, leakage ---------------------------------------------------------
    def stratified_split(self, test_size: float = 0.2, seed: int = 0) -> np.ndarray:
        """A deterministic train/test tag per row, stratified by label and decided by key.

        Each key's rank inside its class, ordered by ``sha256(seed:key)``, decides its split, so
        the split is stable across runs, row orders and added images, and all views of one
        image fall on the same side.

        Returns
        -------
        numpy.ndarray of str
            ``"train"`` or ``"test"`` per row.
        """
        if not 0.0 < test_size < 1.0:
            raise StoreError(f"test_size must be between 0 and 1, got {test_size}")
        out = np.full(len(self), "train", dtype=object)
        by_label: dict[str, list[str]] = defaultdict(list)
        for key, label in dict(zip(self.keys.tolist(), self.labels.tolist())).items():
            by_label[label].append(key)
        test_keys: set[str] = set()
        for keys in by_label.values():
            ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
            test_keys.update(ranked[: int(round(test_size * len(ranked)))])
        out[np.isin(self.keys, list(test_keys))] = "test"
        return out

    def aliases(self) -> dict[str, np.ndarray]:
        """Every other (key, path, label, split) at which stored content was seen."""
        return {**self._rows.aliases, "keys": _as_str(self._rows.aliases["keys"])}

    def sightings(self) -> dict[str, list[tuple[str, str, str]]]:
        """Every (path, label, split) seen for each key, rows first (clean view only)."""
        seen: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        clean = self.views == 0
        for k, p, lab, s in zip(self.keys[clean].tolist(), self.paths[clean].tolist(),
                                self.labels[clean].tolist(), self.splits[clean].tolist()):
            seen[k].append((p, lab, s))
        al = self.aliases()
        for k, p, lab, s in zip(al["keys"].tolist(), al["paths"].tolist(), al["labels"].tolist(),
                                al["split"].tolist()):
            seen[k].append((p, lab, s))
        return seen

    def duplicates(self) -> dict[str, list[str]]:
        """Keys whose content was seen at more than one path: key -> paths."""
        return {k: [p for p, _, _ in v] for k, v in self.sightings().items() if len(v) > 1}

    def label_conflicts(self) -> dict[str, list[str]]:
        """Keys seen with more than one label: key -> sorted labels."""
        out = {}
        for key, seen in self.sightings().items():
            labels = sorted({lab for _, lab, _ in seen if lab})
            if len(labels) > 1:
                out[key] = labels
        return out

    def leakage(self) -> dict[str, list[str]]:
        """Keys seen in more than one split (e.g. the same image in train and test): key -> splits."""
        out = {}
        for key, seen in self.sightings().items():
            splits = sorted({s for _, _, s in seen if s})
            if len(splits) > 1:
                out[key] = splits
        return out


def _fill_raw(file: Path, layout: FeatureLayout, array: np.ndarray, dest: np.ndarray, local: np.ndarray) -> None:
    """Copy rows ``local`` of a contiguous dataset into ``array[dest]`` straight from the file."""
    if _is_range(local) and _is_range(dest):
        target = memoryview(array[dest[0]:dest[-1] + 1]).cast("B")
        with open(open_store_file(file, "shard"), "rb", buffering=0) as fh:
            fh.seek(layout.offset + int(local[0]) * layout.row_bytes)
            done = 0
            while done < len(target):
                got = fh.readinto(target[done:])
                if not got:
                    raise StoreError(f"the file ends {len(target) - done} bytes early")
                done += got
        return
    with open(open_store_file(file, "shard"), "rb", buffering=0) as fh:
        mapped = np.memmap(fh, dtype=layout.dtype, mode="r", offset=layout.offset, shape=layout.shape)
    try:
        # mode="clip" (the rows are checked already): with the default mode numpy buffers `out`,
        # which made gathering 5,000 rows 4x slower
        if _is_range(dest):
            np.take(mapped, local, axis=0, out=array[dest[0]:dest[-1] + 1], mode="clip")
        else:
            array[dest] = np.take(mapped, local, axis=0, mode="clip")
    finally:
        del mapped


#: Bytes read and hashed at a time by a checked read: small enough to stay in the CPU's cache
#: between the copy and the hash, large enough that the system calls do not count.
_HASHED_PIECE = 1 << 20


def _fill_checked(file: Path, shard: ShardEntry, targets: dict[str, tuple[FeatureLayout, np.ndarray]]) -> None:
    """Read a shard front to back, each layer of ``targets`` straight into its array and the rest
    into a scratch buffer, hashing every byte; raise StoreDamagedError unless the hash is the
    shard's checksum in the manifest (xxh3-128; sha256 in entries written before schema 2)."""
    expected = shard.checksum
    if shard.checksum_field == "checksum" and expected.startswith(CHECKSUM_PREFIX):
        import xxhash

        digest, prefix = xxhash.xxh3_128(), CHECKSUM_PREFIX
    else:
        digest, prefix = hashlib.sha256(), ""
        expected = expected if shard.checksum_field == "sha256" else None
    regions = sorted(((layout.offset, memoryview(array).cast("B")) for layout, array in targets.values()),
                     key=lambda region: region[0])
    scratch = memoryview(bytearray(1 << 20))
    with open(open_store_file(file, "shard"), "rb", buffering=0) as fh:
        position = 0
        for offset, target in regions + [(None, None)]:
            while offset is None or position < offset:  # bytes before the next layer, or after the last one
                got = fh.readinto(scratch[:len(scratch) if offset is None else min(len(scratch), offset - position)])
                if not got:
                    break
                digest.update(scratch[:got])
                position += got
            if offset is None:
                break
            if position != offset:  # the file ends first, or layers overlap
                raise StoreDamagedError(f"shard {file}: its recorded layout does not fit the file; the store is "
                                        "damaged (run `featurestore verify`)")
            done = 0
            while done < len(target):  # in pieces hashed while they are still in the CPU's cache
                got = fh.readinto(target[done:done + _HASHED_PIECE])
                if not got:
                    raise StoreDamagedError(f"shard {file} ends {len(target) - done} bytes early; the store is "
                                            "damaged (run `featurestore verify`)")
                digest.update(target[done:done + got])
                done += got
            position += done
    if prefix + digest.hexdigest() != expected:
        raise StoreDamagedError(f"shard {file} differs from its checksum in the manifest (its bytes changed since "
                                "it was written); the store is damaged: run `featurestore verify`")


def _fill_h5py(file: Path, name: str, array: np.ndarray, dest: np.ndarray, local: np.ndarray) -> None:
    """Copy rows ``local`` of a dataset into ``array[dest]`` through h5py (any storage layout)."""
    with open_shard(file) as f:
        dataset = f["features"][name]
        if _is_range(local) and _is_range(dest):
            dataset.read_direct(array, np.s_[local[0]:local[-1] + 1], np.s_[dest[0]:dest[-1] + 1])
        else:
            low = int(local.min())
            array[dest] = dataset[low:int(local.max()) + 1][local - low]


def _page_aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 4 KiB boundary, like the feature datasets in a shard:
    copying page-aligned file data into memory 16 bytes past a page boundary (where large numpy
    arrays start) measured 1.45x slower than into page-aligned memory."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buffer = np.empty(nbytes + 4096, dtype=np.uint8)
    start = -buffer.ctypes.data % 4096
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def _as_str(keys: np.ndarray) -> np.ndarray:
    """Fixed-length bytes keys as a str array: widened without decoding when they are ASCII (hex keys are)."""
    if not len(keys):
        return np.array([], dtype=f"<U{max(keys.dtype.itemsize, 1)}")
    raw = np.ascontiguousarray(keys).view(np.uint8)
    if raw.max() < 128:
        return raw.astype(np.uint32).view(f"<U{keys.dtype.itemsize}").reshape(keys.shape)
    return keys.astype(str)


def _is_range(index: np.ndarray) -> bool:
    return bool(len(index)) and int(index[-1]) - int(index[0]) + 1 == len(index) and bool(np.all(np.diff(index) == 1))


def resolve_layers(stores: Sequence[FeatureStore], layers: Sequence[str] | None) -> list[list[str]]:
    """For each store, the output names of the requested layers it holds (in store order).

    Each requested name is an output name (``features.18.avg``) or a layer name
    (``features.18``), resolved by :meth:`FeatureStore.output_name`; with several stores (e.g.
    several backbones) each store takes the names it has.

    Parameters
    ----------
    stores : sequence of FeatureStore
    layers : sequence of str or None
        None: every layer of every store.

    Returns
    -------
    list of list of str
        One list of output names per store.

    Raises
    ------
    LayerNotInStoreError
        A requested name is in none of the stores, or a store holds none of them.
    """
    if layers is None:
        return [list(store.layers) for store in stores]
    wanted = list(layers)
    chosen: list[list[str]] = []
    found: set[str] = set()
    for store in stores:
        names = []
        for name in wanted:
            try:
                output = store.output_name(name)
            except LayerNotInStoreError:
                continue
            found.add(name)
            if output not in names:
                names.append(output)
        chosen.append([n for n in store.layers if n in names])
    unknown = [name for name in wanted if name not in found]
    if unknown:
        where = "; ".join(f"{store.path}: {', '.join(store.layers)}" for store in stores)
        raise LayerNotInStoreError(f"layer(s) {', '.join(map(repr, unknown))} in none of the stores; available: {where}")
    for store, names in zip(stores, chosen):
        if not names:
            raise LayerNotInStoreError(f"none of the layers {', '.join(wanted)} is in store {store.path}; "
                                       f"it has {', '.join(store.layers)}")
    return chosen


def store_names(paths: Sequence[str | Path]) -> list[str]:
    """How a join and a bench name stores: each store folder's name, a name already taken followed by
    ``_`` until it is free (``["a/s", "b/s"]`` -> ``["s", "s_"]``). Joined layers are ``<name>/<output>``."""
    used: set[str] = set()
    names = []
    for path in paths:
        name = Path(path).name or str(path)
        while name in used:
            name = f"{name}_"
        used.add(name)
        names.append(name)
    return names


def join_stores(stores: Sequence[FeatureStore], layers: Sequence[str] | None = None, split: str | None = None,
                view: int = 0) -> FeatureSet:
    """Join several stores (e.g. several backbones over the same images) by key.

    Rows are the keys present in every store, in the first store's order (restricted to
    ``split``); each layer appears as ``"<store>/<output>"``, the store named as :func:`store_names`
    names it (its folder's name), as the bench names the layers of stores it joins.

    Parameters
    ----------
    stores : sequence of FeatureStore
    layers : sequence of str, optional
        Output or layer names; each store contributes those it has (default: all of each
        store's layers). See :func:`resolve_layers`.
    split : str, optional
        Filter on the first store's split tags.
    view : int, default=0

    Raises
    ------
    LayerNotInStoreError
        A requested layer is in none of the stores, or a store holds none of them.
    """
    if not stores:
        raise StoreError("join_stores needs at least one store")
    first = stores[0]
    base = first.rows(split, view)
    common = set(first.keys[base].tolist())
    for other in stores[1:]:
        common &= set(other.keys[other.views == view].tolist())
    base = base[np.isin(first.keys[base], list(common))]
    keys = first.keys[base].tolist()
    X: dict[str, np.ndarray] = {}
    for prefix, store, wanted in zip(store_names([s.path for s in stores]), stores, resolve_layers(stores, layers)):
        part = store.load(wanted, rows=store.rows_for_keys(keys, view))
        X.update({f"{prefix}/{name}": values for name, values in part.X.items()})
    meta = first.load([], rows=base)
    return FeatureSet(X=X, labels=meta.labels, splits=meta.splits, views=meta.views, y=meta.y, classes=meta.classes,
                      key_source=lambda: meta.keys, path_source=lambda: meta.paths)


def open_store(path: str | Path) -> FeatureStore:
    """Open the store at ``path`` for reading.

    Examples
    --------
    >>> store = open_store("runs/fmnist")  # doctest: +SKIP
    >>> train = store.load(split="train")  # doctest: +SKIP
    >>> train.X["pre_logits"].shape, train.y.shape  # doctest: +SKIP
    """
    return FeatureStore(path)
