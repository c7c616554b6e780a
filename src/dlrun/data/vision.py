"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, held in memory as uint8 tensors."""

from pathlib import Path

import torch
from omegaconf import DictConfig

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


def load_torchvision(cfg: DictConfig, options: LoadOptions) -> Splits:
    class_name, folder, files, mean, std = SOURCES[cfg.loader]
    train_images, train_labels, classes = _read(cfg, class_name, folder, files, train=True)
    test_images, test_labels, _ = _read(cfg, class_name, folder, files, train=False)
    train, val, _ = carve(train_images, train_labels, cfg.val_fraction, 0.0, options.seed)
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


def _read(cfg: DictConfig, class_name: str, folder: str, files: str, train: bool):
    from torchvision import datasets  # torchvision costs seconds to import: only when needed

    root = Path(cfg.root).expanduser().resolve()
    try:
        dataset = getattr(datasets, class_name)(str(root), train=train, download=cfg.download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ValueError...
        raise DataError(_missing(cfg, class_name, root / folder, files, error)) from None
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    _check_labels(labels, len(dataset.classes), root / folder, train)
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


def _missing(cfg, class_name: str, folder: Path, files: str, error: Exception) -> str:
    reason = str(error).splitlines()[0].rstrip(": ") if str(error) else type(error).__name__
    if cfg.download:
        how = "could not be downloaded either; copy the files there from a machine with internet"
    else:
        how = "put the files there or run with dataset.download=true (needs internet)"
    return (
        f"{class_name} is not readable in {folder} ({reason}): it needs {files}; {how}, "
        "or point dataset.root at the folder that holds "
        f"{folder.relative_to(Path(cfg.root).expanduser().resolve())}"
    )
