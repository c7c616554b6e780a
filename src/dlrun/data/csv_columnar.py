"""The usual CSV path: pyarrow's multithreaded reader, straight into float32 columns.

No Python object is made per cell, so the cost is linear in rows. The reader's blocks are handed
back to the system as their rows reach the tensor, so the table and the tensor are never both
whole in memory. Anything it does not take (a fault, or a file only the checked reader accepts)
is answered with None, and csv_checked.py reads the file again to name the fault or read it
anyway."""

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dlrun.data.csv_table import Table, class_order, is_number, label_index

RELEASE_EVERY = 16  # blocks (about 1 MB of CSV text each) between returning memory to the system


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
    # the blocks alone, so that each one's memory is freed once its rows are copied (_rows_in)
    blocks = features.to_batches()
    del columns, features
    return Table(header, label, *classes, features_in=lambda order: _rows_in(blocks, order))


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


def _rows_in(blocks: list, order: torch.Tensor) -> torch.Tensor:
    """The reader's blocks of feature columns as one float32 (rows, features) tensor, row
    order[i] at position i. Empties `blocks`, returning each block's memory as it goes."""
    import pyarrow as pa

    position = np.empty(len(order), dtype=np.int64)
    position[order.numpy()] = np.arange(len(order))
    rows = np.empty((len(order), blocks[0].num_columns), dtype=np.float32)
    # each block's rows are stacked in one small buffer that stays in the cache, then put in place
    stacked = np.empty((max(block.num_rows for block in blocks), rows.shape[1]), dtype=np.float32)
    start, pool = 0, pa.default_memory_pool()
    for count in range(len(blocks)):
        block, blocks[count] = blocks[count], None  # this name holds the last reference
        size = block.num_rows
        np.stack([_values(column, np.float32) for column in block.columns], axis=1, out=stacked[:size])
        rows[position[start : start + size]] = stacked[:size]
        start += size
        del block
        if count % RELEASE_EVERY == RELEASE_EVERY - 1:
            # Arrow's allocator keeps what is freed for reuse; the tensor is numpy's, so hand it
            # back to the system: without this the peak is the whole table plus the whole tensor
            pool.release_unused()
    blocks.clear()
    pool.release_unused()
    return torch.from_numpy(rows)


def _values(array, dtype) -> np.ndarray:
    """A primitive array's values, without a copy. (Array.to_numpy would import pandas where
    it is installed: a fifth of a second.)"""
    dtype = np.dtype(dtype)
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )
