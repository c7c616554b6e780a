"""Seeded, stratified splits: the same seed always carves the same samples."""

from typing import Optional

import torch

from dlrun.errors import DataError


def stratified_split(labels: torch.Tensor, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Split sample indices into len(fractions) + 1 parts, each class in the same proportions.

    Returns the parts for `fractions` first and the remainder last (e.g. [val, test, train]).
    """
    generator = torch.Generator().manual_seed(seed)
    part_of = torch.full((len(labels),), len(fractions), dtype=torch.uint8)  # the remainder unless drawn
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, fraction in enumerate(fractions):
            count = round(len(members) * fraction)
            part_of[members[start : start + count]] = part
            start += count
    # each part in the file's order (the batches are shuffled anyway); one byte per sample, not
    # lists of indices to sort, as a million-row table needs
    return [torch.nonzero(part_of == part).flatten() for part in range(len(fractions) + 1)]


Pair = tuple[torch.Tensor, torch.Tensor]


def carve(
    inputs: torch.Tensor, targets: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Pair, Pair, Optional[Pair]]:
    """(train, val, test) of a dataset without those splits of its own; no test if its fraction is 0."""
    order, sizes = split_order(targets, val_fraction, test_fraction, seed)
    return as_splits(inputs[order], targets[order], sizes)


def split_order(
    labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, list[int]]:
    """Every sample's index, train's first, then val's, then test's; and the three sizes. Inputs
    gathered once in this order are split into slices, not copied again per split."""
    val_rows, test_rows, train_rows = stratified_split(labels, [val_fraction, test_fraction], seed)
    _check_parts(labels, [val_fraction, test_fraction], val_rows, train_rows)
    parts = [train_rows, val_rows, test_rows]
    return torch.cat(parts), [len(part) for part in parts]


def _check_parts(labels: torch.Tensor, fractions: list[float], val_rows, train_rows) -> None:
    """A stratified split rounds each class's share: classes too small leave a split empty, which
    the fractions alone would not say."""
    val_fraction, test_fraction = fractions
    if not len(labels) or (len(val_rows) or not val_fraction) and len(train_rows):
        return
    classes, counts = torch.unique(labels, return_counts=True)
    largest = int(counts.max())
    if largest == 1:
        raise DataError(
            f"each of the {len(classes)} classes has a single row, so no split can both train and "
            "validate on it: check that the labels are classes (a column with a different value in "
            "every row is a number to predict)"
        )
    if len(val_rows):
        said, empty, fix = (
            f"dataset.val_fraction={val_fraction} and dataset.test_fraction={test_fraction} leave",
            "training",
            "lower them",
        )
    else:
        said, empty = f"dataset.val_fraction={val_fraction} leaves", "validation"
        fix = f"set dataset.val_fraction={_smallest_share(largest)} or more"
    raise DataError(
        f"{said} no {empty} rows: each split takes its share of each class, and the largest of the "
        f"{len(classes)} classes has {largest} rows; {fix}"
    )


def _smallest_share(rows: int) -> float:
    """The smallest fraction (in hundredths) that rounds to one of `rows` rows."""
    return next(k / 100 for k in range(1, 100) if round(rows * k / 100) >= 1)


def as_splits(
    inputs: torch.Tensor, targets: torch.Tensor, sizes: list[int]
) -> tuple[Pair, Pair, Optional[Pair]]:
    """(train, val, test) slices of inputs and targets already in split_order."""
    train, val, test = zip(inputs.split(sizes), targets.split(sizes))
    return train, val, test if sizes[2] else None
