"""MixUp and CutMix (dataset.augment.mixup_alpha / cutmix_alpha): each training batch blended
with itself rolled by one sample, its labels turned into the matching class probabilities, by
torchvision.transforms.v2's MixUp and CutMix (one of the two per batch, at random, when both are
set, as torchvision's classification reference does).

The training step mixes the batch where it already is, on the training device, whether the data
is held in memory or read by DataLoader workers: the draws come from torch's generator in the
main process, whose state every checkpoint keeps, so a resumed run mixes exactly as before (a
worker's random state cannot be restored mid-epoch).

The loss takes the probabilities; the training metrics are counted against the label with the
larger share of each mixed image (MixUp and CutMix draw the share of the image itself, so that
label is the image's own or its neighbour's): a figure that means what it says, lower than
the same model's accuracy on unmixed images.
"""

from typing import Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from dlrun.data.facts import Facts
from dlrun.errors import ConfigError

SETTINGS = ("mixup_alpha", "cutmix_alpha")


class Mixing:
    def __init__(self, mixup_alpha: float, cutmix_alpha: float, num_classes: int):
        from torchvision.transforms import v2  # a second to import: only where batches are mixed

        chosen = []
        if mixup_alpha > 0:
            chosen.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            chosen.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.transform = chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)

    def __str__(self) -> str:
        names = [
            f"{type(t).__name__} alpha={t.alpha:g}"
            for t in getattr(self.transform, "transforms", [self.transform])
        ]
        return " or ".join(names) + (" per batch" if len(names) > 1 else "")

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mixed images, class probabilities for the loss, each image's larger-share label for
        the training metrics)"""
        mixed, probabilities = self.transform(images, labels)
        return mixed, probabilities, probabilities.argmax(dim=1)


def mixing_for(
    augment: Optional[DictConfig], facts: Facts, task: str, criterion, loss_target: str
) -> Optional[Mixing]:
    """The run's Mixing, or None when dataset.augment asks for none. Refused in one line where it
    cannot work: data that are not images of a classification task, a loss that cannot take
    class probabilities."""
    settings = {name: float((augment or {}).get(name) or 0) for name in SETTINGS}
    if not any(settings.values()):
        return None
    asked = " and ".join(f"dataset.augment.{name}" for name, value in settings.items() if value)
    if facts.kind != "image" or task != "classification":
        raise ConfigError(
            f"{asked} mixes images for classification; this run's data are {facts.kind} for "
            f"{task}: leave {asked} at 0"
        )
    _check_soft_targets(criterion, loss_target, facts.num_classes, asked)
    return Mixing(settings["mixup_alpha"], settings["cutmix_alpha"], facts.num_classes)


def _check_soft_targets(criterion, loss_target: str, classes: int, asked: str) -> None:
    """The loss is tried once on made-up outputs with class probabilities as targets."""
    outputs = torch.zeros(2, classes, requires_grad=True)
    probabilities = torch.full((2, classes), 1.0 / classes)
    try:
        loss = criterion(outputs, probabilities)
        ok = isinstance(loss, Tensor) and loss.dim() == 0
    except Exception:  # noqa: BLE001 - whatever it raises, it cannot take them
        ok = False
    if not ok:
        raise ConfigError(
            f"{asked} trains on class probabilities, and loss._target_={loss_target} does not take them "
            "as targets: use loss=cross_entropy (or a loss whose targets may be probabilities)"
        )
