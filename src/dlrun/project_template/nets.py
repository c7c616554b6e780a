"""Your models. Any torch.nn.Module works: dlrun passes it the settings of its config file
(configs/model/*.yaml) plus the facts its signature asks for, taken from the data: in_shape,
num_classes, vocab_size, class_names. A model that reconstructs its input says task = "reconstruction"."""

import math

from torch import Tensor, nn


class TinyNet(nn.Module):
    """A small multi-layer perceptron on the flattened input."""

    def __init__(self, in_shape: list[int], num_classes: int, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(in_shape), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
