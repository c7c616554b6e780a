"""How long a run trains when `trainer.epochs` and `trainer.batch_size` are left at `auto`.

Ten epochs of batches of 64 train data of MNIST's size, but give a 150-row table twenty
optimizer steps: no training at all (a linear model on the wine table stayed at 39 %). So `auto`
scales the run to the data: an epoch of at least MIN_STEPS_PER_EPOCH batches, and at least
MIN_STEPS optimizer steps in all, which is what the table tutorials train for. Data of 20,000
training samples or more gets exactly 10 epochs of 64, as before.
"""

import math

from dlrun.config.schema import AUTO

BATCH_SIZE = 64
MIN_BATCH_SIZE = 8  # BatchNorm cannot train on a batch of one
EPOCHS = 10
MIN_STEPS_PER_EPOCH = 32
MIN_STEPS = 2000
MAX_AUTO_EPOCHS = 200  # a handful of samples would otherwise ask for thousands of epochs


def batch_size_for(setting, train_samples: int) -> int:
    """The training batch: `setting` itself, or for `auto` 64, smaller for a small training split."""
    if setting != AUTO:
        return setting
    return max(MIN_BATCH_SIZE, min(BATCH_SIZE, math.ceil(train_samples / MIN_STEPS_PER_EPOCH)))


def epochs_for(setting, steps_per_epoch: int) -> int:
    """The number of epochs: `setting` itself, or for `auto` 10, more when epochs are short."""
    if setting != AUTO:
        return setting
    return max(EPOCHS, min(MAX_AUTO_EPOCHS, math.ceil(MIN_STEPS / max(1, steps_per_epoch))))
