"""Tasks: named sets of targets (classification, regression, multilabel) attached to a store.

Features are computed once per image; targets change. A task gives a value to content keys
(a class, a float, or a set of labels), so it applies to every row (every view) of that
content, costs no image decoding to attach or change, and survives re-extraction. The
labels recorded at extraction are the task ``label``; attaching a task named ``label``
updates them.

:func:`attach_task` (``featurestore label``) reads a table, matches its rows to the store by
path or content key, and commits the values that differ from the task's current ones,
through the store's journal under its writer lock: each commit writes one new task file
atomically and appends one fsynced journal record naming it (see
:mod:`featurestore.task_files`), so a kill at any moment leaves the task as it was after
some number of commits, and a rerun commits what is still missing.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import OptionsError, TaskTableError
from .manifest import Manifest
from .metadata import TASK_TYPES, JournalRecord, TaskEntry, check_task_name
from .store import FeatureStore, open_store
from .store_paths import TASK_DIR, store_folder
from .task_files import Value, task_values, write_task_part
from .writer import StoreWriter

__all__ = ["TASK_TYPES", "KEY_COLUMNS", "LabelReport", "attach_task", "infer_task_type", "parse_value",
           "task_summary", "parse_task_types", "table_task_columns", "check_task_types", "attach_table_columns"]

#: The column a table's rows are matched by, for each ``key`` mode.
KEY_COLUMNS = {"path": ("path",), "sha256": ("sha256", "key")}
#: Values committed per task file (a kill loses at most this many values' work).
COMMIT_ROWS = 1 << 16
#: How many unmatched rows, conflicts and invalid values a report lists.
SHOWN = 5


def parse_value(cell: str, task_type: str, sep: str = "|") -> Value:
    """A table cell as a value of ``task_type``: a class name, a finite float, or a sorted tuple of labels.

    Raises
    ------
    ValueError
        The cell is not a value of that type (a number that does not parse; :class:`TaskTableError`
        for one that is not finite or a label set with no label).
    """
    text = cell.strip()
    if task_type == "regression":
        number = float(text)
        if not math.isfinite(number):
            raise TaskTableError(f"{text!r} is not a finite number")
        return number
    if task_type == "multilabel":
        labels = tuple(sorted({part.strip() for part in text.split(sep) if part.strip()}))
        if not labels:
            raise TaskTableError(f"{text!r} names no label")
        return labels
    return text


def infer_task_type(cells: list[str], sep: str = "|") -> str:
    """The type a column of non-empty cells suggests: ``regression`` when every cell is a finite
    number, ``multilabel`` when a cell holds ``sep``, else ``classification``."""
    try:
        for cell in cells:
            parse_value(cell, "regression")
        if cells:
            return "regression"
    except ValueError:
        pass
    return "multilabel" if any(sep in cell for cell in cells) else "classification"


@dataclass(frozen=True)
class LabelReport:
    """What :func:`attach_task` did.

    Attributes
    ----------
    store : Path
    task : str
    type : str
    table_rows : int
        Data rows of the table.
    keys : int
        Distinct contents the table gave a value (conflicts left out).
    added, changed, unchanged : int
        Of those, how many had no value before, had another one, or had this one already.
    commits : int
        Journal records committed (0: the store was left untouched).
    empty : int
        Rows whose value cell is empty (no value: not part of the task).
    problems : dict of str to (int, list of str)
        ``unmatched`` (rows whose path or key is not in the store), ``conflicting`` (contents
        given different values; none of them is written), ``invalid`` (cells that are not a
        value of the type): the count and the first few, described.
    """

    store: Path
    task: str
    type: str
    table_rows: int
    keys: int
    added: int
    changed: int
    unchanged: int
    commits: int
    empty: int = 0
    problems: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [f"task {self.task} ({self.type}) in {self.store}: {self.table_rows} table rows, {self.keys} contents "
               f"valued: {self.added} added, {self.changed} changed, {self.unchanged} unchanged; "
               f"{self.commits} commit(s)" + (f"; {self.empty} empty cells skipped" if self.empty else "")]
        for kind, (count, shown) in self.problems.items():
            if count:
                out.append(f"{kind}: {count}" + (f" (first {len(shown)})" if count > len(shown) else ""))
                out.extend(f"  {item}" for item in shown)
        return out


def _read_table(table: Path, key: str, task: str | None) -> tuple[str, str, list[tuple[int, str, str]]]:
    """(key column, value column, [(line, key cell, value cell)]) of a CSV/TSV table with a header."""
    delimiter = "\t" if table.suffix.lower() == ".tsv" else ","
    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise TaskTableError(f"table {table} is empty; its first row must name the columns, e.g. path,label")
            names = [h.strip() for h in header]
            lower = [n.lower() for n in names]
            key_column = next((c for c in KEY_COLUMNS[key] if c in lower), None)
            if key_column is None:
                raise TaskTableError(f"table {table} has no {' or '.join(KEY_COLUMNS[key])} column (header: "
                                     f"{', '.join(names)}); name one, or match by the other key (--key)")
            key_at = lower.index(key_column)
            others = [n for i, n in enumerate(names) if i != key_at]
            if task is not None and task in names:
                value_at = names.index(task)
            elif len(others) == 1:
                value_at = names.index(others[0])
            else:
                raise TaskTableError(f"table {table}: which column holds the task's values? Its columns are "
                                     f"{', '.join(names)}; name one with --task")
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                cells = row + [""] * (len(names) - len(row))
                rows.append((reader.line_num, cells[key_at].strip(), cells[value_at]))
            return names[key_at], names[value_at], rows
    except FileNotFoundError:
        raise TaskTableError(f"table {table} does not exist") from None
    except (UnicodeDecodeError, csv.Error, IsADirectoryError) as exc:
        raise TaskTableError(f"cannot read table {table}: {type(exc).__name__}: {exc}") from None


def _key_lookup(store: FeatureStore, key: str, table: Path) -> Any:
    """A function: table key cell -> set of content keys it names in the store."""
    if key == "sha256":
        known = set(store.keys.tolist())
        return lambda cell: {cell.lower()} if cell.lower() in known else set()
    by_path: dict[str, set[str]] = {}
    aliases = store.aliases()
    for k, p in zip(store.keys.tolist() + aliases["keys"].tolist(), store.paths.tolist() + aliases["paths"].tolist()):
        by_path.setdefault(p, set()).add(k)
    folder = table.absolute().parent

    def lookup(cell: str) -> set[str]:
        found = by_path.get(cell)
        if found is None and not Path(cell).is_absolute():
            found = by_path.get(str(folder / cell))
        return found or set()
    return lookup


def _current(store: FeatureStore, task: str) -> dict[str, Value]:
    """Key -> the task's value now (for ``label``: the extracted labels, updated by the task's values)."""
    if task == "label":
        return {k: lab for k, lab in zip(store.keys.tolist(), store.labels.tolist()) if lab}
    if task in store.manifest.tasks:
        return dict(task_values(store.path, store.manifest.tasks[task]))
    return {}


def _clear_unnamed_task_files(path: Path, manifest: Manifest) -> None:
    """Delete files in ``STORE/tasks/`` no task names: left by a killed run, or replaced by a merge
    (only while holding the writer lock)."""
    directory = store_folder(path, TASK_DIR)
    if not directory.is_dir():
        return
    named = {Path(part.file).name for task in manifest.tasks.values() for part in task.parts}
    for item in directory.iterdir():
        if item.name not in named and (item.is_file() or item.is_symlink()):
            item.unlink(missing_ok=True)


def attach_task(store: str | Path, table: str | Path, *, task: str | None = None, task_type: str | None = None,
                key: str = "path", sep: str = "|", commit_rows: int = COMMIT_ROWS,
                source: str | None = None) -> LabelReport:
    """Attach a task to a store, or update it, from a table of values; no image is read.

    The table is a CSV (TSV for ``.tsv``) with a header: a key column (``path``; or
    ``sha256``/``key`` with ``key="sha256"``) and the values' column (the one named ``task``,
    or the only other column). Each row's value goes to the content its path or key names in
    the store, and so to every row (view) of that content. Rows naming nothing in the store,
    cells that are not a value of the type, and contents given different values (by two paths
    of the same content, say) are reported, never guessed: none of them is written. An empty
    cell gives no value.

    Only values that differ from the task's current ones are committed, ``commit_rows`` per
    journal record, each record naming one new task file; a task left in several files is
    then merged into one. A kill at any moment leaves a store that opens and verifies, with
    some of the values committed; rerunning the same command commits the rest.

    Parameters
    ----------
    store : str or Path
    table : str or Path
    task : str, optional
        The task's name (default: the table's value column's name).
    task_type : {'classification', 'regression', 'multilabel'}, optional
        Default: the existing task's type, else inferred from the values (:func:`infer_task_type`).
    key : {'path', 'sha256'}, default='path'
        How rows are matched: by the path the content was extracted from, or by its content key.
    sep : str, default='|'
        Separator of a multilabel cell's labels.
    commit_rows : int, default=65536
        Values per commit.
    source : str, optional
        Where the values came from, for the store's run record (default: the table's path).

    Returns
    -------
    LabelReport

    Raises
    ------
    TaskTableError
        The table cannot be read, has no key or value column, or ``task_type`` differs from
        the existing task's type.
    OptionsError
        An unknown ``key`` or ``task_type``, a bad task name, or ``commit_rows`` < 1.
    StoreLockedError
        Another process is writing to the store.
    """
    path, table = Path(store), Path(table)
    if key not in KEY_COLUMNS:
        raise OptionsError(f"--key must be one of {', '.join(KEY_COLUMNS)}, got {key!r}")
    if task_type is not None and task_type not in TASK_TYPES:
        raise OptionsError(f"--type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    if isinstance(commit_rows, bool) or not isinstance(commit_rows, int) or commit_rows < 1:
        raise OptionsError(f"commit_rows must be an integer >= 1, got {commit_rows!r}")
    if not sep:
        raise OptionsError("the multilabel separator must not be empty")
    _, column, rows = _read_table(table, key, task)
    name = task if task is not None else column
    if not check_task_name(name):
        raise OptionsError(f"task name {name!r} is not valid: use 1 to 64 letters, digits, '_', '.' or '-', starting "
                           "with a letter or digit (--task NAME)")
    manifest = Manifest.load(path)  # refuses a path that is not a store before the writer would create one
    writer = StoreWriter(path, manifest.config, manifest.spec)
    try:
        _clear_unnamed_task_files(path, writer.manifest)
        reader = open_store(path)
        existing = reader.tasks.get(name)
        if existing is not None and task_type is not None and task_type != existing:
            raise TaskTableError(f"task {name!r} of {path} is {existing}, not {task_type}; attach the table as a new "
                                 "task (--task NEW_NAME)")
        if name == "label" and (task_type or "classification") != "classification":
            raise TaskTableError(f"the task 'label' is the store's class labels; attach {task_type} values under "
                                 "another name (--task NAME)")
        filled = [(line, cell, value) for line, cell, value in rows if value.strip()]
        chosen = existing or task_type or infer_task_type([value for _, _, value in filled], sep)
        lookup = _key_lookup(reader, key, table)
        given: dict[str, dict[Value, int]] = {}
        unmatched, invalid, ambiguous = [], [], []
        for line, cell, text in filled:
            keys = lookup(cell)
            if not keys:
                unmatched.append(f"line {line}: {cell!r} is not in the store")
                continue
            if len(keys) > 1:
                ambiguous.append(f"line {line}: {cell!r} names {len(keys)} contents (the file changed between runs)")
                continue
            try:
                value = parse_value(text, chosen, sep)
            except ValueError as exc:
                invalid.append(f"line {line}: {exc}, not a {chosen} value")
                continue
            given.setdefault(next(iter(keys)), {}).setdefault(value, line)
        conflicting = [f"{k[:16]}...: " + "; ".join(f"{_show(v)} (line {line})" for v, line in values.items())
                       for k, values in given.items() if len(values) > 1]
        wanted = {k: next(iter(values)) for k, values in given.items() if len(values) == 1}
        current = _current(reader, name)
        changes = [(k, v) for k, v in wanted.items() if current.get(k) != v]
        added = sum(1 for k, _ in changes if k not in current)
        entry = writer.manifest.tasks.get(name) or TaskEntry(name, chosen, ())
        commits = 0
        for start in range(0, len(changes), commit_rows):
            chunk = changes[start:start + commit_rows]
            part = write_task_part(path, f"{writer.run_id}-{commits:05d}.h5", chosen, [k for k, _ in chunk],
                                   [v for _, v in chunk])
            entry = TaskEntry(name, chosen, entry.parts + (part,))
            writer.commit_record(JournalRecord(task=entry))
            commits += 1
        if len(entry.parts) > 1:  # merged into one file, so that opening the task reads one
            merged = task_values(path, entry)
            part = write_task_part(path, f"{writer.run_id}-{commits:05d}.h5", chosen, list(merged),
                                   list(merged.values()))
            entry = TaskEntry(name, chosen, (part,))
            writer.commit_record(JournalRecord(task=entry))
            commits += 1
            _clear_unnamed_task_files(path, writer.manifest)
        writer.close(run={"featurestore": __version__, "task": name, "type": chosen, "table": source or str(table.absolute()),
                          "values": len(changes)})
    except BaseException:
        writer.close()
        raise
    problems = {name_: (len(items), items[:SHOWN]) for name_, items in
                (("unmatched", unmatched), ("conflicting", conflicting + ambiguous), ("invalid", invalid))}
    return LabelReport(path, name, chosen, len(rows), len(wanted), added, len(changes) - added,
                       len(wanted) - len(changes), commits, len(rows) - len(filled), problems)


def _show(value: Value) -> str:
    return "|".join(value) if isinstance(value, tuple) else repr(value) if isinstance(value, float) else value


def task_summary(store: FeatureStore) -> dict[str, dict[str, Any]]:
    """Each task's type, coverage (clean rows with a value, of clean rows) and classes (with their
    counts) or value range, as plain JSON data (for ``featurestore info``)."""
    clean = store.views == 0
    out: dict[str, dict[str, Any]] = {}
    for name, kind in store.tasks.items():
        targets = store.targets(name)
        present = targets.present & clean
        info: dict[str, Any] = {"type": kind, "rows": int(present.sum()), "of": int(clean.sum())}
        y = targets.y[present]
        if kind == "classification":
            counts = Counter(y.tolist())
            info["classes"] = {c: counts.get(i, 0) for i, c in enumerate(targets.classes)}
        elif kind == "multilabel":
            info["labels"] = dict(zip(targets.classes, (int(n) for n in y.sum(axis=0).tolist())))
        else:
            info["range"] = ([float(y.min()), float(y.max())] if len(y) else None)
            info["mean"] = float(np.mean(y)) if len(y) else None
        out[name] = info
    return out


#: Columns of an image list that are not tasks (see :class:`~featurestore.sources.CsvSource`).
_SOURCE_COLUMNS = ("path", "label", "split")


def parse_task_types(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``NAME=TYPE`` items (``--task-type``) as name -> type.

    Raises
    ------
    OptionsError
        An item is not ``NAME=TYPE`` with a valid task name and a known type, or names a task twice.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, kind = str(item).partition("=")
        name, kind = name.strip(), kind.strip()
        if not sep or not check_task_name(name) or kind not in TASK_TYPES:
            raise OptionsError(f"--task-type takes NAME=TYPE with TYPE one of {', '.join(TASK_TYPES)}, got {item!r}")
        if name in out:
            raise OptionsError(f"--task-type names task {name!r} twice")
        out[name] = kind
    return out


def table_task_columns(table: str | Path) -> list[str]:
    """The columns of an image list (CSV/TSV with a header) that become tasks at extraction: every
    column but ``path``, ``label`` and ``split`` whose name is a valid task name."""
    table = Path(table)
    delimiter = "\t" if table.suffix.lower() == ".tsv" else ","
    try:
        with open(table, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None) or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskTableError(f"cannot read table {table}: {type(exc).__name__}: {exc}") from None
    names = [cell.strip() for cell in header]
    return [n for n in names if n.lower() not in _SOURCE_COLUMNS and check_task_name(n) and names.count(n) == 1]


def check_task_types(table: str | Path, task_types: dict[str, str] | None) -> list[str]:
    """The table's task columns, once every name in ``task_types`` is one of them.

    Raises
    ------
    OptionsError
        ``task_types`` names a column the table does not have as a task column.
    """
    columns = table_task_columns(table)
    unknown = sorted(set(task_types or {}) - set(columns))
    if unknown:
        raise OptionsError(f"--task-type names {', '.join(map(repr, unknown))}, not a task column of {table} "
                           f"(its task columns: {', '.join(columns) or 'none'})")
    return columns


def attach_table_columns(store: str | Path, table: str | Path, task_types: dict[str, str] | None = None,
                         sep: str = "|") -> list[LabelReport]:
    """Attach each task column of an image list (:func:`table_task_columns`) to the store extracted
    from it, matched by path: the type from ``task_types`` (name -> type), else inferred.

    Raises
    ------
    OptionsError
        ``task_types`` names a column the table does not have as a task column.
    """
    columns = check_task_types(table, task_types)
    return [attach_task(store, table, task=column, task_type=(task_types or {}).get(column), sep=sep)
            for column in columns]


def check_source_task_types(source: Any, task_types: dict[str, str] | None) -> dict[str, str]:
    """A Parquet/Arrow source's task columns and their types (:meth:`TableSource.task_columns`),
    ``task_types`` (name -> type) applied, once every name in it is one of them.

    Raises
    ------
    OptionsError
        ``task_types`` names a column that is not a task column of the source.
    """
    columns = source.task_columns()
    unknown = sorted(set(task_types or {}) - set(columns))
    if unknown:
        raise OptionsError(f"--task-type names {', '.join(map(repr, unknown))}, not a task column of {source.root} "
                           f"(its task columns: {', '.join(columns) or 'none'})")
    return columns | dict(task_types or {})


def attach_source_columns(store: str | Path, source: Any, task_types: dict[str, str] | None = None,
                          sep: str = "|") -> list[LabelReport]:
    """Attach each task column of a Parquet/Arrow source (a ``TableSource``) to the store extracted
    from it, matched by the path each row was recorded under, as :func:`attach_table_columns` does
    for a CSV image list; the type from ``task_types``, else the task's type in the store, else the
    column's (numbers: regression, a ``ClassLabel`` or text: classification, lists of text:
    multilabel)."""
    import tempfile

    reports = []
    existing = open_store(store).tasks
    with tempfile.TemporaryDirectory(prefix="featurestore-task-") as folder:
        for column, kind in check_source_task_types(source, task_types).items():
            kind = (task_types or {}).get(column) or existing.get(column) or kind
            table = Path(folder) / "values.csv"
            with open(table, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["path", column])
                writer.writerows(source.task_cells(column, sep))
            reports.append(attach_task(store, table, task=column, task_type=kind, sep=sep,
                                       source=f"{source.root}, column {column}"))
    return reports
