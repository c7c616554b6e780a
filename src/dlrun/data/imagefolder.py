"""Any folder of images, one subfolder per class: `<root>/train/<class>/*` and `<root>/val/...`.

Files are decoded and transformed in DataLoader workers (torchvision.transforms.v2, named in the
config) into uint8 tensors; normalization happens on the device, like every image dataset.
"""

import copy
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from dlrun.data import Data, LoadOptions, Workers, read_by_workers
from dlrun.data.batches import Normalize
from dlrun.data.facts import Facts
from dlrun.data.folder_scan import scan_classes
from dlrun.data.image_check import check_classes_filled, drop_bad_images
from dlrun.data.split import stratified_split
from dlrun.errors import ConfigError, DataError

log = logging.getLogger("dlrun")

DEFAULT_TRAIN = (
    {"_target_": "torchvision.transforms.v2.RandomResizedCrop", "size": 224},
    {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"},
)
DEFAULT_VAL = (
    {"_target_": "torchvision.transforms.v2.Resize", "size": 256},
    {"_target_": "torchvision.transforms.v2.CenterCrop", "size": 224},
)
# ImageNet statistics, as the pretrained ResNet expects
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagefolder(
    root: str,
    folder: Optional[str] = None,
    val_fraction: float = 0.2,
    train_transforms: Any = None,  # None: DEFAULT_TRAIN
    val_transforms: Any = None,  # None: DEFAULT_VAL
    mean: Any = IMAGENET_MEAN,
    std: Any = IMAGENET_STD,
    bad_images: str = "error",
    num_workers: int = 2,
    prefetch_factor: int = 2,
    persistent_workers: bool = True,
    *,
    options: LoadOptions,
) -> Data:
    """`<root>/<folder>/train/<class>/*` (and val/, test/ when there), decoded by DataLoader workers."""
    root = (Path(root).expanduser() / (folder or "")).resolve()
    train_dir, val_dir, test_dir = root / "train", root / "val", root / "test"
    if not train_dir.is_dir():
        raise DataError(
            f"no train/ folder in {root}: lay images out as {root}/train/<class>/*.jpg (and val/<class>/)"
        )
    train_transforms = DEFAULT_TRAIN if train_transforms is None else train_transforms
    val_transforms = DEFAULT_VAL if val_transforms is None else val_transforms
    train_tf = pipeline(train_transforms, "dataset.train_transforms")
    val_tf = pipeline(val_transforms, "dataset.val_transforms")
    train_set = _folder(train_dir, train_tf)
    classes = train_set.classes
    val_set = _folder(val_dir, val_tf, classes) if val_dir.is_dir() else None
    test_set = _folder(test_dir, val_tf, classes) if test_dir.is_dir() else None
    # one check of every split's files, in one pool of workers
    found = [dataset for dataset in (train_set, val_set, test_set) if dataset is not None]
    skipped = drop_bad_images(found, root, bad_images, num_workers)
    if val_set is None:
        # carve a seeded, stratified val split out of train/, seen through the val transforms
        val_rows, train_rows = stratified_split(torch.tensor(train_set.targets), [val_fraction], options.seed)
        val_view = copy.copy(train_set)
        val_view.transform = val_tf
        val_set = torch.utils.data.Subset(val_view, val_rows.tolist())
        train_set = torch.utils.data.Subset(train_set, train_rows.tolist())

    try:
        sample, _ = val_set[0]  # the input shape after the transforms
    except OSError as error:  # PIL: changed in place since the image check passed it
        raise DataError(f"cannot decode an image in {root}: {str(error).splitlines()[0]}") from None
    mean, std = _per_channel(list(mean), list(std), sample.shape[0])
    if options.task == "reconstruction":
        mean, std = [0.0] * len(mean), [1.0] * len(std)
    prepare = Normalize(mean, std, options.device, options.channels_last)
    facts = Facts(
        kind="image",
        task=options.task,
        input_shape=list(sample.shape),
        num_classes=len(classes),
        class_names=list(classes),
        mean=mean,
        std=std,
        skipped_files=skipped,
        eval_transforms=_plain(val_transforms),  # how dlrun-predict prepares an image file
    )
    workers = Workers(num_workers, prefetch_factor, persistent_workers)
    return read_by_workers((train_set, val_set, test_set), facts, options, workers, prepare, origin=root)


def pipeline(specs: Any, key: str):
    """The transforms of `specs` (torchvision.transforms.v2 by `_target_`: a Compose, one
    transform or a list of them; or by name, `{name: Resize, size: 256}`) -> a uint8 tensor
    transform."""
    from torchvision.transforms import v2

    steps = [v2.ToImage(), *_steps(_plain(specs), key)]
    # uint8 out: batches travel to the device at a quarter of the float size
    steps += [v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()]
    return v2.Compose(steps)


V2 = "torchvision.transforms.v2."
EXPECTED = (
    f"give torchvision.transforms.v2 transforms as {{_target_: {V2}Compose, transforms: "
    f"[{{_target_: {V2}Resize, size: 256}}, ...]}}, or a list of such entries"
)


def _steps(spec: Any, key: str) -> list:
    from torchvision.transforms import v2

    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return [step for item in spec for step in _steps(item, key)]
    if isinstance(spec, v2.Transform):
        return [spec]
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: {spec!r} is not a transform; {EXPECTED}")
    spec = dict(spec)
    target = str(spec.pop("_target_", ""))
    module, _, name = target.rpartition(".")
    if target and module not in (V2.rstrip("."), "torchvision.transforms"):  # v1 names are v2's too
        raise ConfigError(
            f"{key}: {target} is not in torchvision.transforms.v2, which is what an image folder "
            f"takes ({EXPECTED}); a transform of your own needs a dataset of your own"
        )
    name = name if target else spec.pop("name", None)
    if name == "Compose":
        return _steps(spec.get("transforms", []), key)
    transform = getattr(v2, str(name), None)
    if not (isinstance(transform, type) and issubclass(transform, v2.Transform)):
        raise ConfigError(f"{key}: {name!r} is not a torchvision.transforms.v2 transform; {EXPECTED}")
    try:
        return [transform(**spec)]
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {name}({spec}) is not valid: {error}") from None


def _per_channel(mean: list[float], std: list[float], channels: int) -> tuple[list[float], list[float]]:
    """mean and std for as many channels as the transforms give: ImageNet's three (the default)
    become one for a Grayscale pipeline; other counts that differ are refused."""
    if len(mean) == len(std) == channels:
        return mean, std
    if channels == 1 and (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD):
        return [sum(mean) / 3], [sum(std) / 3]
    raise ConfigError(
        f"dataset.mean and dataset.std have {len(mean)} and {len(std)} values, but the transforms "
        f"give images of {channels} channel(s): give one value per channel"
    )


def _folder(path: Path, transform, classes: Optional[list[str]] = None):
    """The ImageFolder at `path`, every class filled (and the same as train/'s `classes`)."""
    if not any(entry.is_dir() for entry in path.iterdir()):
        raise DataError(f"no class folders in {path}: put the images in {path}/<class>/*.jpg")
    # empty classes are allowed here so that the check below can name the folder
    dataset = _scanned_image_folder()(str(path), transform=transform, allow_empty=True)
    left_out = dataset.scan.summary(path)
    if left_out:
        log.warning(left_out)
        print(f"warning: {left_out}", file=sys.stderr)
    check_classes_filled(dataset, path)
    if classes is not None and dataset.classes != classes:
        raise DataError(f"{path} has classes {dataset.classes}, but train/ has {classes}; they must match")
    return dataset


def _scanned_image_folder():
    """torchvision's ImageFolder, listing its files with folder_scan (see there why)."""
    from torchvision.datasets import ImageFolder

    class ScannedImageFolder(ImageFolder):
        def make_dataset(
            self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False
        ):
            self.scan = scan_classes(Path(directory), class_to_idx)
            return self.scan.samples

    return ScannedImageFolder


def _plain(specs: Any) -> Any:
    """Transform specs as plain lists and dicts (from a config node, a list or the defaults)."""
    if OmegaConf.is_config(specs):
        return OmegaConf.to_container(specs, resolve=True)
    if isinstance(specs, (list, tuple)):
        return [_plain(spec) for spec in specs]
    if isinstance(specs, dict):
        return {key: _plain(value) for key, value in specs.items()}
    return specs
