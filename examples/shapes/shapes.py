"""Grey 28x28 pictures of four shapes, drawn from a seed: a dataset of your own, in memory.

dlrun reads the items once, holds them on the training device as one uint8 tensor (they are
small, all the same shape, and the same item twice is the same picture) and scales them to [0, 1]
per batch there. Give it a `transform` that draws at random (see the shapes_augmented preset) and
dlrun reads it through DataLoader workers every epoch instead.
"""

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

CLASSES = ["circle", "square", "triangle", "cross"]
SIZE = 28


def draw(shape: int, generator: torch.Generator) -> Tensor:
    """One picture [1, 28, 28] uint8 of shape number `shape`, at a random place and size."""
    half = int(torch.randint(5, 10, (1,), generator=generator))
    cy, cx = (int(v) for v in torch.randint(half + 1, SIZE - half - 1, (2,), generator=generator))
    y, x = torch.meshgrid(torch.arange(SIZE) - cy, torch.arange(SIZE) - cx, indexing="ij")
    if shape == 0:
        mask = y**2 + x**2 <= half**2
    elif shape == 1:
        mask = (y.abs() <= half * 0.8) & (x.abs() <= half * 0.8)
    elif shape == 2:
        mask = (y <= half * 0.8) & (x.abs() <= (y + half) / 2)
    else:
        mask = ((y.abs() <= 1) & (x.abs() <= half)) | ((x.abs() <= 1) & (y.abs() <= half))
    noise = torch.randint(0, 40, (SIZE, SIZE), generator=generator)
    return torch.where(mask, 230, noise).to(torch.uint8).unsqueeze(0)


class Shapes(Dataset):
    def __init__(self, count: int = 4000, seed: int = 0, transform: Optional[Callable] = None):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % len(CLASSES)
        self.images = torch.stack([draw(int(label), generator) for label in self.labels])
        self.transform = transform
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
