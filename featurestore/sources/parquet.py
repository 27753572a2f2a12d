"""Images stored in tables: Parquet files, Arrow files and folders written by ``datasets.save_to_disk``.

Read with pyarrow (``pip install 'featurestore[parquet]'``) batch by batch, so memory holds one
batch of rows (Parquet: one row group) whatever the size of the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._atomic import read_regular_file
from .._folder import SPLIT_NAMES
from ..errors import ArchiveMemberError, BackendUnavailableError, SourceError
from ..metadata import check_task_name
from .item import MAX_FILE_BYTES, SourceItem
from .members import InMemory, Refused, member_path, unsafe_name

__all__ = ["BATCH_ROWS", "HF_MARKERS", "TableSource", "is_table_folder"]

#: Rows read at a time.
BATCH_ROWS = 64
#: Files that mark a folder written by ``datasets.save_to_disk`` (a Dataset, or a DatasetDict).
HF_MARKERS = ("state.json", "dataset_dict.json")
#: Column names taken as the image column when no feature says which (in this order).
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "image_bytes")
_META_MAX_BYTES = 64 << 20


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("reading Parquet or Arrow files needs pyarrow: "
                                      "pip install 'featurestore[parquet]'") from None
    return pyarrow


def is_table_folder(path: Path) -> bool:
    """Whether a folder is a ``save_to_disk`` folder, or holds Parquet files."""
    return any((path / marker).is_file() for marker in HF_MARKERS) or next(path.rglob("*.parquet"), None) is not None


class _Table:
    """One file of a table source: where it is, its split, and the features that describe its columns."""

    def __init__(self, path: Path, split: str | None, root: Path, features: dict[str, Any] | None) -> None:
        self.path, self.split, self.root, self.features = path, split, root, features


class TableSource:
    """Images in a table: a ``.parquet`` file or folder, an ``.arrow`` file, or a ``save_to_disk`` folder.

    Each row is one item with the path ``FILE#ROW`` (row index in its file). The image column
    holds encoded image bytes, or Hugging Face ``Image`` structs ``{bytes, path}``. A struct
    without bytes is read from ``path`` only when that path is relative and stays inside the
    dataset's folder (symbolic links resolved); any other path is untrusted and never opened.

    Columns are found so:

    - image: ``image_from``, else the feature of type ``Image``, else a column named as in
      ``IMAGE_COLUMNS``, else the one binary or ``{bytes, path}`` column;
    - label: ``label_from`` (``none`` for unlabelled), else the feature of type
      ``ClassLabel``, else a column named ``label``. A ``ClassLabel`` index becomes its class
      name (an index of -1 or null: unlabelled);
    - split: a column named ``split``; else the split of a ``DatasetDict`` folder, the
      ``_split`` of a Dataset's ``state.json``, or a top folder or file-name prefix that is a
      split name (``train/x.parquet``, ``data/train-00000-of-00001.parquet``).

    Features come from ``dataset_info.json`` (``save_to_disk``) or the ``huggingface``
    key of the schema metadata (Parquet and Arrow files written by ``datasets``).
    Rows whose image is null, not bytes, or over ``max_file_bytes``, or whose label index is
    outside the class names, are recorded as failures by ``extract``.

    Parameters
    ----------
    path : str or os.PathLike
    label_from, image_from : str, optional
        The label and image columns.
    max_file_bytes : int, default=MAX_FILE_BYTES

    Raises
    ------
    SourceError
        No table there, a table without an image column (or with several candidates), a
        missing named column, or a ``save_to_disk`` folder whose JSON files are malformed.
    BackendUnavailableError
        pyarrow is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], label_from: str | None = None, image_from: str | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.pa = _pyarrow()
        self.root = Path(path).absolute()
        self.label_from, self.image_from, self.max_file_bytes = label_from, image_from, max_file_bytes
        self.tables = self._find_tables()
        self.name = f"table:{self.root}"
        self._columns = [self._pick_columns(table) for table in self.tables]
        self._length: int | None = None
        self._classes: tuple[str, ...] | None = None

    # --------------------------------------------------------------------------- finding tables

    def _find_tables(self) -> list[_Table]:
        root = self.root
        if root.is_file():
            return [_Table(root, _split_of_name(root.name), root.parent, None)]
        if not root.is_dir():
            raise SourceError(f"table {str(root)!r} does not exist")
        if (root / "dataset_dict.json").is_file():
            splits = _read_json(root / "dataset_dict.json").get("splits")
            if not isinstance(splits, list) or not all(isinstance(s, str) and unsafe_name(s) is None
                                                       and "/" not in s for s in splits):
                raise SourceError(f"{str(root / 'dataset_dict.json')!r} must list its splits as folder names")
            return [table for split in splits for table in self._hf_dataset(root / split, split)]
        if (root / "state.json").is_file():
            return self._hf_dataset(root, None)
        files = sorted(root.rglob("*.parquet"))
        files = [f for f in files if not any(part.startswith(".") for part in f.relative_to(root).parts)]
        if not files:
            raise SourceError(f"no Parquet files in {str(root)!r} (nor a dataset_dict.json or state.json written "
                              "by datasets.save_to_disk)")
        tables = []
        for f in files:
            parts = f.relative_to(root).parts
            split = parts[0] if len(parts) > 1 and parts[0].lower() in SPLIT_NAMES else _split_of_name(f.name)
            tables.append(_Table(f, split, root, None))
        return tables

    def _hf_dataset(self, folder: Path, split: str | None) -> list[_Table]:
        state = _read_json(folder / "state.json")
        info = _read_json(folder / "dataset_info.json") if (folder / "dataset_info.json").is_file() else {}
        files = state.get("_data_files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str)
                                                  for f in files):
            raise SourceError(f"{str(folder / 'state.json')!r} has no _data_files list of {{filename}}")
        if split is None and isinstance(state.get("_split"), str):
            split = state["_split"]
        features = info.get("features") if isinstance(info.get("features"), dict) else None
        tables = []
        for entry in files:
            name = entry["filename"]
            if unsafe_name(name) is not None or "/" in name:
                raise SourceError(f"{str(folder / 'state.json')!r} names the data file {name!r}, which is not a "
                                  "file of that folder")
            tables.append(_Table(folder / name, split, folder, features))
        return tables

    # --------------------------------------------------------------------------- columns

    def _schema(self, table: _Table) -> Any:
        pa = self.pa
        try:
            if table.path.suffix.lower() == ".parquet":
                return pa.parquet.read_schema(table.path)
            with pa.memory_map(str(table.path)) as source:
                return _open_ipc(pa, source).schema
        except FileNotFoundError:
            raise SourceError(f"table file {str(table.path)!r} does not exist") from None
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read {str(table.path)!r} as a Parquet or Arrow file: "
                              f"{type(exc).__name__}: {exc}") from None

    def _pick_columns(self, table: _Table) -> tuple[str, str | None, list[str] | None, str | None]:
        """(image column, label column, class names, split column) of one file."""
        pa = self.pa
        schema = self._schema(table)
        if table.features is None:
            table.features = _schema_features(schema)
        features = table.features or {}
        names = schema.names
        where = str(table.path)

        def kind(name: str) -> str | None:
            feature = features.get(name)
            return feature.get("_type") if isinstance(feature, dict) else None

        if self.image_from is not None:
            if self.image_from not in names:
                raise SourceError(f"{where!r} has no column {self.image_from!r} (--image-from); its columns: "
                                  f"{', '.join(names)}")
            image = self.image_from
        else:
            typed = [n for n in names if kind(n) == "Image"]
            named = [n for n in IMAGE_COLUMNS if n in names]
            binary = [n for n in names if _bytes_like(pa, schema.field(n).type)]
            image = (typed or named or (binary if len(binary) == 1 else [None]))[0]
            if image is None:
                raise SourceError(f"cannot tell the image column of {where!r} (columns: {', '.join(names)}); "
                                  "name it with --image-from")
        label, classes = None, None
        if self.label_from is not None and self.label_from != "none":
            if self.label_from not in names:
                raise SourceError(f"{where!r} has no column {self.label_from!r} (--label-from); its columns: "
                                  f"{', '.join(names)}")
            label = self.label_from
        elif self.label_from is None:
            typed = [n for n in names if kind(n) == "ClassLabel" and n != image]
            label = typed[0] if typed else ("label" if "label" in names and image != "label" else None)
        if label is not None and kind(label) == "ClassLabel":
            found = features[label].get("names")
            if isinstance(found, list) and all(isinstance(c, str) for c in found):
                classes = found
        split = "split" if "split" in names and "split" not in (image, label) else None
        return image, label, classes, split

    # --------------------------------------------------------------------------- reading

    def _batches(self, table: _Table, columns: list[str], group: int | None = None) -> Iterator[Any]:
        pa = self.pa
        try:
            if table.path.suffix.lower() == ".parquet":
                # One row group at a time: ParquetFile.iter_batches keeps every batch it read allocated
                # (pyarrow 26: 955 MiB held after reading a 953 MiB file), read_row_group frees each one.
                parquet = pa.parquet.ParquetFile(table.path)
                for group in range(parquet.num_row_groups) if group is None else [group]:
                    yield from parquet.read_row_group(group, columns=columns, use_threads=False).to_batches(
                        max_chunksize=BATCH_ROWS)
                return
            with pa.OSFile(str(table.path)) as source:
                reader = _open_ipc(pa, source)
                if isinstance(reader, pa.ipc.RecordBatchFileReader):
                    for i in range(reader.num_record_batches):
                        yield reader.get_batch(i).select(columns)
                else:
                    for batch in reader:
                        yield batch.select(columns)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveMemberError(f"table file {str(table.path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                                     "the rows before it were read: replace the file with a complete copy") from None

    def task_columns(self) -> dict[str, str]:
        """The columns that become tasks at extraction, as a CSV image list's extra columns do, with
        the type their values have: every column but the image, label and split columns (and one
        named ``path``) whose name is a valid task name: numbers are ``regression``, a
        ``ClassLabel``, text or booleans ``classification``, lists of text ``multilabel``. Columns
        of other types (structs, bytes, ...) are left alone."""
        found: dict[str, str] = {}
        for index, table in enumerate(self.tables):
            image, label, _, split = self._columns[index]
            schema = self._schema(table)
            for name in schema.names:
                if name in (image, label, split) or name.lower() in ("path", "label", "split") or name in found \
                        or not check_task_name(name):
                    continue
                kind = _task_type(self.pa, schema.field(name).type, _class_names(table, name))
                if kind is not None:
                    found[name] = kind
        return found

    def task_cells(self, column: str, sep: str = "|") -> Iterator[tuple[str, str]]:
        """``(path, cell)`` for every row of ``column``, the path as extraction records the row's
        image and the cell as text: a number as Python writes it, a ``ClassLabel`` index as its class
        name, a list joined by ``sep``, a null (or -1, a ClassLabel's "no label") as ``""``."""
        for table in self.tables:
            if column not in self._schema(table).names:
                continue
            names = _class_names(table, column)
            row = 0
            for batch in self._batches(table, [column]):
                for value in batch.column(column).to_pylist():
                    yield member_path(str(table.path), str(row)), _cell_text(value, names, sep)
                    row += 1

    def __iter__(self) -> Iterator[SourceItem]:
        for index in range(len(self.tables)):
            yield from self.unit_items((index, None, 0))

    def units(self) -> list[tuple[int, int | None, int]]:
        """Parts of the source that can be read apart: ``(file index, row group, first row)``.

        One per Parquet row group (from the files' footers; no rows are read), one per Arrow
        file (row group None). Concatenating :meth:`unit_items` over them gives the source's items.
        """
        units: list[tuple[int, int | None, int]] = []
        for index, table in enumerate(self.tables):
            if table.path.suffix.lower() != ".parquet":
                units.append((index, None, 0))
                continue
            try:
                meta = self.pa.parquet.ParquetFile(table.path).metadata
            except (OSError, self.pa.ArrowException) as exc:
                raise SourceError(f"cannot read {str(table.path)!r}: {type(exc).__name__}: {exc}") from None
            first = 0
            for group in range(meta.num_row_groups):
                units.append((index, group, first))
                first += meta.row_group(group).num_rows
        return units

    def unit_items(self, unit: tuple[int, int | None, int]) -> Iterator[SourceItem]:
        """The items of one unit of :meth:`units` (a file, or one row group of it), in order.

        Parameters
        ----------
        unit : tuple
            ``(file index, row group or None for the whole file, row index of its first row)``.
        """
        index, group, row = unit
        table = self.tables[index]
        image, label, classes, split_column = self._columns[index]
        columns = [c for c in dict.fromkeys((image, label, split_column)) if c is not None]
        batches = self._batches(table, columns, group)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except ArchiveMemberError as exc:  # a damaged file: one failure where reading stopped
                where = member_path(str(table.path), str(row))
                yield SourceItem(where, reader=Refused(where, "", exc))
                break
            cells = {name: batch.column(name).to_pylist() for name in columns}
            for i in range(batch.num_rows):
                split = cells[split_column][i] if split_column else None
                split = str(split) if split is not None else table.split
                yield self._item(table, row, cells[image][i], cells[label][i] if label else None, classes, split)
                row += 1

    def _item(self, table: _Table, row: int, cell: Any, value: Any, classes: list[str] | None,
              split: str | None) -> SourceItem:
        where = member_path(str(table.path), str(row))
        if value is None or (classes is not None and value == -1):
            label = None
        elif classes is not None:
            if not isinstance(value, int) or not 0 <= value < len(classes):
                return SourceItem(where, None, split, reader=Refused(where, f"its label {value!r} is not an index of "
                                                                            f"the {len(classes)} class names"))
            label = classes[value]
        else:
            label = str(value)
        if isinstance(cell, dict):
            data, inner = cell.get("bytes"), cell.get("path")
            if data is None and isinstance(inner, str) and inner:
                return SourceItem(where, label, split, reader=_InsideFile(where, table.root, inner))
            cell = data
        elif isinstance(cell, str):
            return SourceItem(where, label, split, reader=_InsideFile(where, table.root, cell))
        if not isinstance(cell, (bytes, bytearray)):
            what = "null" if cell is None else type(cell).__name__
            return SourceItem(where, label, split, reader=Refused(where, f"its image cell is {what}, not image bytes"))
        return SourceItem(where, label, split, reader=InMemory(where, bytes(cell)))

    # --------------------------------------------------------------------------- size and classes

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(self._rows(table) for table in self.tables)
        return self._length

    def _rows(self, table: _Table) -> int:
        pa = self.pa
        try:
            if table.path.suffix.lower() == ".parquet":
                return pa.parquet.ParquetFile(table.path).metadata.num_rows
            with pa.memory_map(str(table.path)) as source:  # batches map the file: nothing is copied
                reader = _open_ipc(pa, source)
                if isinstance(reader, pa.ipc.RecordBatchFileReader):
                    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
                return sum(batch.num_rows for batch in reader)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot read {str(table.path)!r}: {type(exc).__name__}: {exc}") from None

    @property
    def classes(self) -> tuple[str, ...]:
        """Sorted distinct labels: the class names of a ``ClassLabel``, else read from the label column."""
        if self._classes is None:
            found: set[str] = set()
            for table, (_, label, classes, _) in zip(self.tables, self._columns):
                if classes is not None:
                    found.update(classes)
                elif label is not None:
                    for batch in self._batches(table, [label]):
                        found.update(str(v) for v in batch.column(0).to_pylist() if v is not None)
            self._classes = tuple(sorted(found))
        return self._classes

    def __repr__(self) -> str:
        return f"TableSource({self.name!r}, {len(self.tables)} files)"


class _InsideFile:
    """The reader of an image cell that names a file: read only when it lies inside the dataset folder."""

    def __init__(self, where: str, root: Path, name: str) -> None:
        self.where, self.root, self.name = where, root, name

    def __call__(self, max_bytes: int | None = None) -> bytes:
        reason = unsafe_name(self.name)
        target = os.path.realpath(self.root / self.name) if reason is None else ""
        if reason is None and os.path.commonpath([target, os.path.realpath(self.root)]) != os.path.realpath(self.root):
            reason = "it resolves outside the dataset's folder"
        if reason is not None:
            raise ArchiveMemberError(f"{self.where!r} names the image file {self.name!r}, which is not followed: "
                                     f"{reason}")
        return read_regular_file(target, max_bytes=max_bytes)


def _open_ipc(pa: Any, source: Any) -> Any:
    """An Arrow IPC reader: the stream format (``datasets`` writes it), else the file format."""
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source)


def _bytes_like(pa: Any, kind: Any) -> bool:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def _schema_features(schema: Any) -> dict[str, Any] | None:
    """The ``datasets`` features kept in a schema's metadata (key ``huggingface``), if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        features = json.loads(raw).get("info", {}).get("features")
    except (ValueError, AttributeError):
        return None
    return features if isinstance(features, dict) else None


def _split_of_name(name: str) -> str | None:
    """``train`` for ``train-00000-of-00001.parquet`` (Hugging Face Hub file names), else None."""
    head = name.split("-", 1)[0].split(".", 1)[0]
    return head if head.lower() in SPLIT_NAMES else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular_file(path, max_bytes=_META_MAX_BYTES))
    except FileNotFoundError:
        raise SourceError(f"{str(path)!r} is missing; a datasets.save_to_disk folder holds it") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {str(path)!r} as JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{str(path)!r} must hold a JSON object")
    return data


def _class_names(table: _Table, column: str) -> list[str] | None:
    """The class names of a ``ClassLabel`` column (from the dataset's features), else None."""
    feature = (table.features or {}).get(column)
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        names = feature.get("names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    return None


def _task_type(pa: Any, kind: Any, class_names: list[str] | None) -> str | None:
    """The task type a column of Arrow type ``kind`` gives, or None when it holds no task values."""
    types = pa.types
    if class_names is not None or types.is_boolean(kind) or types.is_string(kind) or types.is_large_string(kind):
        return "classification"
    if types.is_integer(kind) or types.is_floating(kind):
        return "regression"
    if (types.is_list(kind) or types.is_large_list(kind)) and (
            types.is_string(kind.value_type) or types.is_large_string(kind.value_type)):
        return "multilabel"
    return None


def _cell_text(value: Any, class_names: list[str] | None, sep: str) -> str:
    if value is None:
        return ""
    if class_names is not None:
        return class_names[value] if isinstance(value, int) and 0 <= value < len(class_names) else ""
    if isinstance(value, list):
        return sep.join(str(v) for v in value if v is not None)
    return repr(value) if isinstance(value, float) else str(value)
