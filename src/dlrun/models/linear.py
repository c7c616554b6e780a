"""Logistic regression: one linear layer from the flattened input to the class logits."""

from torch import Tensor, nn

from dlrun.models.layers import flat_size


class LogisticRegression(nn.Module):
    def __init__(self, in_shape: list[int], num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(flat_size(in_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))
