"""The CSV reader that checks every cell: the first fault is reported as file:line:column.

It reads what the columnar reader (csv_columnar.py) does not take: a file with a fault, which it
names, or an unusual but valid one (blank rows, numbers padded with spaces or written 1_000). It
goes row by row in Python, so it is the slow path, not the usual one; each row becomes float32 as
it is read, so a large file's memory is its numbers, not a Python string per cell."""

import csv
import itertools
import math
from array import array
from pathlib import Path

import numpy as np
import torch

from dlrun.data.csv_table import Table, class_order, is_number, label_index
from dlrun.data.text_files import read_utf8
from dlrun.errors import DataError

FLOAT32_MAX = 3.4028234663852886e38
FIX = "set dataset.path to an existing UTF-8 CSV file"


def read_checked(path: Path, delimiter: str, label_column) -> Table:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:  # -sig: a spreadsheet's BOM
            return _read(file, path, delimiter, label_column)
    except (OSError, UnicodeDecodeError):
        read_utf8(path, FIX)  # words the failure (missing, unreadable, the byte that is not UTF-8)
        raise


def _read(file, path: Path, delimiter: str, label_column) -> Table:
    numbered = _numbered_rows(file, path, delimiter)
    first_line, first = next(numbered, (0, None))
    if first is None:
        raise DataError(f"{path} is empty: it needs rows of numbers with one label column")
    header = [] if all(is_number(cell) for cell in first) else [cell.strip() for cell in first]
    label = label_index(label_column, header, len(first), path)
    rows = numbered if header else itertools.chain([(first_line, first)], numbered)
    features, label_ids, names = _convert(rows, (first_line, len(first)), label, path)
    if len(label_ids) < 2:
        raise DataError(f"{path} needs at least two data rows, has {len(label_ids)}")
    class_names = class_order(names)
    # label ids count in order of first appearance; class indices follow class_order
    position = {name: i for i, name in enumerate(class_names)}
    index = torch.tensor([position[name] for name in names])
    matrix = torch.from_numpy(np.frombuffer(features, dtype=np.float32)).view(len(label_ids), len(first) - 1)
    return Table(
        header=header,
        label=label,
        labels=index[torch.from_numpy(np.frombuffer(label_ids, dtype=np.int64))],
        class_names=class_names,
        features_in=lambda order: matrix[order],
    )


def _convert(rows, shape: tuple[int, int], label: int, path: Path) -> tuple[array, array, dict]:
    """Each row's features appended to one float32 array as it is read, its label as the label's
    number in order of first appearance; `shape` is (the first row's line, its cell count)."""
    source, width = shape
    features, label_ids, names = array("f"), array("q"), {}
    for line, row in rows:
        if len(row) != width:
            raise DataError(
                f"{path}:{line}: {len(row)} cells, but line {source} has {width}; "
                "every row needs the same columns"
            )
        label_ids.append(names.setdefault(_label(row, label, path, line), len(names)))
        features.extend(_numbers(row, label, path, line))
    return features, label_ids, names


def _numbered_rows(file, path: Path, delimiter: str):
    """(line number, cells) of every row that is not blank."""
    try:
        for number, row in enumerate(csv.reader(file, delimiter=delimiter), 1):
            if any(cell.strip() for cell in row):
                yield number, row
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None


def _label(row: list[str], index: int, path: Path, line: int) -> str:
    label = row[index].strip()
    if not label:
        raise DataError(f"{path}:{line}:{index + 1}: the label cell is empty; fill it in or drop the row")
    return label


def _numbers(row: list[str], label_index: int, path: Path, line: int) -> list[float]:
    """The row's features as floats; the first bad cell is reported as file:line:column."""
    values = []
    for column, cell in enumerate(row, 1):
        if column == label_index + 1:
            continue
        try:
            value = float(cell)
        except ValueError:
            raise DataError(
                f"{path}:{line}:{column}: {cell.strip()!r} is not a number (features must be numeric)"
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"{path}:{line}:{column}: {cell.strip()!r} is not a finite number; "
                "fill in the value or drop the row"
            )
        if abs(value) > FLOAT32_MAX:
            raise DataError(
                f"{path}:{line}:{column}: {cell.strip()!r} is beyond float32's range (±3.4e38), "
                "the precision features are trained in; scale the column down"
            )
        values.append(value)
    return values
