"""Batches that arrive on the training device, ready for the model.

In-memory datasets are held as one tensor per split on the device and batched by slicing a
permutation, with augmentation and normalization done on whole batches there (no per-sample
Python, no worker processes). ImageFolder decodes files in DataLoader workers and its uint8
batches are normalized on the device in the same way.

Every shuffled epoch draws all of its randomness (order and augmentation) from one generator
when it starts, so the generator's state at the start of an epoch plus the number of batches
already done is enough to replay an epoch exactly after a crash.
"""

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dlrun.errors import DataError
from dlrun.machine import usable_cpus

log = logging.getLogger("dlrun")

Batch = tuple[Tensor, Tensor]


class Normalize:
    """uint8 images -> float, scaled to [0, 1], minus mean, over std: two in-place ops per batch."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device, channels_last=False):
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-mean_t / std_t).to(device)
        self.channels_last = channels_last

    def __call__(self, images: Tensor) -> Tensor:
        # in place on the fresh float copy: half the time of a broadcasting addcmul on a CPU
        out = images.float().mul_(self.scale).add_(self.shift)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


class BatchAugment:
    """Training images held in memory, augmented: a random crop with zero padding and a
    horizontal flip for a whole uint8 batch at once (drawn with the epoch's order), then, per
    image, an automatic policy (TrivialAugmentWide, RandAugment, AutoAugment) and random erasing
    (filled with the mean pixel: zero once normalized, as torchvision's reference erases). The
    per-image transforms are torchvision.transforms.v2's, run on the CPU (about 0.1 ms an image)
    and drawn from torch's generator, whose state checkpoints keep: a resumed run redraws the
    same."""

    SETTINGS = ("crop_padding", "hflip", "auto", "random_erasing")

    def __init__(self, crop_padding: int = 0, hflip: bool = False, auto=None, random_erasing: float = 0.0):
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.auto, self.random_erasing = auto, random_erasing
        self.per_image: Optional[Callable[[Tensor], Tensor]] = None
        self.fill(None)

    @classmethod
    def of(cls, settings: dict) -> Optional["BatchAugment"]:
        """From dataset.augment (whose mixing settings are the training step's: data/mixing.py)."""
        made = cls(**{key: value for key, value in settings.items() if key in cls.SETTINGS})
        return made if made else None

    def fill(self, mean: Optional[list[float]]) -> None:
        """Erase with this mean pixel (per channel, in [0, 1]); None: black."""
        from torchvision.transforms import v2  # a second to import: only where images are augmented

        transforms = []
        if self.auto is not None:
            transforms.append(_policy(self.auto))
        if self.random_erasing:
            value = [round(255 * m) for m in mean] if mean is not None else 0
            transforms.append(v2.RandomErasing(p=self.random_erasing, value=value))
        self.per_image = v2.Compose(transforms) if transforms else None

    def __bool__(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.per_image is not None

    def draw(self, count: int, generator: torch.Generator) -> dict[str, Tensor]:
        """The random crops and flips for one epoch of `count` samples (drawn on the CPU:
        reproducible on any device)."""
        pad = self.crop_padding
        params = {}
        if pad:
            params["offsets"] = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)
        if self.hflip:
            params["flip"] = torch.rand(count, generator=generator) < 0.5
        return params

    def __call__(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        if "offsets" in params:
            images = _random_crop(images, params["offsets"], self.crop_padding)
        if "flip" in params:
            images = torch.where(params["flip"].view(-1, 1, 1, 1), images.flip(3), images)
        if self.per_image is not None:
            images = torch.stack([self.per_image(image) for image in images.cpu()]).to(images.device)
        return images


def _policy(name: str):
    from torchvision.transforms import v2

    policies = {
        "trivialaugment": v2.TrivialAugmentWide,
        "randaugment": v2.RandAugment,
        "autoaugment": v2.AutoAugment,
    }
    return policies[name]()


def _random_crop(images: Tensor, offsets: Tensor, pad: int) -> Tensor:
    batch, channels, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(height, device=images.device) + offsets[:, :1]  # [B, H]
    cols = torch.arange(width, device=images.device) + offsets[:, 1:]  # [B, W]
    rows = rows.view(batch, 1, height, 1).expand(batch, channels, height, width + 2 * pad)
    cols = cols.view(batch, 1, 1, width).expand(batch, channels, height, width)
    return padded.gather(2, rows).gather(3, cols)


class TensorBatches:
    """A split held as whole tensors on the device, batched by slicing a seeded permutation."""

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        prepare: Optional[Callable[[Tensor], Tensor]] = None,
        augment: Optional[BatchAugment] = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if shuffle and generator is None:
            raise ValueError("a shuffled split needs a generator")
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size  # the global batch: with shards, each process gets a part
        self.shuffle = shuffle
        self.generator = generator
        self.prepare = prepare
        self.augment = augment if augment else None
        self.rank, self.world_size = shard

    @property
    def num_samples(self) -> int:
        return len(self.inputs)

    @property
    def source(self) -> str:
        return f"held on {self.inputs.device.type}"

    def starved(self, epoch_seconds: float, epoch: int) -> str:
        return ""  # slicing a tensor on the device never keeps a step waiting

    def __len__(self) -> int:
        return batch_count(self.num_samples, self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, skip: int = 0) -> Iterator[Batch]:
        """One epoch of batches, leaving out the first `skip` (already trained before a crash)."""
        device = self.inputs.device
        order, params = None, {}
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self.generator).to(device)
            if self.augment:
                params = self.augment.draw(self.num_samples, self.generator)
                params = {key: value.to(device) for key, value in params.items()}
        inputs, targets, size, prepare = self.inputs, self.targets, self.batch_size, self.prepare
        for index in range(skip, len(self)):
            rows = slice(index * size, (index + 1) * size)
            if order is None:
                x, y = inputs[rows], targets[rows]  # views: no copy
            else:
                picked = self._mine(order[rows])
                x, y = inputs.index_select(0, picked), targets.index_select(0, picked)
            if self.augment is not None and self.shuffle:
                x = self.augment(x, {key: self._mine(value[rows]) for key, value in params.items()})
            if prepare is not None:
                x = prepare(x)
            yield x, y

    def _mine(self, rows: Tensor) -> Tensor:
        return part_of(rows, self.rank, self.world_size)


def part_of(rows: Tensor, rank: int, world_size: int) -> Tensor:
    """This process's part of a global batch (all of it when there is one process)."""
    return rows if world_size == 1 else rows.tensor_split(world_size)[rank]


def batch_count(samples: int, batch_size: int, world_size: int = 1) -> int:
    count = -(-samples // batch_size)
    # a last batch smaller than the number of processes would leave one of them without data
    if world_size > 1 and 0 < samples % batch_size < world_size:
        count -= 1
    return count


class EpochBatchSampler(torch.utils.data.Sampler):
    """Index batches for a DataLoader: a seeded permutation (or the file order) cut into global
    batches, each split between the processes of a distributed run."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.size, self.batch_size, self.generator = size, batch_size, generator
        self.rank, self.world_size = shard

    def __len__(self) -> int:
        return batch_count(self.size, self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = (
            torch.randperm(self.size, generator=self.generator)
            if self.generator is not None
            else torch.arange(self.size)
        )
        for index in range(len(self)):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield part_of(rows, self.rank, self.world_size).tolist()


def epoch_loader(
    dataset,
    batch_size: int,
    *,
    workers: int,
    device: torch.device,
    generator: Optional[torch.Generator] = None,
    shard: tuple[int, int] = (0, 1),
    persistent: bool = True,
    prefetch: int = 2,
    collate_fn=None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over file-per-sample (or any map-style) data: a shuffled, sharded order when a
    generator is given (training), the dataset's order otherwise."""
    # one generator draws the worker seeds and the order: its state replays an epoch exactly
    sampler = EpochBatchSampler(len(dataset), batch_size, generator, shard if generator else (0, 1))
    _note_more_workers_than_cores(workers)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # persistent workers keep their random state between epochs, which a resumed run
        # cannot restore: deterministic runs start fresh workers every epoch instead
        persistent_workers=workers > 0 and persistent,
        prefetch_factor=prefetch if workers > 0 else None,
        collate_fn=collate_fn,
    )


# torch says this in six lines each time a loader starts its workers (three times an epoch);
# dlrun says it once, in dlrun.log (below)
warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
_noted: set[int] = set()


def _note_more_workers_than_cores(workers: int) -> None:
    cores = usable_cpus()
    if workers > cores and workers not in _noted:
        _noted.add(workers)
        log.warning(
            "%d data-loading workers share the %d CPU core(s) this process may use: they take turns "
            "(dataset.num_workers=%d would use no more)",
            workers,
            cores,
            cores,
        )


STARVED_EPOCH_SECONDS = 1.0  # shorter epochs are mostly start-up: their waits say little


class LoaderBatches:
    """Batches from a DataLoader (files decoded in workers), moved to the device and prepared."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device, prepare=None, origin=None):
        self.loader = loader
        self.device = device
        self.prepare = prepare
        self.origin = origin  # where the items come from (a folder, a dataset class), for messages
        self.generator = loader.generator
        self.waited = 0.0  # seconds the loop waited for a batch this epoch, start-up left out
        self.starved_said = False
        # pinned host memory lets the copy to the GPU overlap with compute
        self.non_blocking = device.type == "cuda" and loader.pin_memory

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    @property
    def batch_size(self) -> int:
        """The global batch, as TensorBatches has it."""
        return self.loader.batch_sampler.batch_size

    @property
    def source(self) -> str:
        return f"read by {self.loader.num_workers} DataLoader worker(s)"

    def starved(self, epoch_seconds: float, epoch: int) -> str:
        """Once per run, where the loop spent most of an epoch of at least a second waiting for
        batches: what reads them is slower than the model, and what to set; "" otherwise."""
        waited, self.waited = self.waited, 0.0
        if self.starved_said or epoch_seconds < STARVED_EPOCH_SECONDS or waited < epoch_seconds / 2:
            return ""
        self.starved_said = True
        workers = self.loader.num_workers
        more = f"raise dataset.num_workers (now {workers}" if workers else "set dataset.num_workers=2 (now 0"
        return (
            f"epoch {epoch}: training waited for batches {waited:.1f} s of {epoch_seconds:.1f} s "
            f"({waited / epoch_seconds:.0%}): reading {self.origin or 'the data'} is slower than the model "
            f"trains; {more}, {usable_cpus()} CPU(s) here), or make its loading faster"
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, skip: int = 0) -> Iterator[Batch]:
        # skipped batches are still decoded: the sampler and worker seeds must advance as before
        for x, y in islice(self._checked(), skip, None):
            x = x.to(self.device, non_blocking=self.non_blocking)
            y = y.to(self.device, non_blocking=self.non_blocking)
            yield (self.prepare(x) if self.prepare is not None else x), y

    def _checked(self) -> Iterator[Batch]:
        iterator, started = iter(self.loader), False
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as error:
                if "stack expects each tensor to be equal size" in str(error):
                    raise DataError(
                        f"images in {self.origin} differ in size after the transforms; add a "
                        "Resize/CenterCrop (or RandomResizedCrop) to dataset.train_transforms "
                        "and val_transforms"
                    ) from None
                raise
            except (ConnectionError, EOFError):
                raise  # a worker died mid-message: the run says so, not "cannot decode"
            except OSError as error:  # PIL: a truncated or unreadable image file
                raise DataError(
                    f"cannot decode an image in {self.origin}: {str(error).splitlines()[0]}"
                ) from None
            if started:  # the first batch also waits for the workers to start
                self.waited += time.perf_counter() - asked
            started = True
            yield batch
