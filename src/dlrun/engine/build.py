"""Turning the composed config into objects: the one module that calls Hydra's instantiate.

Two kinds of names reach it. dlrun's own models and datasets are catalogue names (`model.arch`,
`dataset.loader`) looked up in config/catalog.py, so a checkpoint's config can name them safely.
Everything else is a `_target_`: the user's model, dataset, loss and transforms, torch's
optimizers and schedulers. check_targets() imports each one and checks it against its signature
before any data is read; the builders then call them with the facts their signatures ask for
(in_shape, num_classes, vocab_size, class_names), and complete the `_partial_` optimizers and
schedulers with what only the run knows (the parameters, the number of steps).
"""

import inspect
from collections.abc import Callable
from dataclasses import fields
from importlib import import_module
from typing import Any, Optional

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from dlrun.config.catalog import TASK_METRIC, dataset_entry, model_entry
from dlrun.config.trust import targets
from dlrun.data import Data, LoadOptions, to_device
from dlrun.data.batches import BatchAugment
from dlrun.data.custom import CustomSettings, from_datasets
from dlrun.data.facts import Facts
from dlrun.engine.targets import check_arguments, locate, raised, require, returned
from dlrun.errors import ConfigError

FACTS = ("in_shape", "num_classes", "vocab_size", "class_names")  # what a model's signature may ask for
CUSTOM_SETTINGS = tuple(f.name for f in fields(CustomSettings))
DATASET_SETTINGS = (*CUSTOM_SETTINGS, "augment")  # dlrun's keys in a user dataset's config
SCHEDULER_KEYS = ("interval", "monitor")  # dlrun's own: they never reach torch


# ---------------------------------------------------------------------------------------------
# before any data is read


def check_targets(cfg: DictConfig) -> str:
    """Import every `_target_` of the run and check its settings against its signature; returns
    the task the model does (a model class of the user's says so in a `task` attribute)."""
    for key, target in targets(OmegaConf.to_container(cfg, resolve=True)):
        locate(target, key)  # nested ones too: transforms inside a dataset's settings
    if "_target_" in cfg.model:
        factory = _located(cfg.model, "model")
        what = "a torch.nn.Module (or a function returning one)"
        require(factory, (nn.Module,), "model._target_", cfg.model._target_, what)
        check_arguments(factory, _plain(cfg.model), "model", provided=FACTS)
    if "_target_" in cfg.dataset:
        _check_dataset(cfg.dataset)
    if "_target_" in cfg.loss:
        loss = _located(cfg.loss, "loss")
        require(loss, (nn.Module,), "loss._target_", cfg.loss._target_, "a torch.nn.Module loss")
        check_arguments(loss, _plain(cfg.loss), "loss", provided=("num_classes",))
    if "_target_" not in cfg.optimizer:
        raise ConfigError("optimizer._target_ is not set: name an optimizer class, e.g. torch.optim.SGD")
    optimizer = _located(cfg.optimizer, "optimizer")
    what = "a torch.optim optimizer"
    require(optimizer, (torch.optim.Optimizer,), "optimizer._target_", cfg.optimizer._target_, what)
    check_arguments(optimizer, _plain(cfg.optimizer), "optimizer", provided=("params",))
    if "_target_" in cfg.scheduler:
        scheduler = _located(cfg.scheduler, "scheduler")
        kinds = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        what = "a torch.optim.lr_scheduler class"
        require(scheduler, kinds, "scheduler._target_", cfg.scheduler._target_, what)
        settings = {k: v for k, v in _plain(cfg.scheduler).items() if k not in SCHEDULER_KEYS}
        check_arguments(scheduler, settings, "scheduler", provided=("optimizer", "total_steps"))
    return model_task(cfg.model)


def model_task(model_cfg: DictConfig) -> str:
    if "_target_" not in model_cfg:
        return model_entry(model_cfg.arch).task
    task = getattr(_located(model_cfg, "model"), "task", "classification")
    if task not in TASK_METRIC:
        valid = ", ".join(TASK_METRIC)
        raise ConfigError(f"{model_cfg._target_}.task={task!r} is not a task dlrun knows; valid: {valid}")
    return task


def _check_dataset(dataset_cfg: DictConfig) -> None:
    factory = _located(dataset_cfg, "dataset")
    target = dataset_cfg._target_
    if isinstance(factory, type) and issubclass(factory, torch.utils.data.IterableDataset):
        raise ConfigError(
            f"dataset._target_={target} is an IterableDataset: dlrun needs a map-style Dataset "
            "(__getitem__ and __len__), whose items it can split and shuffle"
        )
    if isinstance(factory, type) and not (hasattr(factory, "__getitem__") and hasattr(factory, "__len__")):
        raise ConfigError(
            f"dataset._target_={target} is not a map-style Dataset (no __getitem__ and __len__)"
        )
    check_arguments(factory, _target_settings(dataset_cfg), "dataset")
    in_memory = dataset_cfg.get("in_memory", "auto")
    if in_memory not in (True, False, "auto"):
        raise ConfigError(f"dataset.in_memory={in_memory} is not valid; valid: auto, true, false")


def _located(node: DictConfig, group: str) -> Any:
    return locate(node._target_, f"{group}._target_")


# ---------------------------------------------------------------------------------------------
# data and model


def build_data(dataset_cfg: DictConfig, options: LoadOptions) -> Data:
    """The dataset: batches on the training device and the facts about them."""
    if "_target_" in dataset_cfg:
        return _custom_data(dataset_cfg, options)
    loaded = _code(dataset_entry(dataset_cfg.loader).target)(dataset_cfg, options)
    if isinstance(loaded, Data):
        return loaded
    return to_device(loaded, options, _augment(dataset_cfg))


def _custom_data(dataset_cfg: DictConfig, options: LoadOptions) -> Data:
    """The user's Dataset(s): a class or factory giving one dataset (dlrun splits it), a dict or
    tuple of train / val / test, or a torchvision-style class taking `train` (called twice: the
    test split is train=False)."""
    target, key = dataset_cfg._target_, "dataset._target_"
    settings = CustomSettings(**{k: v for k, v in _plain(dataset_cfg).items() if k in CUSTOM_SETTINGS})
    node = OmegaConf.create(_target_settings(dataset_cfg))
    if "train" in _parameters(locate(target, key)):
        train, val, test = _call(node, key, train=True), None, _call(node, key, train=False)
    else:
        train, val, test = _splits(_call(node, key), key, target)
    for split in (train, val, test):
        if split is not None and not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise ConfigError(f"{key}={target} gave a {type(split).__name__}, not a map-style Dataset")
    data = from_datasets(train, val, test, settings, options, source=target)
    augment = _augment(dataset_cfg)
    if augment and hasattr(data.train, "augment"):  # batched crops and flips of images held in memory
        data.train.augment = augment
    return data


def _splits(made: Any, key: str, target: str) -> tuple:
    if isinstance(made, dict):
        unknown = sorted(set(made) - {"train", "val", "test"})
        if "train" not in made or unknown:
            keys = sorted(made)
            raise ConfigError(f"{key}={target} returned a dict with keys {keys}: give train (and val, test)")
        return made["train"], made.get("val"), made.get("test")
    if isinstance(made, (tuple, list)):
        if not 1 <= len(made) <= 3:
            count = len(made)
            raise ConfigError(
                f"{key}={target} returned {count} splits: give (train, val) or (train, val, test)"
            )
        return (*made, None, None)[:3]
    return made, None, None


def _augment(dataset_cfg: DictConfig) -> Optional[BatchAugment]:
    augment = dataset_cfg.get("augment")
    return BatchAugment(**augment) if augment is not None else None


def build_model(model_cfg: DictConfig, facts: Facts, loss_name: Optional[str]) -> nn.Module:
    """The model, given its settings plus the facts its signature asks for."""
    given = {
        "in_shape": list(facts.input_shape),
        "num_classes": facts.num_classes,
        "vocab_size": facts.vocab_size,
        "class_names": list(facts.class_names),
    }
    if "_target_" in model_cfg:
        target = model_cfg._target_
        accepted = _parameters(locate(target, "model._target_"))
        made = _call(model_cfg, "model._target_", **{k: v for k, v in given.items() if k in accepted})
        model = returned(made, (nn.Module,), "model._target_", target, "a torch.nn.Module")
    else:
        model = _catalogue_model(model_cfg, given)
    if loss_name == "nll":
        model = LogSoftmaxOutput(model)  # NLLLoss expects log-probabilities
    return model


def _catalogue_model(model_cfg: DictConfig, given: dict[str, Any]) -> nn.Module:
    settings = _plain(model_cfg)
    arch = settings.pop("arch")
    factory = _code(model_entry(arch).target)
    accepted = inspect.signature(factory).parameters
    settings.update({name: value for name, value in given.items() if name in accepted})
    check_arguments(factory, settings, "model", provided=FACTS)
    try:
        return factory(**settings)
    except ValueError as error:  # the model explains why a setting cannot work with this data
        raise ConfigError(f"model.arch={arch} cannot be built for this data: {error}") from None


class LogSoftmaxOutput(nn.Module):
    """Ends a classifier in log-softmax, for loss=nll."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.model(x), dim=1)


def build_loss(loss_cfg: DictConfig, task: str, num_classes: int) -> nn.Module:
    if "_target_" in loss_cfg:
        accepted = _parameters(locate(loss_cfg._target_, "loss._target_"))
        given = {"num_classes": num_classes} if "num_classes" in accepted else {}
        return _call(loss_cfg, "loss._target_", **given)
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
    settings = {k: v for k, v in _plain(scheduler_cfg).items() if k not in SCHEDULER_KEYS}
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


def _call(node: DictConfig, key: str, **given: Any) -> Any:
    """Call the node's `_target_` with its settings (nested targets first) and `given`; what the
    user's code raises is reported with the user's traceback."""
    try:
        return instantiate(node, **given, _convert_="all")
    except InstantiationException as error:
        raise raised(error.__cause__ or error, key, node._target_) from None


def _parameters(factory: Callable) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _target_settings(dataset_cfg: DictConfig) -> dict[str, Any]:
    """A user dataset's own settings: its config without dlrun's keys (DATASET_SETTINGS)."""
    return {k: v for k, v in _plain(dataset_cfg).items() if k not in DATASET_SETTINGS}


def _code(target: str) -> Callable[..., Any]:
    """dlrun's own class or function named "module:attribute" in the catalogue."""
    module, attribute = target.split(":")
    return getattr(import_module(module), attribute)


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)
