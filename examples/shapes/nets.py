"""A small convolutional network for the shapes (any torch.nn.Module works as a dlrun model)."""

from torch import Tensor, nn


class ShapeNet(nn.Module):
    """Two conv - ReLU - max-pool stages, then a linear head. in_shape and num_classes come from
    the data; width and dropout from configs/model/shapenet.yaml."""

    def __init__(self, in_shape: list[int], num_classes: int, width: int = 16, dropout: float = 0.1):
        super().__init__()
        channels, height, breadth = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * (height // 4) * (breadth // 4), num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
