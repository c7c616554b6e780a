"""Classification metrics computed on the device from whole-split predictions."""

import torch
from torch import Tensor


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[true class, predicted class] counts."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class; NaN for a class absent from the split."""
    totals = confusion.sum(dim=1).double()
    return confusion.diagonal().double() / totals
