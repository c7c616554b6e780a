"""Any CSV table of numbers with one label column (the embedded wine data is a preset)."""

import csv
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.data import LoadOptions, Splits
from dlrun.data.facts import Facts
from dlrun.data.split import carve
from dlrun.errors import DataError


def load_csv(cfg: DictConfig, options: LoadOptions) -> Splits:
    path = Path(cfg.path).expanduser()
    header, rows = _read_rows(path, cfg.delimiter)
    width = len(next(iter(rows.values())))
    label_index = _label_index(cfg.label_column, header, width, path)
    labels_raw = [row[label_index].strip() for row in rows.values()]
    class_names = sorted(set(labels_raw), key=_numeric_first)
    labels = torch.tensor([class_names.index(value) for value in labels_raw])
    features = torch.tensor(
        [_numbers(row[:label_index] + row[label_index + 1 :], path, line) for line, row in rows.items()],
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
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = [row for row in csv.reader(handle, delimiter=delimiter)]
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path} (set dataset.path to an existing file)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read CSV {path}: {error}") from None
    numbered = {number: row for number, row in enumerate(lines, 1) if any(cell.strip() for cell in row)}
    if not numbered:
        raise DataError(f"CSV {path} has no rows")
    first = min(numbered)
    header = [] if all(_is_number(cell) for cell in numbered[first]) else numbered.pop(first)
    if len(numbered) < 2:
        raise DataError(f"CSV {path} needs at least two data rows, has {len(numbered)}")
    widths = {len(row) for row in numbered.values()}
    if len(widths) > 1 or (header and len(header) not in widths):
        raise DataError(f"CSV {path} rows have different numbers of columns: {sorted(widths)}")
    return [cell.strip() for cell in header], numbered


def _label_index(column, header: list[str], width: int, path: Path) -> int:
    if isinstance(column, str) and not column.lstrip("-").isdigit():
        if column not in header:
            raise DataError(
                f"dataset.label_column={column!r} is not a column of {path}; columns: {', '.join(header)}"
            )
        return header.index(column)
    index = int(column)
    if not -width <= index < width:
        raise DataError(f"dataset.label_column={index} is out of range for {path} ({width} columns)")
    return index % width


def _numbers(cells: list[str], path: Path, line: int) -> list[float]:
    try:
        return [float(cell) for cell in cells]
    except ValueError:
        bad = next(cell for cell in cells if not _is_number(cell))
        raise DataError(f"CSV {path} line {line}: {bad!r} is not a number (features must be numeric)") from None


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
