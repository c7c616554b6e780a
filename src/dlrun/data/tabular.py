"""Any CSV table of numbers with one label column (the embedded wine data is a preset)."""

import csv
import io
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.data import LoadOptions, Splits
from dlrun.data.facts import Facts
from dlrun.data.split import carve
from dlrun.data.text_files import read_utf8
from dlrun.errors import DataError


def load_csv(cfg: DictConfig, options: LoadOptions) -> Splits:
    path = Path(cfg.path).expanduser()
    header, rows = _read_rows(path, cfg.delimiter)
    width = len(next(iter(rows.values())))
    label_index = _label_index(cfg.label_column, header, width, path)
    labels_raw = [_label(row, label_index, path, line) for line, row in rows.items()]
    class_names = sorted(set(labels_raw), key=_numeric_first)
    labels = torch.tensor([class_names.index(value) for value in labels_raw])
    features = torch.tensor(
        [_numbers(row, label_index, path, line) for line, row in rows.items()],
        dtype=torch.float32,
    )
    train, val, test = carve(features, labels, cfg.val_fraction, cfg.test_fraction, options.seed)
    mean, std = _standardizer(train[0], cfg.standardize)  # the training split's statistics only

    def standardized(pair):
        return (pair[0] - torch.tensor(mean)) / torch.tensor(std), pair[1]

    names = header[:label_index] + header[label_index + 1 :] if header else []
    return Splits(
        train=standardized(train),
        val=standardized(val),
        test=standardized(test) if test is not None else None,
        facts=Facts(
            kind="table",
            task=options.task,
            input_shape=[features.shape[1]],
            num_classes=len(class_names),
            class_names=class_names,
            mean=mean,
            std=std,
            feature_names=names,
        ),
    )


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], dict[int, list[str]]]:
    """The header (empty if the first row is all numbers) and the data rows by line number."""
    text = read_utf8(path, "set dataset.path to an existing UTF-8 CSV file")
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    numbered = {number: row for number, row in enumerate(lines, 1) if any(cell.strip() for cell in row)}
    if not numbered:
        raise DataError(f"{path} is empty: it needs rows of numbers with one label column")
    first = min(numbered)
    header = [] if all(_is_number(cell) for cell in numbered[first]) else numbered.pop(first)
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


def _label_index(column, header: list[str], width: int, path: Path) -> int:
    if isinstance(column, str) and not column.lstrip("-").isdigit():
        if not header:
            raise DataError(
                f"dataset.label_column={column!r} names a column, but {path} has no header row; "
                f"give its index instead (0..{width - 1})"
            )
        if column not in header:
            raise DataError(
                f"dataset.label_column={column!r} is not a column of {path}; columns: {', '.join(header)}"
            )
        return header.index(column)
    index = int(column)
    if not -width <= index < width:
        raise DataError(f"dataset.label_column={index} is out of range for {path} ({width} columns)")
    return index % width


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
        values.append(value)
    return values


def _standardizer(train: torch.Tensor, standardize: bool) -> tuple[list[float], list[float]]:
    if not standardize:
        return [0.0] * train.shape[1], [1.0] * train.shape[1]
    std = train.std(dim=0)
    std[std == 0] = 1.0  # a constant column stays as it is instead of becoming NaN
    return train.mean(dim=0).tolist(), std.tolist()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _numeric_first(value: str):
    # class labels "1", "2", "10" sort as numbers; words sort as words
    return (0, float(value), "") if _is_number(value) else (1, 0.0, value)
