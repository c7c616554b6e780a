"""A dataset of the user's: any map-style Dataset whose items are (input, label) pairs.

engine/build.py makes the Dataset objects from the config's `_target_`; this module turns them
into what a run trains on. The facts come from the data: the input shape from its first sample,
the class names from a `classes` attribute (else the labels 0..max), the kind from the shape
(image [C, H, W], table [features], other tensors). A split the dataset does not give (val,
test) is carved from the training data with the usual seeded, stratified fractions.

How batches reach the device (`in_memory`, default auto):
- in memory, like MNIST: every split as one tensor on the device, batched from a seeded
  permutation. Auto chooses it when the inputs are tensors (or arrays, numbers, PIL images) of one
  shape, the first sample read twice is the same (no random transform runs on each read: that
  would freeze at its first draw), and all splits together fit in IN_MEMORY_BYTES;
- otherwise through a DataLoader: `num_workers` processes decode the items, in a seeded order,
  into pinned memory on CUDA, copied with non_blocking.
uint8 images are scaled to [0, 1] on the device; float inputs are taken as they come.
"""

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from dlrun.data import Data, LoadOptions, Splits, Workers, read_by_workers, to_device
from dlrun.data.batches import Normalize
from dlrun.data.facts import Facts
from dlrun.data.split import carve, stratified_split
from dlrun.data.tabular import scale, standardizer
from dlrun.errors import DataError

IN_MEMORY_BYTES = 1 << 30  # 1 GiB: small enough for any GPU dlrun trains on, and for host memory


@dataclass
class CustomSettings:
    """dlrun's own keys in the config of a user's dataset (every other key goes to its `_target_`)."""

    val_fraction: float = 0.1  # carved from train when the dataset gives no val split
    test_fraction: float = 0.1  # carved from train when it gives no test split (0: none)
    in_memory: Union[bool, str] = "auto"  # auto | true | false
    num_workers: int = 2  # processes that read the items (when not in memory, and to load it)
    # a table's features: minus the training split's mean, over its std, as dataset=csv does
    standardize: bool = True


def from_datasets(
    train: Dataset,
    val: Optional[Dataset],
    test: Optional[Dataset],
    settings: CustomSettings,
    options: LoadOptions,
    source: str,
    unaugmented: Optional[Dataset] = None,
) -> Data:
    """Batches on the device and the facts, from the user's Dataset objects (`source` names them
    in messages). `unaugmented`: the training data read with its eval_transform, where the val
    and test splits carved from it come from."""
    sample = first_pair(train, source)
    if unaugmented is not None and len(unaugmented) != len(train):
        raise DataError(
            f"{source} read with dataset.eval_transform has {len(unaugmented)} items, not "
            f"{len(train)}: val and test are carved from the same rows, so it must give as many"
        )
    memory = _in_memory(settings.in_memory, train, sample, [train, val, test])
    if memory:
        return _held(train, val, test, settings, options, source, unaugmented)
    return _loaded(train, val, test, settings, options, source, unaugmented)


def draws_at_random(dataset: Dataset, reads: int = 3) -> bool:
    """Whether the first item differs between reads (a random transform runs on each)."""
    if len(dataset) == 0:
        return False
    first = as_tensor(dataset[0][0])
    for _ in range(reads - 1):
        again = as_tensor(dataset[0][0])
        if again.shape != first.shape or not torch.equal(again, first):
            return True
    return False


def first_pair(dataset: Dataset, source: str) -> tuple[Tensor, int]:
    if len(dataset) == 0:
        raise DataError(f"{source} is empty: it has no items to train on")
    return _pair(dataset[0], source, 0)


def _pair(item: Any, source: str, index: int) -> tuple[Tensor, int]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(
            f"{source}[{index}] is a {type(item).__name__}, not an (input, label) pair: "
            "its __getitem__ must return (input, label)"
        )
    inputs, label = item
    return as_tensor(inputs, source), _label(label, source, index)


def as_tensor(value: Any, source: str = "the dataset") -> Tensor:
    """A sample's input as a tensor: tensors as they are, arrays and numbers converted, PIL
    images as uint8 [C, H, W]."""
    if isinstance(value, Tensor):
        return value.float() if value.dtype == torch.float64 else value
    if isinstance(value, (np.ndarray, list, int, float)):
        tensor = torch.as_tensor(value)
        # NumPy's default float64 meets float32 weights: taken as float32, as torch would make it
        return tensor.float() if tensor.dtype == torch.float64 else tensor
    if hasattr(value, "getbands"):  # a PIL image
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(value)
    kind = type(value).__name__
    raise DataError(f"{source} gives inputs of type {kind}: return tensors, arrays or PIL images")


def _label(value: Any, source: str, index: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{source}[{index}] has the label {value!r}: labels must be class numbers") from None
    if not number.is_integer():
        raise DataError(_not_classes(source, f"{source}[{index}] has the label {number:g}"))
    return int(number)


def class_numbers(labels: Any, source: str = "the dataset") -> Tensor:
    """Labels as int64 class numbers; labels that are not whole numbers are refused, not cut."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        fractional = labels != labels.round()
        if fractional.any():
            example = labels[fractional][0].item()
            raise DataError(_not_classes(source, f"{source} has labels such as {example:g}"))
    return labels.to(torch.int64)


def _not_classes(source: str, what: str) -> str:
    return (
        f"{what}: classification needs whole class numbers (0, 1, 2, ...), and cutting {source}'s "
        "labels down to them would invent classes; give each item its class number"
    )


def collate(items: list) -> tuple[Tensor, Tensor]:
    """A batch of (input, label) items as (stacked inputs, int64 labels)."""
    inputs = [as_tensor(item[0]) for item in items]
    return torch.stack(inputs), class_numbers([float(item[1]) for item in items])


def _in_memory(setting: Union[bool, str], train: Dataset, sample: tuple[Tensor, int], splits: list) -> bool:
    if setting is True or setting is False:
        return setting
    again = as_tensor(train[0][0])
    repeatable = again.shape == sample[0].shape and torch.equal(again, sample[0])
    items = sum(len(split) for split in splits if split is not None)
    size = items * sample[0].element_size() * sample[0].numel()
    return repeatable and size <= IN_MEMORY_BYTES


def _held(train, val, test, settings: CustomSettings, options: LoadOptions, source: str, unaugmented) -> Data:
    """Read every item once (in worker processes) into one tensor per split, then to the device."""
    train_pair = _read_all(train, settings.num_workers, source)
    if val is None:
        test_fraction = settings.test_fraction if test is None else 0.0
        train_pair, val_pair, carved_test = carve(
            *train_pair, settings.val_fraction, test_fraction, options.seed
        )
        if unaugmented is not None:  # the same rows, read without the training transform
            read = _read_all(unaugmented, settings.num_workers, source)
            _, val_pair, carved_test = carve(*read, settings.val_fraction, test_fraction, options.seed)
    else:
        val_pair, carved_test = _read_all(val, settings.num_workers, source), None
    test_pair = _read_all(test, settings.num_workers, source) if test is not None else carved_test
    facts = _facts(train, train_pair[0][0], train_pair[1], options)
    if facts.kind == "table" and settings.standardize:
        facts.mean, facts.std = standardizer(train_pair[0])
        for pair in (train_pair, val_pair, test_pair):
            if pair is not None:  # fresh tensors read from the dataset: scaled in place
                scale(pair[0], facts.mean, facts.std)
    return to_device(Splits(train_pair, val_pair, test_pair, facts), options)


def _read_all(dataset: Dataset, workers: int, source: str) -> tuple[Tensor, Tensor]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=512, num_workers=workers, collate_fn=collate)
    try:
        batches = list(loader)
    except RuntimeError as error:
        if "stack expects each tensor to be equal size" in str(error):
            raise DataError(
                f"the inputs of {source} differ in shape: give every item the same shape "
                "(e.g. a Resize in its transform), or set dataset.in_memory=false"
            ) from None
        raise
    return torch.cat([inputs for inputs, _ in batches]), torch.cat([labels for _, labels in batches])


def _loaded(
    train, val, test, settings: CustomSettings, options: LoadOptions, source: str, unaugmented
) -> Data:
    """Batches read by DataLoader workers every epoch."""
    labels = _labels(train, settings.num_workers)
    if val is None:
        fractions = [settings.val_fraction] + ([settings.test_fraction] if test is None else [])
        *parts, train_rows = stratified_split(labels, fractions, options.seed)
        evaluated = unaugmented if unaugmented is not None else train
        val = Subset(evaluated, parts[0].tolist())
        carved = len(parts) > 1 and len(parts[1])
        test = Subset(evaluated, parts[1].tolist()) if test is None and carved else test
        labels, train = labels[train_rows], Subset(train, train_rows.tolist())
    sample, _ = first_pair(train, source)
    facts = _facts(train, sample, labels, options)
    facts.task = options.task
    workers = Workers(settings.num_workers)
    prepare = _normalize(facts, options)
    if facts.kind == "table" and settings.standardize:
        facts.mean, facts.std = standardizer(_read_all(train, settings.num_workers, source)[0])
        prepare = Standardize(facts.mean, facts.std, options.device)
    return read_by_workers((train, val, test), facts, options, workers, prepare, source, collate)


class Standardize:
    """A batch of table rows minus the training split's mean, over its std, on the device."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device):
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)

    def __call__(self, rows: Tensor) -> Tensor:
        return (rows.float() - self.mean) / self.std


def _labels(dataset: Dataset, workers: int) -> Tensor:
    """Every item's label: from a `targets` attribute when there is one, else read once."""
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return class_numbers(targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=collate)
    return torch.cat([labels for _, labels in loader])


def _facts(dataset: Dataset, sample: Tensor, labels: Tensor, options: LoadOptions) -> Facts:
    classes = _classes(dataset)
    if labels.numel() and (labels.min() < 0 or (classes and labels.max() >= len(classes))):
        raise DataError(
            f"labels run from {labels.min().item()} to {labels.max().item()}, but the dataset "
            f"names {len(classes)} classes: labels must be 0..{len(classes) - 1}"
        )
    if not classes:
        classes = [str(index) for index in range(int(labels.max().item()) + 1 if labels.numel() else 1)]
    table = sample.dim() == 1 and sample.is_floating_point()
    kind = "image" if sample.dim() == 3 else "table" if table else "tensor"
    scaled = kind == "image" and sample.dtype == torch.uint8  # uint8 pixels are scaled to [0, 1]
    channels = sample.shape[0] if kind == "image" else 0
    return Facts(
        kind=kind,
        task=options.task,
        input_shape=list(sample.shape),
        num_classes=len(classes),
        class_names=classes,
        mean=[0.0] * channels if scaled else None,
        std=[1.0] * channels if scaled else None,
    )


def _classes(dataset: Dataset) -> list[str]:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return [str(name) for name in classes] if classes is not None else []


def _normalize(facts: Facts, options: LoadOptions) -> Optional[Normalize]:
    if facts.kind != "image" or facts.mean is None:
        return None
    return Normalize(facts.mean, facts.std, options.device, options.channels_last)
