"""A model's layers as they meet one real batch: each leaf module's type, output shape and
parameters (trainable or frozen), in the order the forward pass calls them. The terminal shows it
at start with terminal.summary=true; TensorBoard keeps it as text (logger.tensorboard.summary)."""

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Layer:
    name: str
    kind: str  # the module's class
    output: str  # its output's shape on the batch, "-" when the forward pass did not call it
    parameters: int
    trainable: int


@dataclass
class ModelSummary:
    layers: list[Layer] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def trainable(self) -> int:
        return sum(layer.trainable for layer in self.layers)

    def counts(self) -> str:
        return counted(self.total, self.trainable)

    def markdown(self) -> str:
        rows = [
            f"| {layer.name} | {layer.kind} | {layer.output} | {layer.parameters:,} | {layer.trainable:,} |"
            for layer in self.layers
        ]
        header = "| layer | type | output | parameters | trainable |\n|---|---|---|---:|---:|"
        totals = f"\n\n{self.counts()}"
        return "\n".join([header, *rows]) + totals


def counted(total: int, trainable: int) -> str:
    """'1,234 trainable parameters', or with the frozen ones: '1,026 trainable parameters of
    11,177,538 (11,176,512 frozen)'."""
    text = f"{trainable:,} trainable parameters"
    return f"{text} of {total:,} ({total - trainable:,} frozen)" if total > trainable else text


def parameter_counts(model: nn.Module) -> str:
    """counted() of the model's parameters (no batch needed)."""
    parameters = list(model.parameters())
    return counted(sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad))


def summarize(model: nn.Module, example: torch.Tensor) -> ModelSummary:
    """The summary of `model` on `example` (a batch of inputs, run once in eval mode)."""
    # the layers: modules without children, and those holding parameters of their own
    leaves = {
        module: name
        for name, module in model.named_modules()
        if not list(module.children()) or list(module.parameters(recurse=False))
    }
    shapes: dict[nn.Module, str] = {}
    order: list[nn.Module] = []

    def record(module: nn.Module, _inputs, output) -> None:
        if module not in shapes:
            order.append(module)
            shapes[module] = _shape(output)

    hooks = [module.register_forward_hook(record) for module in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    unused = [module for module in leaves if module not in shapes]
    return ModelSummary(
        [_layer(leaves[module], module, shapes.get(module, "-")) for module in order + unused]
    )


def _layer(name: str, module: nn.Module, output: str) -> Layer:
    own = list(module.parameters(recurse=False))
    trainable = sum(p.numel() for p in own if p.requires_grad)
    return Layer(name or "(model)", type(module).__name__, output, sum(p.numel() for p in own), trainable)


def _shape(output) -> str:
    if isinstance(output, torch.Tensor):
        return str(list(output.shape))
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return str(list(output[0].shape))
    return type(output).__name__
