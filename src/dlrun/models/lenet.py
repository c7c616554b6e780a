"""LeNet-5 (LeCun et al. 1998): two conv + average-pool stages, then 120-84-classes.

The flatten size is computed from the input, so 28x28 grey digits and 32x32 colour images both
work unchanged.
"""

from torch import Tensor, nn

from dlrun.models.layers import make_activation


class LeNet5(nn.Module):
    def __init__(self, in_shape: list[int], num_classes: int, activation: str = "tanh", padding: int = 2):
        super().__init__()
        channels, height, width = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=padding),
            make_activation(activation),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            make_activation(activation),
            nn.AvgPool2d(2),
        )
        out_h, out_w = (_stage(_stage(size + 2 * padding)) for size in (height, width))
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"LeNet-5 needs images of at least {14 - 2 * padding}x{14 - 2 * padding} pixels, "
                f"got {height}x{width}"
            )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * out_h * out_w, 120),
            make_activation(activation),
            nn.Linear(120, 84),
            make_activation(activation),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _stage(size: int) -> int:
    return (size - 4) // 2  # a 5x5 convolution without padding, then a 2x2 pool
