"""Multi-layer perceptron on the flattened input (784-1000-10 is the classic MNIST net)."""

from torch import Tensor, nn

from dlrun.models.layers import flat_size, make_activation


class MLP(nn.Module):
    def __init__(
        self,
        in_shape: list[int],
        num_classes: int,
        hidden_sizes: list[int] = (1000,),
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat_size(in_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
