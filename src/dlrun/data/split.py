"""Seeded, stratified splits: the same seed always carves the same samples."""

from typing import Optional

import torch


def stratified_split(labels: torch.Tensor, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Split sample indices into len(fractions) + 1 parts, each class in the same proportions.

    Returns the parts for `fractions` first and the remainder last (e.g. [val, test, train]).
    """
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, fraction in zip(parts, fractions):
            count = round(len(members) * fraction)
            part.append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    # sorted, so a split's samples keep the file's order (the batches are shuffled anyway)
    return [torch.sort(torch.cat(part)).values for part in parts]


Pair = tuple[torch.Tensor, torch.Tensor]


def carve(
    inputs: torch.Tensor, targets: torch.Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Pair, Pair, Optional[Pair]]:
    """(train, val, test) of a dataset without those splits of its own; no test if its fraction is 0."""
    val_rows, test_rows, train_rows = stratified_split(targets, [val_fraction, test_fraction], seed)

    def pick(rows: torch.Tensor) -> Pair:
        return inputs[rows], targets[rows]

    return pick(train_rows), pick(val_rows), pick(test_rows) if len(test_rows) else None
