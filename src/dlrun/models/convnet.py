"""The classic CIFAR-10 ConvNet: (conv - ReLU - 2x2 max-pool) per width, then fully connected."""

from torch import Tensor, nn


class ConvNet(nn.Module):
    def __init__(
        self,
        in_shape: list[int],
        num_classes: int,
        channels: list[int] = (6, 16),
        kernel_size: int = 5,
        hidden_sizes: list[int] = (120, 84),
    ):
        super().__init__()
        width_in, height, width = in_shape
        layers: list[nn.Module] = []
        for width_out in channels:
            layers += [nn.Conv2d(width_in, width_out, kernel_size), nn.ReLU(), nn.MaxPool2d(2)]
            width_in = width_out
            height, width = (height - kernel_size + 1) // 2, (width - kernel_size + 1) // 2
            if height < 1 or width < 1:
                raise ValueError(
                    f"{len(channels)} conv stages of kernel {kernel_size} shrink {in_shape[1]}x{in_shape[2]} "
                    "images to nothing; use fewer model.channels or a smaller model.kernel_size"
                )
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        size = width_in * height * width
        for hidden in hidden_sizes:
            head += [nn.Linear(size, hidden), nn.ReLU()]
            size = hidden
        head.append(nn.Linear(size, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
