"""What dlrun checks before the first training step, so that a run that cannot train well is
refused in one line before anything is written: the model's outputs on two validation inputs
(their shape against the task's), and a last training batch BatchNorm could not train on. The
loss is checked on the first step itself (engine/train.py): a scalar with a gradient."""

from typing import Optional

import torch
from omegaconf import DictConfig
from torch import nn

from dlrun.config.schema import Trainer
from dlrun.data.facts import Facts
from dlrun.engine.build import model_facts
from dlrun.engine.state import Parts
from dlrun.engine.train import steps_per_epoch
from dlrun.errors import ConfigError


def check_first_batch(
    parts: Parts, example: Optional[torch.Tensor], cfg: DictConfig, choices: dict, trainer: Trainer
) -> None:
    _check_outputs(parts, example, cfg, choices)
    _check_last_batch(parts, trainer)


def _check_outputs(parts: Parts, example: Optional[torch.Tensor], cfg: DictConfig, choices: dict) -> None:
    """A model whose outputs do not fit the task is refused before training, naming the shapes."""
    if example is None:
        return
    inputs = example[:2]
    parts.model.eval()
    with torch.no_grad():
        outputs = parts.model(inputs)
    classes = parts.data.facts.num_classes
    if parts.task.against_inputs:
        expected, what = list(inputs.shape), "outputs shaped like its inputs"
    else:
        expected, what = [len(inputs), classes], f"one score per class ({classes} classes)"
    shape = list(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
    if shape != expected:
        model = f"model={choices['model']}" if "model" in choices else cfg.model._target_
        raise ConfigError(
            f"{model} gives outputs {shape} for inputs {list(inputs.shape)}, but {parts.task.name} needs "
            f"{what}: {expected}; make its last layer fit ({_facts_given(cfg.model, parts.data.facts)})"
        )


def _facts_given(model_cfg: DictConfig, facts: Facts) -> str:
    """What dlrun passed the model, for a hint that names only what was really given."""
    passed = [f"{k}={v}" for k, v in model_facts(model_cfg, facts).items() if k != "class_names"]
    if passed:
        return "dlrun gave it " + ", ".join(passed)
    return (
        "dlrun gave it no sizes, as its signature names none: set them in its config, "
        "e.g. num_classes: ${facts.num_classes}"
    )


def _check_last_batch(parts: Parts, trainer: Trainer) -> None:
    """BatchNorm cannot train on a batch of one sample: a training split that ends in one is
    refused, with a batch size that does not."""
    train = parts.data.train
    samples, batch = train.num_samples, train.batch_size
    reached = steps_per_epoch(len(train), trainer.limit_train_batches) == len(train)
    if samples % batch != 1 or samples == 1 or not reached or not _has_batchnorm(parts.model):
        return
    fits = next(size for size in range(batch + 1, samples + 1) if samples % size != 1)
    raise ConfigError(
        f"the training split's last batch would hold 1 sample ({samples} samples in batches of "
        f"{batch}), and the model's BatchNorm cannot train on one: set trainer.batch_size={fits}"
    )


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
