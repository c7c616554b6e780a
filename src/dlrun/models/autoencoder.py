"""Autoencoders that reconstruct their input (pixels in [0, 1], hence the sigmoid output)."""

from torch import Tensor, nn

from dlrun.models.layers import flat_size


class LinearAutoencoder(nn.Module):
    """Fully connected encoder down to the last hidden size (784-128-64-12-6), and its mirror."""

    def __init__(self, in_shape: list[int], hidden_sizes: list[int] = (128, 64, 12, 6)):
        super().__init__()
        sizes = [flat_size(in_shape), *hidden_sizes]
        self.encoder = _stack(sizes)
        self.decoder = _stack(sizes[::-1])
        self.decoder.append(nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        code = self.encoder(x.flatten(1))
        return self.decoder(code).view_as(x)


def _stack(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(size_in, size_out))
        if index < len(sizes) - 2:  # no activation on the code or the output logits
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """Stride-2 3x3 convs per width but the last, then one conv down to [last width] x 1 x 1;
    the decoder mirrors it with transposed convs back to the input size."""

    def __init__(self, in_shape: list[int], channels: list[int] = (16, 32, 64)):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("the conv autoencoder needs at least two channel widths")
        in_channels, height, width = in_shape
        sizes = [(height, width)]
        for _ in channels[:-1]:
            sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))  # 3x3, stride 2, padding 1
        widths = [in_channels, *channels]
        encoder: list[nn.Module] = []
        for size_in, size_out in zip(widths[:-2], widths[1:-1]):
            encoder += [nn.Conv2d(size_in, size_out, 3, stride=2, padding=1), nn.ReLU()]
        encoder.append(nn.Conv2d(widths[-2], widths[-1], kernel_size=sizes[-1]))  # -> 1x1
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            nn.ConvTranspose2d(widths[-1], widths[-2], kernel_size=sizes[-1]),
            nn.ReLU(),
        ]
        for index in range(len(widths) - 2, 0, -1):
            target, source = sizes[index - 1], sizes[index]
            extra = tuple(t - (2 * s - 1) for t, s in zip(target, source))  # 0 or 1 row/column
            decoder.append(
                nn.ConvTranspose2d(
                    widths[index], widths[index - 1], 3, stride=2, padding=1, output_padding=extra
                )
            )
            decoder.append(nn.ReLU() if index > 1 else nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))
