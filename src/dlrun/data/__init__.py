"""Datasets: each loader turns its settings into tensors (or DataLoaders) and a record of facts.

engine/build.py calls the loader a config names by `_target_`; in-memory splits then go to the
device here.
"""

from dataclasses import dataclass
from typing import Optional, Union

import torch

from dlrun.data.batches import BatchAugment, LoaderBatches, Normalize, TensorBatches, epoch_loader
from dlrun.data.facts import Facts
from dlrun.data.training_length import batch_size_for

Batches = Union[TensorBatches, LoaderBatches]
Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Splits:
    """An in-memory dataset as loaded: CPU tensors per split, raw (uint8 images, token ids)."""

    train: Pair
    val: Pair
    test: Optional[Pair]
    facts: Facts


@dataclass
class Data:
    """What a run trains on: batches that arrive on the device, and the facts about them."""

    train: Batches
    val: Batches
    test: Optional[Batches]
    facts: Facts


@dataclass
class LoadOptions:
    task: str  # classification | reconstruction
    seed: int
    batch_size: Union[int, str]  # a number, or auto (data/training_length.py)
    eval_batch_size: Optional[int]  # None: 4 x the training batch
    device: torch.device
    channels_last: bool = False
    deterministic: bool = False
    shard: tuple[int, int] = (0, 1)  # (rank, processes): each takes its part of a training batch
    accumulate: int = 1  # micro-batches per optimizer step (trainer.accumulate_grad_batches)

    def batch_sizes(self, train_samples: int) -> tuple[int, int]:
        """(training batch, evaluation batch) for a training split of this many samples: the
        training batch is what one optimizer step takes, `accumulate` micro-batches of it."""
        train = batch_size_for(self.batch_size, train_samples)
        return train * self.accumulate, self.eval_batch_size or 4 * train


def to_device(splits: Splits, options: LoadOptions, augment: Optional[BatchAugment] = None) -> Data:
    """An in-memory dataset on the training device, batched from a seeded permutation, with its
    images augmented (training only) and normalized per batch there (uint8 images; images that
    arrive as floats, facts.mean None, are taken as they are)."""
    facts = splits.facts
    facts.task = options.task
    prepare = None
    if facts.kind == "image" and facts.mean is not None:
        if options.task == "reconstruction":
            # autoencoders reconstruct pixels in [0, 1] (their output is a sigmoid)
            facts.mean, facts.std = [0.0] * len(facts.mean), [1.0] * len(facts.std)
        prepare = Normalize(facts.mean, facts.std, options.device, options.channels_last)
    if augment is not None:
        augment.fill(facts.mean)
    generator = torch.Generator().manual_seed(options.seed)
    train_size, eval_size = options.batch_sizes(len(splits.train[1]))

    def batches(pair: Pair, size: int, train: bool = False) -> TensorBatches:
        inputs, targets = (t.to(options.device) for t in pair)
        return TensorBatches(
            inputs,
            targets,
            size,
            shuffle=train,
            generator=generator if train else None,
            prepare=prepare,
            augment=augment if train else None,
            shard=options.shard if train else (0, 1),
        )

    return Data(
        train=batches(splits.train, train_size, train=True),
        val=batches(splits.val, eval_size),
        test=batches(splits.test, eval_size) if splits.test is not None else None,
        facts=facts,
    )


@dataclass(frozen=True)
class Workers:
    """The DataLoader workers that read a dataset every epoch."""

    count: int
    prefetch: int = 2  # batches each worker prepares ahead
    # kept between epochs; never for a deterministic run, whose resume could not restore their
    # random state (see epoch_loader)
    persistent: bool = True


def read_by_workers(
    datasets: tuple,
    facts: Facts,
    options: LoadOptions,
    workers: Workers,
    prepare: Optional[Normalize] = None,
    origin=None,
    collate_fn=None,
) -> Data:
    """Map-style (train, val, test) datasets read each epoch by DataLoader workers: a seeded,
    sharded order for training; batches moved to the device and prepared there (`origin` names
    where the items come from in messages)."""
    train, val, test = datasets
    generator = torch.Generator().manual_seed(options.seed)
    train_size, eval_size = options.batch_sizes(len(train))

    def batches(dataset, size: int, shuffled: bool = False) -> LoaderBatches:
        loader = epoch_loader(
            dataset,
            size,
            workers=workers.count,
            device=options.device,
            generator=generator if shuffled else None,
            shard=options.shard,
            persistent=workers.persistent and not options.deterministic,
            prefetch=workers.prefetch,
            collate_fn=collate_fn,
        )
        return LoaderBatches(loader, options.device, prepare, origin)

    return Data(
        train=batches(train, train_size, shuffled=True),
        val=batches(val, eval_size),
        test=batches(test, eval_size) if test is not None else None,
        facts=facts,
    )
