"""Your data. Any map-style torch Dataset works: items are (input, label) pairs, and a `classes`
attribute names the labels. dlrun splits it into train / val / test (seeded, stratified) and,
since it is small and made of tensors, holds it on the training device."""

import math

import torch
from torch.utils.data import Dataset


class Spirals(Dataset):
    """Points on `arms` interleaved spirals in the plane (one turn each, from radius 0.2 to 1),
    one class per arm, made from a seed."""

    def __init__(self, points: int = 900, arms: int = 3, noise: float = 0.1, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        labels = torch.arange(points) % arms
        radius = 0.2 + 0.8 * torch.rand(points, generator=generator)
        angle = labels * (2 * math.pi / arms) + radius * 2 * math.pi
        points_xy = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
        self.inputs = points_xy + noise * torch.randn(points, 2, generator=generator) * radius[:, None]
        self.labels = labels
        self.classes = [f"arm {index}" for index in range(arms)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], int(self.labels[index])
