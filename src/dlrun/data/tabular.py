"""Any CSV table of numbers with one label column (the embedded wine data is a preset)."""

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dlrun.data import LoadOptions, Splits
from dlrun.data.csv_checked import read_checked
from dlrun.data.csv_columnar import read_columnar
from dlrun.data.csv_table import is_number
from dlrun.data.facts import Facts
from dlrun.data.split import as_splits, split_order
from dlrun.errors import ConfigError, DataError

log = logging.getLogger("dlrun")


def load_csv(
    path: str,
    label_column: Any = 0,
    delimiter: str = ",",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardize: bool = True,
    *,
    options: LoadOptions,
) -> Splits:
    """The table's rows, split seeded and stratified, features standardized with the training
    split's statistics (which the facts keep, for predictions)."""
    path = Path(path).expanduser()
    delimiter = "\t" if delimiter == "\\t" else delimiter  # a tab, as a shell lets one type it
    _check_delimiter(path, delimiter)
    table = read_columnar(path, delimiter, label_column) or read_checked(path, delimiter, label_column)
    notes = _check_classes(table, label_column, path)
    order, sizes = split_order(table.labels, val_fraction, test_fraction, options.seed)
    # the features are read once, in split order: each split is a slice of them, not a copy
    features, names = table.features_in(order), table.feature_names
    if _pandas_index(table, features, order, path):
        features, names = features[:, 1:].contiguous(), names[1:]
    train, val, test = as_splits(features, table.labels[order], sizes)
    mean, std = standardizer(train[0], standardize)  # the training split's statistics only
    for split in (train, val, test):
        if split is not None:
            scale(split[0], mean, std)
    return Splits(
        train=train,
        val=val,
        test=test,
        facts=Facts(
            kind="table",
            task=options.task,
            input_shape=[train[0].shape[1]],
            num_classes=len(table.class_names),
            class_names=table.class_names,
            mean=mean,
            std=std,
            feature_names=names,
            notes=notes,
        ),
    )


def _check_classes(table, label_column, path: Path) -> list[str]:
    """One class cannot train a classifier: refused. More classes than a tenth of the rows looks
    like a number to predict (a regression target), not classes: a note the run's start shows."""
    rows, classes = len(table.labels), len(table.class_names)
    if classes < 2:
        raise DataError(
            f"dataset.label_column={label_column} of {path} holds one class ({table.class_names[0]!r}) "
            f"in all {rows} rows: a classifier needs two or more; check the file, or label_column"
        )
    if classes > max(10, rows // 10):
        return [
            f"dataset.label_column={label_column} of {path} holds {classes} different values in {rows} "
            "rows: a number to predict rather than classes? dlrun classifies, one class per value; "
            "check label_column"
        ]
    return []


def _pandas_index(table, features: torch.Tensor, order: torch.Tensor, path: Path) -> bool:
    """Whether the first column is the row index pandas' `to_csv()` writes (no name, 0..n-1):
    left out, and said; refused where it would be the label."""
    if not table.header or table.header[0] not in ("", "Unnamed: 0"):
        return False
    if table.label == 0:
        raise DataError(
            f"the first column of {path} has no name, like the row index pandas' to_csv() writes, and "
            "dataset.label_column=0 makes it the label: write the file with to_csv(index=False), or "
            "set dataset.label_column to the label's name"
        )
    if not torch.equal(features[:, 0], order.to(features.dtype)):
        return False
    note = (
        f"left out the first column of {path}: unnamed and counting rows 0..{len(order) - 1}, it is "
        "the index pandas' to_csv() writes (to_csv(index=False) leaves it out)"
    )
    log.warning(note)
    print(f"warning: {note}", file=sys.stderr)
    return True


def scale(features: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Standardized in place with the training split's statistics."""
    return features.sub_(torch.tensor(mean)).div_(torch.tensor(std))


def standardizer(train: torch.Tensor, standardize: bool = True) -> tuple[list[float], list[float]]:
    if not standardize:
        return [0.0] * train.shape[1], [1.0] * train.shape[1]
    std, mean = torch.std_mean(train, dim=0)  # one pass over the rows, not two
    std[std == 0] = 1.0  # a constant column stays as it is instead of becoming NaN
    return mean.tolist(), std.tolist()


def prepare_rows(
    inputs: list, facts: Facts, device: torch.device, warn: Callable[[str], None]
) -> torch.Tensor:
    """Rows of numbers prepared as training prepared the table (standardized with the run's
    training statistics), shaped as the inputs; also any other data given as numbers. A row is
    used whole or refused: nothing to `warn` of."""
    width = math.prod(facts.input_shape)
    rows = []
    for item in inputs:
        values = item if isinstance(item, list) else [item]
        words = [value for value in values if isinstance(value, str) and not is_number(value)]
        if words and len(values) == 1:
            raise ConfigError(
                f"inputs: {words[0]!r} is not a row of numbers: this model was trained on rows of {width} "
                f"number(s) ({', '.join(facts.feature_names) or 'the features'}){_example_row(facts, width)}"
            )
        if len(values) != width:
            raise ConfigError(
                f"each input row needs {width} numbers ({', '.join(facts.feature_names) or 'the features'}), "
                f"got {len(values)}: {values}"
            )
        try:
            rows.append([float(value) for value in values])
        except (TypeError, ValueError):
            raise ConfigError(f"input row {values} holds something that is not a number") from None
    features = torch.tensor(rows, dtype=torch.float32)
    if facts.mean is not None:
        scale(features, facts.mean, facts.std)
    return features.view(len(rows), *facts.input_shape).to(device)


def _example_row(facts: Facts, width: int) -> str:
    """', as in inputs=[[13,2.34,...]]': the training split's mean row, short enough to type."""
    if width > 20:
        return ""
    means = facts.mean or [0.0] * width
    return f", as in inputs=[[{','.join(f'{value:.3g}' for value in means)}]] (the training mean)"


SEPARATORS = {",": '","', ";": '";"', "\t": "'\\t'", "|": '"|"'}  # as typed on the command line


def _check_delimiter(path: Path, delimiter: str) -> None:
    """A first line without the delimiter but with another separator: the file is split by that."""
    if not path.is_file():
        return  # the readers say what is missing
    with open(path, newline="", errors="replace") as file:
        first = file.readline()
    if delimiter in first:
        return
    found = [separator for separator in SEPARATORS if separator != delimiter and separator in first]
    if found:
        raise DataError(
            f"{path} has no {delimiter!r} in its first line, and dlrun splits its columns by that; it "
            f"looks separated by {found[0]!r}: add dataset.delimiter={SEPARATORS[found[0]]}"
        )
