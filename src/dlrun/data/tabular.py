"""Any CSV table of numbers with one label column (the embedded wine data is a preset)."""

from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.data import LoadOptions, Splits
from dlrun.data.csv_checked import read_checked
from dlrun.data.csv_columnar import read_columnar
from dlrun.data.csv_table import Table
from dlrun.data.facts import Facts
from dlrun.data.split import stratified_split
from dlrun.errors import ConfigError


def load_csv(cfg: DictConfig, options: LoadOptions) -> Splits:
    path = Path(cfg.path).expanduser()
    if len(cfg.delimiter) != 1:
        raise ConfigError(
            f"dataset.delimiter={cfg.delimiter!r} must be one character, e.g. ';' or '\\t' (tab)"
        )
    table = read_columnar(path, cfg.delimiter, cfg.label_column) or read_checked(
        path, cfg.delimiter, cfg.label_column
    )
    train, val, test = _splits(table, cfg.val_fraction, cfg.test_fraction, options.seed)
    mean, std = _standardizer(train[0], cfg.standardize)  # the training split's statistics only
    for split in (train, val, test):
        if split is not None:
            split[0].sub_(torch.tensor(mean)).div_(torch.tensor(std))
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
            feature_names=table.feature_names,
        ),
    )


def _splits(table: Table, val_fraction: float, test_fraction: float, seed: int):
    """(train, val, test) pairs, seeded and stratified as carve() makes them; the features are
    read once, in split order, and each split is a slice of them (no second copy)."""
    val_rows, test_rows, train_rows = stratified_split(table.labels, [val_fraction, test_fraction], seed)
    parts = [train_rows, val_rows, test_rows]
    order = torch.cat(parts)
    sizes = [len(part) for part in parts]
    features, labels = table.features_in(order).split(sizes), table.labels[order].split(sizes)
    train, val, test = zip(features, labels)
    return train, val, test if sizes[2] else None


def _standardizer(train: torch.Tensor, standardize: bool) -> tuple[list[float], list[float]]:
    if not standardize:
        return [0.0] * train.shape[1], [1.0] * train.shape[1]
    std = train.std(dim=0)
    std[std == 0] = 1.0  # a constant column stays as it is instead of becoming NaN
    return train.mean(dim=0).tolist(), std.tolist()
