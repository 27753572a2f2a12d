"""Images listed in a CSV or TSV file with a ``path[,label][,split]`` header."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ..errors import SourceError
from .item import ItemListSource, SourceItem

__all__ = ["CsvSource"]


class CsvSource(ItemListSource):
    """Images listed in a CSV (``.csv``, comma) or TSV (``.tsv``, tab) file.

    The first row must be a header naming the columns ``path`` and optionally ``label``
    and ``split`` (any order and case; other columns are ignored). Relative paths are
    resolved against the file's directory; empty ``label`` / ``split`` cells give None;
    cells are stripped of surrounding spaces and blank rows are skipped. Items keep the
    file's row order. Listed files are not opened until an item is read.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV or TSV file (UTF-8, with or without a byte-order mark).

    Raises
    ------
    SourceError
        The file cannot be read or parsed, has no ``path`` column, a row has an empty
        path, or a path is listed twice.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.name = f"csv:{self.path}"
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                items = _parse_table(csv.reader(fh, delimiter=delimiter), self.path)
        except FileNotFoundError:
            raise SourceError(f"image list {str(self.path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read image list {str(self.path)!r}: {type(exc).__name__}: {exc}") from None
        self._set_items(items)


def _parse_table(reader: Any, path: Path) -> list[SourceItem]:
    where = str(path)
    header = next(reader, None)
    if header is None:
        raise SourceError(f"image list {where!r} is empty; its first row must name the columns path[,label][,split]")
    names = [cell.strip().lower() for cell in header]
    if "path" not in names:
        raise SourceError(
            f"image list {where!r} has no 'path' column (header: {header!r}); the first row must be a "
            "header naming the columns path[,label][,split]"
        )
    columns = {}
    for column in ("path", "label", "split"):
        if names.count(column) > 1:
            raise SourceError(f"image list {where!r} has {names.count(column)} columns named {column!r}")
        columns[column] = names.index(column) if column in names else None

    def cell(row: list[str], column: str) -> str | None:
        index = columns[column]
        value = row[index].strip() if index is not None and index < len(row) else ""
        return value or None

    items: list[SourceItem] = []
    lines: dict[str, int] = {}
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        value = cell(row, "path")
        if value is None:
            raise SourceError(f"image list {where!r}, line {reader.line_num}: the path cell is empty")
        full = str(path.parent / value)
        if full in lines:
            raise SourceError(
                f"image list {where!r}, line {reader.line_num}: {value!r} is already listed on line {lines[full]}"
            )
        lines[full] = reader.line_num
        items.append(SourceItem(full, cell(row, "label"), cell(row, "split")))
    return items
