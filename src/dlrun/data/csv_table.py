"""A CSV table of numbers with one label column, as both CSV readers return it."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dlrun.errors import DataError


@dataclass
class Table:
    header: list[str]  # empty when the file's first row is numbers
    label: int  # the label's column
    labels: torch.Tensor  # int64 class index per row
    class_names: list[str]
    # features_in(order): every column but the label's, as one new float32 tensor with the rows
    # in `order` (a permutation of all rows), so splits can be slices of it instead of copies;
    # called once (the columnar reader frees its blocks as it fills the tensor)
    features_in: Callable[[torch.Tensor], torch.Tensor]

    @property
    def feature_names(self) -> list[str]:
        return self.header[: self.label] + self.header[self.label + 1 :] if self.header else []


def label_index(column, header: list[str], width: int, path: Path) -> int:
    """The position of dataset.label_column among the file's `width` columns."""
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


def class_order(labels) -> list[str]:
    """The classes in index order: labels "1", "2", "10" sort as numbers, words as words."""
    return sorted(
        set(labels), key=lambda value: (0, float(value), "") if is_number(value) else (1, 0.0, value)
    )


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
