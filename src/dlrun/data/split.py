"""Seeded, stratified splits: the same seed always carves the same samples."""

from typing import Optional

import torch


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
    parts = [train_rows, val_rows, test_rows]
    return torch.cat(parts), [len(part) for part in parts]


def as_splits(
    inputs: torch.Tensor, targets: torch.Tensor, sizes: list[int]
) -> tuple[Pair, Pair, Optional[Pair]]:
    """(train, val, test) slices of inputs and targets already in split_order."""
    train, val, test = zip(inputs.split(sizes), targets.split(sizes))
    return train, val, test if sizes[2] else None
