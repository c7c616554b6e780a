"""What the model is asked to do decides the loss target, the metrics and what a validation keeps.

The loop calls these methods and does not care which task it runs. Metric names come from the
task table in config/catalog.py. A classification validation keeps every sample's probabilities
(PR curves), the confusion matrix and per-class accuracy; a reconstruction keeps its first batch
of inputs and outputs to show as images.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from dlrun.config.catalog import TASK_METRIC


@dataclass
class Evaluation:
    """The result of one pass over a split."""

    metrics: dict[str, float]  # "loss", and the task's metric ("acc" or "mse")
    probabilities: Optional[Tensor] = None  # classification: [N, C] on the device
    labels: Optional[Tensor] = None
    confusion: Optional[Tensor] = None  # [true, predicted]
    per_class_acc: list[float] = field(default_factory=list)
    examples: Optional[tuple[Tensor, Tensor]] = None  # reconstruction: inputs, outputs


class Classification:
    name = "classification"

    def target(self, inputs: Tensor, labels: Tensor) -> Tensor:
        return labels

    def correct(self, outputs: Tensor, labels: Tensor) -> Optional[Tensor]:
        return (outputs.argmax(dim=1) == labels).sum()

    def collector(self, num_classes: int) -> "ClassificationCollector":
        return ClassificationCollector(num_classes)


class Reconstruction:
    name = "reconstruction"

    def target(self, inputs: Tensor, labels: Tensor) -> Tensor:
        return inputs

    def correct(self, outputs: Tensor, labels: Tensor) -> Optional[Tensor]:
        return None  # no accuracy: the loop then reports none

    def collector(self, num_classes: int) -> "ReconstructionCollector":
        return ReconstructionCollector()


class ClassificationCollector:
    """Keeps every sample's class probabilities on the device (PR curves need them all)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.probabilities: list[Tensor] = []
        self.labels: list[Tensor] = []

    def add(self, inputs: Tensor, labels: Tensor, outputs: Tensor) -> None:
        # softmax also turns the log-probabilities of an nll model back into probabilities
        self.probabilities.append(outputs.float().softmax(dim=1))
        self.labels.append(labels)

    def finish(self, loss: float) -> Evaluation:
        probabilities, labels = torch.cat(self.probabilities), torch.cat(self.labels)
        confusion = confusion_matrix(probabilities.argmax(dim=1), labels, self.num_classes)
        accuracy = confusion.diagonal().sum().item() / max(1, len(labels))
        return Evaluation(
            metrics={"loss": loss, TASK_METRIC[Classification.name]: accuracy},
            probabilities=probabilities,
            labels=labels,
            confusion=confusion.cpu(),
            per_class_acc=per_class_accuracy(confusion).tolist(),
        )


class ReconstructionCollector:
    """Mean squared error against the input, and the first batch to show as images."""

    def __init__(self):
        self.squared_error: Optional[Tensor] = None
        self.elements = 0
        self.examples: Optional[tuple[Tensor, Tensor]] = None

    def add(self, inputs: Tensor, labels: Tensor, outputs: Tensor) -> None:
        error = (outputs.float() - inputs.float()).pow(2).sum()
        self.squared_error = error if self.squared_error is None else self.squared_error + error
        self.elements += inputs.numel()
        if self.examples is None:
            self.examples = (inputs[:32].float(), outputs[:32].float())

    def finish(self, loss: float) -> Evaluation:
        mse = self.squared_error.item() / max(1, self.elements) if self.elements else float("nan")
        return Evaluation(
            metrics={"loss": loss, TASK_METRIC[Reconstruction.name]: mse}, examples=self.examples
        )


TASKS = {task.name: task for task in (Classification, Reconstruction)}


def make_task(name: str):
    return TASKS[name]()


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[true class, predicted class] counts, computed on the device."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class; NaN for a class absent from the split."""
    totals = confusion.sum(dim=1).double()
    return confusion.diagonal().double() / totals
