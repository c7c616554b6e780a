"""Small pieces shared by several models."""

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not known; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def flat_size(in_shape: list[int]) -> int:
    size = 1
    for dim in in_shape:
        size *= dim
    return size
