"""The usual CSV path: pyarrow's multithreaded reader, straight into float32 columns.

No Python object is made per cell, so the cost is linear in rows, and the memory at most the
float32 columns, the tensor made from them and the reader's buffers. Anything it does not take
(a fault, or a file only the checked reader accepts) is answered with None, and csv_checked.py
reads the file again to name the fault or read it anyway."""

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dlrun.data.csv_table import Table, class_order, is_number, label_index


def read_columnar(path: Path, delimiter: str, label_column) -> Optional[Table]:
    first = _first_row(path, delimiter)
    if first is None:
        return None
    header, width = first
    label = label_index(label_column, header, width, path)  # a wrong setting is said at once
    columns = _read_columns(path, delimiter, width, label, skip_rows=1 if header else 0)
    if columns is None or columns.num_rows < 2:
        return None
    classes = _class_indices(columns.column(label))
    features = columns.select([i for i in range(width) if i != label])
    if classes is None or not _all_finite(features):
        return None
    return Table(header, label, *classes, features_in=lambda order: _rows_in(features, order))


def _first_row(path: Path, delimiter: str) -> Optional[tuple[list[str], int]]:
    """(header, width) from the file's first line: header empty when that line is numbers."""
    try:
        with path.open("rb") as file:
            line = file.readline(1 << 20).decode("utf-8-sig")
        cells = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return None
    if not any(cell.strip() for cell in cells):
        return None  # blank lines before the first row: the checked reader skips them as it should
    header = [] if all(is_number(cell) for cell in cells) else [cell.strip() for cell in cells]
    return header, len(cells)


def _read_columns(path: Path, delimiter: str, width: int, label: int, skip_rows: int):
    import pyarrow as pa  # imported here: only runs that read a CSV file pay for it
    from pyarrow import csv as arrow_csv

    # positional names: a header may repeat a name, and it is known already
    names = [f"column{i}" for i in range(width)]
    types = {name: pa.float32() for name in names}
    types[names[label]] = pa.dictionary(pa.int32(), pa.string())
    try:
        return arrow_csv.read_csv(
            path,
            read_options=arrow_csv.ReadOptions(column_names=names, skip_rows=skip_rows),
            parse_options=arrow_csv.ParseOptions(delimiter=delimiter),
            convert_options=arrow_csv.ConvertOptions(column_types=types),
        )
    except (pa.ArrowException, OSError):
        return None


def _class_indices(column) -> Optional[tuple[torch.Tensor, list[str]]]:
    """(class index per row, class names) from the dictionary-encoded label column; None if a
    label cell is empty. Only the few distinct labels become Python strings."""
    chunks = [(chunk.dictionary.to_pylist(), chunk.indices) for chunk in column.chunks]
    names = class_order(word.strip() for words, _ in chunks for word in words)
    if "" in names:
        return None
    index = {name: i for i, name in enumerate(names)}
    labels = np.empty(len(column), dtype=np.int64)
    start = 0
    for words, indices in chunks:  # each chunk numbers its own dictionary
        lookup = np.array([index[word.strip()] for word in words], dtype=np.int64)
        labels[start : start + len(indices)] = lookup[_values(indices, np.int32)]
        start += len(indices)
    return torch.from_numpy(labels), names


def _all_finite(features) -> bool:
    """No missing (the reader reads empty cells and NaN as missing) or infinite value."""
    return not any(column.null_count for column in features.columns) and all(
        np.isfinite(_values(chunk, np.float32)).all()
        for column in features.columns
        for chunk in column.chunks
    )


def _rows_in(features, order: torch.Tensor) -> torch.Tensor:
    """The feature columns as one float32 (rows, features) tensor, row order[i] at position i."""
    position = np.empty(len(order), dtype=np.int64)
    position[order.numpy()] = np.arange(len(order))
    rows = np.empty((features.num_rows, features.num_columns), dtype=np.float32)
    batches = features.to_batches()
    # each batch's rows are stacked in one small buffer that stays in the cache, then put in place
    block = np.empty((max(batch.num_rows for batch in batches), features.num_columns), dtype=np.float32)
    start = 0
    for batch in batches:
        stacked = block[: batch.num_rows]
        np.stack([_values(column, np.float32) for column in batch.columns], axis=1, out=stacked)
        rows[position[start : start + batch.num_rows]] = stacked
        start += batch.num_rows
    return torch.from_numpy(rows)


def _values(array, dtype) -> np.ndarray:
    """A primitive array's values, without a copy. (Array.to_numpy would import pandas where
    it is installed: a fifth of a second.)"""
    dtype = np.dtype(dtype)
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )
