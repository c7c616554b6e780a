"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, held in memory as uint8 tensors."""

from dataclasses import dataclass
from pathlib import Path

import torch

from dlrun.data import LoadOptions, Splits
from dlrun.data.facts import Facts
from dlrun.data.split import carve
from dlrun.errors import DataError

# torchvision class, the folder it reads under root, the files a user must provide offline,
# and the usual per-channel statistics of the training images
SOURCES = {
    "mnist": (
        "MNIST",
        "MNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
        [0.1307],
        [0.3081],
    ),
    "fashion_mnist": (
        "FashionMNIST",
        "FashionMNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
        [0.2860],
        [0.3530],
    ),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        "data_batch_1..5, test_batch, batches.meta (cifar-10-python.tar.gz unpacked)",
        [0.4914, 0.4822, 0.4465],
        [0.2470, 0.2435, 0.2616],
    ),
}


def load_torchvision(
    name: str, root: str, download: bool = True, val_fraction: float = 0.1, *, options: LoadOptions
) -> Splits:
    """`name` (mnist, fashion_mnist, cifar10) under `root`: the official test split, and val carved
    from the training split, seeded and stratified."""
    class_name, folder, files, mean, std = SOURCES[name]
    root_path = Path(root).expanduser().resolve()
    source = _Source(class_name, root_path, root_path / folder, files, download)
    train_images, train_labels, classes = _read(source, train=True)
    test_images, test_labels, _ = _read(source, train=False)
    train, val, _ = carve(train_images, train_labels, val_fraction, 0.0, options.seed)
    return Splits(
        train=train,
        val=val,
        test=(test_images, test_labels),
        facts=Facts(
            kind="image",
            task=options.task,
            input_shape=list(train_images.shape[1:]),
            num_classes=len(classes),
            class_names=list(classes),
            mean=list(mean),
            std=list(std),
        ),
    )


@dataclass(frozen=True)
class _Source:
    class_name: str  # torchvision's
    root: Path
    folder: Path  # where the files are, under root
    files: str  # what a user must put there offline
    download: bool


def _read(source: _Source, train: bool):
    from torchvision import datasets  # torchvision costs seconds to import: only when needed

    try:
        dataset = getattr(datasets, source.class_name)(
            str(source.root), train=train, download=source.download
        )
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ValueError...
        raise DataError(_missing(source, error)) from None
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    _check_labels(labels, len(dataset.classes), source.folder, train)
    return images.contiguous(), labels, dataset.classes


def _check_labels(labels: torch.Tensor, classes: int, folder: Path, train: bool) -> None:
    bad = ((labels < 0) | (labels >= classes)).nonzero()
    if len(bad):
        index = bad[0].item()
        split = "training" if train else "test"
        raise DataError(
            f"the {split} labels in {folder} hold {labels[index].item()} at sample {index}, but there are "
            f"only {classes} classes (0..{classes - 1}): the label file is damaged; "
            "replace it with a fresh copy"
        )


def _missing(source: _Source, error: Exception) -> str:
    reason = str(error).splitlines()[0].rstrip(": ") if str(error) else type(error).__name__
    if source.download:
        how = "could not be downloaded either; copy the files there from a machine with internet"
    else:
        how = "put the files there or run with dataset.download=true (needs internet)"
    return (
        f"{source.class_name} is not readable in {source.folder} ({reason}): it needs {source.files}; "
        f"{how}, or point dataset.root at the folder that holds {source.folder.relative_to(source.root)}"
    )
