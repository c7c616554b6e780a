"""Turning the composed config into objects: the one module that calls Hydra's instantiate and
the one that turns catalogue names into code.

Models and datasets are looked up in dlrun's own tables by name (a checkpoint's config can name
them safely); optimizers and schedulers are `_partial_` targets completed here with what only
the run knows (the parameters, the number of steps).
"""

import inspect
from collections.abc import Callable
from importlib import import_module
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dlrun.config.catalog import dataset_entry, model_entry
from dlrun.data import Data, LoadOptions, to_device
from dlrun.data.facts import Facts
from dlrun.errors import ConfigError


def build_data(dataset_cfg: DictConfig, options: LoadOptions) -> Data:
    """The dataset named by `dataset.loader`: batches on the training device and the facts."""
    loaded = _code(dataset_entry(dataset_cfg.loader).target)(dataset_cfg, options)
    return loaded if isinstance(loaded, Data) else to_device(loaded, dataset_cfg, options)


def build_model(model_cfg: DictConfig, facts: Facts, loss_name: str) -> nn.Module:
    """The model named by `model.arch`, given its settings plus the facts it asks for."""
    settings = _plain(model_cfg)
    arch = settings.pop("arch")
    factory = _code(model_entry(arch).target)
    accepted = inspect.signature(factory).parameters
    given_facts = {
        "in_shape": list(facts.input_shape),
        "num_classes": facts.num_classes,
        "vocab_size": facts.vocab_size,
    }
    settings.update({name: value for name, value in given_facts.items() if name in accepted})
    _check_arguments(factory, settings, f"model.arch={arch}")
    try:
        model = factory(**settings)
    except ValueError as error:  # the model explains why a setting cannot work with this data
        raise ConfigError(f"model.arch={arch} cannot be built for this data: {error}") from None
    if loss_name == "nll":
        model = LogSoftmaxOutput(model)  # NLLLoss expects log-probabilities
    return model


def _check_arguments(factory: Callable, arguments: dict[str, Any], what: str) -> None:
    """Refuse arguments the factory does not take, before calling it: a TypeError raised inside
    the call is then a bug of the code, and shows as one."""
    try:
        inspect.signature(factory).bind(**arguments)
    except TypeError as error:
        raise ConfigError(f"{what} does not take these settings: {error}") from None


class LogSoftmaxOutput(nn.Module):
    """Ends a classifier in log-softmax, for loss=nll."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.model(x), dim=1)


def build_loss(loss_cfg: DictConfig, task: str, num_classes: int) -> nn.Module:
    name = loss_cfg.name
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=loss_cfg.label_smoothing)
    if name == "nll":
        return nn.NLLLoss()
    loss = {"mse": nn.MSELoss, "bce_with_logits": nn.BCEWithLogitsLoss}[name]()
    # against class labels these losses compare with one-hot vectors
    return OneHotTargets(loss, num_classes) if task == "classification" else loss


class OneHotTargets(nn.Module):
    def __init__(self, loss: nn.Module, num_classes: int):
        super().__init__()
        self.loss = loss
        self.num_classes = num_classes

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        targets = nn.functional.one_hot(labels, self.num_classes).to(outputs.dtype)
        return self.loss(outputs, targets)


def build_optimizer(optimizer_cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    make = instantiate(optimizer_cfg, _convert_="all")
    try:
        return make(parameters)
    except ValueError as error:  # torch checks ranges: "Invalid learning rate: -1.0"
        raise ConfigError(f"optimizer: {error}") from None


def build_scheduler(
    scheduler_cfg: DictConfig,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    monitor_mode: str,
) -> Optional[Any]:
    """The LR scheduler, or None; the config's `interval` and `monitor` stay with the loop."""
    settings = _plain(scheduler_cfg)
    settings.pop("interval")
    settings.pop("monitor", None)
    if "_target_" not in settings:
        return None
    if settings.get("T_max", 0) is None:
        settings["T_max"] = epochs
    if "max_lr" in settings and settings["max_lr"] is None:
        settings["max_lr"] = optimizer.param_groups[0]["lr"]
    if settings["_target_"].endswith("OneCycleLR"):
        settings["total_steps"] = max(1, epochs * steps_per_epoch)
    if settings.get("mode") == "auto":
        settings["mode"] = monitor_mode
    try:
        return instantiate(settings, _convert_="all")(optimizer)
    except ValueError as error:
        raise ConfigError(f"scheduler: {error}") from None


def _code(target: str) -> Callable[..., Any]:
    """dlrun's own class or function named "module:attribute" in the catalogue."""
    module, attribute = target.split(":")
    return getattr(import_module(module), attribute)


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)
