"""The CSV reader that checks every cell: the first fault is reported as file:line:column.

It reads what the columnar reader (csv_columnar.py) does not take: a file with a fault, which it
names, or an unusual but valid one (blank rows, numbers padded with spaces or written 1_000).
Every cell is a Python string here, so it is the slow path, not the usual one."""

import csv
import io
import math
from pathlib import Path

import torch

from dlrun.data.csv_table import Table, class_order, is_number, label_index
from dlrun.data.text_files import read_utf8
from dlrun.errors import DataError

FLOAT32_MAX = 3.4028234663852886e38


def read_checked(path: Path, delimiter: str, label_column) -> Table:
    header, rows = _read_rows(path, delimiter)
    width = len(next(iter(rows.values())))
    label = label_index(label_column, header, width, path)
    labels_raw = [_label(row, label, path, line) for line, row in rows.items()]
    class_names = class_order(labels_raw)
    index = {name: i for i, name in enumerate(class_names)}
    features = torch.tensor(
        [_numbers(row, label, path, line) for line, row in rows.items()], dtype=torch.float32
    )
    return Table(
        header=header,
        label=label,
        labels=torch.tensor([index[value] for value in labels_raw]),
        class_names=class_names,
        features_in=lambda order: features[order],
    )


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], dict[int, list[str]]]:
    """The header (empty if the first row is all numbers) and the data rows by line number."""
    # a byte-order mark (spreadsheets write one) is not part of the first column's name
    text = read_utf8(path, "set dataset.path to an existing UTF-8 CSV file").removeprefix("\ufeff")
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    numbered = {number: row for number, row in enumerate(lines, 1) if any(cell.strip() for cell in row)}
    if not numbered:
        raise DataError(f"{path} is empty: it needs rows of numbers with one label column")
    first = min(numbered)
    header = [] if all(is_number(cell) for cell in numbered[first]) else numbered.pop(first)
    if len(numbered) < 2:
        raise DataError(f"{path} needs at least two data rows, has {len(numbered)}")
    expected, source = (len(header), first) if header else (len(numbered[min(numbered)]), min(numbered))
    for line, row in numbered.items():
        if len(row) != expected:
            raise DataError(
                f"{path}:{line}: {len(row)} cells, but line {source} has {expected}; "
                "every row needs the same columns"
            )
    return [cell.strip() for cell in header], numbered


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
