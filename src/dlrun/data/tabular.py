"""Any CSV table of numbers with one label column (the embedded wine data is a preset)."""

from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.data import LoadOptions, Splits
from dlrun.data.csv_checked import read_checked
from dlrun.data.csv_columnar import read_columnar
from dlrun.data.facts import Facts
from dlrun.data.split import as_splits, split_order


def load_csv(cfg: DictConfig, options: LoadOptions) -> Splits:
    path = Path(cfg.path).expanduser()
    table = read_columnar(path, cfg.delimiter, cfg.label_column) or read_checked(
        path, cfg.delimiter, cfg.label_column
    )
    order, sizes = split_order(table.labels, cfg.val_fraction, cfg.test_fraction, options.seed)
    # the features are read once, in split order: each split is a slice of them, not a copy
    train, val, test = as_splits(table.features_in(order), table.labels[order], sizes)
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


def _standardizer(train: torch.Tensor, standardize: bool) -> tuple[list[float], list[float]]:
    if not standardize:
        return [0.0] * train.shape[1], [1.0] * train.shape[1]
    std, mean = torch.std_mean(train, dim=0)  # one pass over the rows, not two
    std[std == 0] = 1.0  # a constant column stays as it is instead of becoming NaN
    return mean.tolist(), std.tolist()
