"""Turning the composed config into objects: the one module that calls Hydra's instantiate.

Everything a run is made of is named by `_target_`, dlrun's own models, datasets, losses and
loggers exactly like a user's, and built the same way: check_targets() imports each one and checks
its settings against its signature before any data is read; the builders then call it with its
settings plus what only the run knows and its signature asks for: the data's facts for a model
(in_shape, num_classes, vocab_size, class_names), the load options for a dataset, the run folder
for a logger, the parameters for an optimizer, the number of steps for a schedule.
"""

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Optional

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dlrun import metrics
from dlrun.checkpoints.trust import targets
from dlrun.config.schema import OWN_KEYS
from dlrun.data import Data, LoadOptions, Splits, to_device
from dlrun.data.batches import BatchAugment
from dlrun.data.custom import CustomSettings, draws_at_random, from_datasets
from dlrun.data.facts import Facts
from dlrun.engine.state import Schedule
from dlrun.engine.targets import check_arguments, locate, raised, require, returned
from dlrun.errors import ConfigError, DlrunError
from dlrun.reporting.sinks import Sink, Sinks
from dlrun.reporting.terminal import Report
from dlrun.runs.folder import RunFolder

FACTS = ("in_shape", "num_classes", "vocab_size", "class_names")  # what a model's signature may ask for
CUSTOM_SETTINGS = tuple(f.name for f in fields(CustomSettings))
# dlrun's keys in a dataset's config: a dataset that does not take one leaves it to dlrun
DATASET_SETTINGS = OWN_KEYS["dataset"]
SCHEDULER_KEYS = OWN_KEYS["scheduler"]  # they never reach torch
OWN = "dlrun."  # dlrun's own code: what it raises is dlrun's to report, not the user's


# ---------------------------------------------------------------------------------------------
# before any data is read


def check_targets(cfg: DictConfig) -> str:
    """Import every `_target_` of the run and check its settings against its signature; returns
    the task the model does (a model class of the user's says so in a `task` attribute)."""
    for key, target in targets(OmegaConf.to_container(cfg, resolve=True)):
        locate(target, key)  # nested ones too: transforms inside a dataset's settings
    model = _located(cfg.model, "model")
    require(
        model,
        (nn.Module,),
        "model._target_",
        cfg.model._target_,
        "a torch.nn.Module (or a function returning one)",
    )
    check_arguments(model, _plain(cfg.model), "model", provided=FACTS)
    _check_dataset(cfg.dataset)
    if "_target_" in cfg.loss:
        loss = _located(cfg.loss, "loss")
        require(loss, (nn.Module,), "loss._target_", cfg.loss._target_, "a torch.nn.Module loss")
        inputs = _loss_inputs(loss, _plain(cfg.loss))  # a loss function's (outputs, targets)
        check_arguments(loss, _plain(cfg.loss), "loss", provided=("num_classes", *inputs))
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
    for name, node in cfg.logger.items():
        sink = _located(node, f"logger.{name}")
        require(sink, (Sink,), f"logger.{name}._target_", node._target_, "a dlrun.reporting.sinks.Sink")
        check_arguments(sink, _plain(node), f"logger.{name}", provided=("run_folder", "terminal"))
    return model_task(cfg.model)


def model_task(model_cfg: DictConfig) -> str:
    """What the model does: its schema's `task`, or its class's `task` attribute (default:
    classification)."""
    declared = getattr(OmegaConf.get_type(model_cfg), "task", None)
    task = (
        declared
        if declared is not None
        else getattr(_located(model_cfg, "model"), "task", metrics.CLASSIFICATION)
    )
    task = getattr(task, "value", task)  # a schema's Task
    if task not in metrics.TASKS:
        valid = ", ".join(metrics.TASKS)
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
    check_arguments(factory, _dataset_settings(dataset_cfg, factory), "dataset", provided=("options",))
    in_memory = dataset_cfg.get("in_memory", "auto")
    if in_memory not in (True, False, "auto"):
        raise ConfigError(f"dataset.in_memory={in_memory} is not valid; valid: auto, true, false")


def _located(node: DictConfig, key: str) -> Any:
    if "_target_" not in node:
        raise ConfigError(f"{key}._target_ is not set: name the class or function that makes it")
    return locate(node._target_, f"{key}._target_")


# ---------------------------------------------------------------------------------------------
# data, model and what trains it


def build_data(dataset_cfg: DictConfig, options: LoadOptions) -> Data:
    """The dataset: batches on the training device and the facts about them. dlrun's own loaders
    return CPU tensors (Splits) or batches (Data); a user's target returns Dataset objects: a class
    or factory giving one dataset (dlrun splits it), a dict or tuple of train / val / test, or a
    torchvision-style class taking `train` (called twice: the test split is train=False)."""
    target, key = dataset_cfg._target_, "dataset._target_"
    factory = locate(target, key)
    node = OmegaConf.create({"_target_": target, **_dataset_settings(dataset_cfg, factory)})
    given = {"options": options} if "options" in _parameters(factory) else {}
    if "train" in _parameters(factory):
        given = {"train": True}
        train, val, test = _call(node, key, **given), None, _call(node, key, train=False)
    else:
        made = _call(node, key, **given)
        if isinstance(made, Splits):
            return to_device(made, options, _augment(dataset_cfg))
        if isinstance(made, Data):
            return made
        train, val, test = _splits(made, key, target)
    for split in (train, val, test):
        if isinstance(split, torch.utils.data.IterableDataset):
            raise ConfigError(
                f"{key}={target} gave an IterableDataset: dlrun needs a map-style Dataset "
                "(__getitem__ and __len__), whose items it can split and shuffle"
            )
        if split is not None and not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise ConfigError(f"{key}={target} gave a {type(split).__name__}, not a map-style Dataset")
    settings = CustomSettings(**{k: v for k, v in _plain(dataset_cfg).items() if k in CUSTOM_SETTINGS})
    unaugmented = _for_evaluation(dataset_cfg, node, factory, train, given) if val is None else None
    data = from_datasets(train, val, test, settings, options, source=target, unaugmented=unaugmented)
    augment = _augment(dataset_cfg)
    if augment and hasattr(data.train, "augment"):  # batched crops and flips of images held in memory
        augment.fill(data.facts.mean)
        data.train.augment = augment
    return data


def _for_evaluation(
    dataset_cfg: DictConfig, node: DictConfig, factory: Callable, train: Any, given: dict[str, Any]
) -> Any:
    """The same dataset read with `eval_transform`, for the val and test splits dlrun carves from
    it; None when it reads the same each time. A dataset that draws at random on each read (a
    random transform) with no eval_transform is refused: val and test would be augmented too."""
    target = dataset_cfg._target_
    if "eval_transform" not in dataset_cfg:
        if draws_at_random(train):
            raise ConfigError(
                f"dataset._target_={target} gives a different item each time one is read (a "
                "random transform?), and dlrun carves val and test from it, so they would be "
                "augmented too: set dataset.eval_transform to what val and test read with (null: "
                "no transform), or give val and test datasets of their own"
            )
        return None
    if "transform" not in _parameters(factory) and not _takes_any_keyword(factory):
        raise ConfigError(f"dataset.eval_transform: {target} takes no `transform` to give it")
    plain = OmegaConf.merge(node, {"transform": dataset_cfg.eval_transform})
    return _splits(_call(plain, "dataset._target_", **given), "dataset._target_", target)[0]


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
    return BatchAugment.of(_plain(augment)) if augment is not None else None


def build_model(model_cfg: DictConfig, facts: Facts) -> nn.Module:
    """The model, given its settings plus the facts its signature asks for."""
    target = model_cfg._target_
    made = _call(model_cfg, "model._target_", **model_facts(model_cfg, facts))
    model = returned(made, (nn.Module,), "model._target_", target, "a torch.nn.Module")
    hidden = layers_out_of_sight(model)
    if hidden:
        where, kind = hidden[0]
        holder = "nn.ModuleDict" if kind == "dict" else "nn.ModuleList"
        raise ConfigError(
            f"model {target}: {where} is a plain {kind} of layers, which torch neither trains nor "
            f"saves (their weights would stay random, in best.pt too): hold them in {holder}"
        )
    return model


def layers_out_of_sight(model: nn.Module) -> list[tuple[str, str]]:
    """(attribute, list | tuple | dict) of each plain container among the model's attributes that
    holds layers torch does not know of: it registers only modules held directly or in
    nn.ModuleList / nn.ModuleDict (a plain list of layers registered elsewhere too is fine)."""
    registered = {id(module) for module in model.modules()}
    found = []
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if name.startswith("_") or not isinstance(value, (list, tuple, dict)):
                continue  # torch's own registries are _modules, _parameters, ...
            items = value.values() if isinstance(value, dict) else value
            if any(isinstance(item, nn.Module) and id(item) not in registered for item in items):
                found.append((f"{prefix}.{name}" if prefix else name, type(value).__name__))
    return found


def model_facts(model_cfg: DictConfig, facts: Facts) -> dict[str, Any]:
    """The facts dlrun passes a model: those its signature names and its config does not set. A
    factory taking `**kwargs` (timm.create_model, torchvision's resnet18) is given num_classes
    when it classifies, the one name such factories share; others it reads as `${facts.NAME}`."""
    offered = {
        "in_shape": list(facts.input_shape),
        "num_classes": facts.num_classes,
        "vocab_size": facts.vocab_size,
        "class_names": list(facts.class_names),
    }
    factory = locate(model_cfg._target_, "model._target_")
    named = _parameters(factory)
    if _takes_any_keyword(factory) and facts.task == metrics.CLASSIFICATION:
        named.add("num_classes")
    return {k: v for k, v in offered.items() if k in named and k not in model_cfg}


def build_loss(loss_cfg: DictConfig, facts: Facts) -> nn.Module:
    """A loss module (a class, or a factory returning one), or a loss function taking
    (outputs, targets), its other settings bound (`_partial_: true` or not)."""
    factory = locate(loss_cfg._target_, "loss._target_")
    given = {"num_classes": facts.num_classes} if "num_classes" in _parameters(factory) else {}
    if _loss_inputs(factory, _plain(loss_cfg)):
        return instantiate(loss_cfg, _partial_=True, _convert_="all", **given)
    return _call(loss_cfg, "loss._target_", **given)


def _loss_inputs(factory: Callable, settings: dict[str, Any]) -> tuple[str, ...]:
    """The names of a loss function's outputs and targets: its first two required arguments that
    the settings leave open; () for a class, or a factory that makes the loss."""
    if isinstance(factory, type):
        return ()
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return ()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    open_ = [
        p.name
        for p in parameters
        if p.kind in positional and p.default is inspect.Parameter.empty and p.name not in settings
    ]
    return tuple(open_[:2]) if len(open_) >= 2 else ()


def build_optimizer(optimizer_cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    make = instantiate(optimizer_cfg, _partial_=True, _convert_="all")  # `_partial_: true` or not
    try:
        made = make(parameters)
    except ValueError as error:  # torch checks ranges: "Invalid learning rate: -1.0"
        raise ConfigError(f"optimizer: {error}") from None
    what = "a torch.optim.Optimizer"
    return returned(made, (torch.optim.Optimizer,), "optimizer._target_", optimizer_cfg._target_, what)


def build_schedule(
    scheduler_cfg: DictConfig,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    monitor: str,
) -> Schedule:
    """The LR scheduler and when it steps; the config's `interval` and `monitor` stay with the loop.
    `monitor`: the run's monitored metric, which a plateau scheduler steps on unless told another."""
    settings = {k: v for k, v in _plain(scheduler_cfg).items() if k not in SCHEDULER_KEYS}
    per_step = scheduler_cfg.get("interval", "epoch") == "step"
    warmup = _warmup_steps(scheduler_cfg, steps_per_epoch)
    start = scheduler_cfg.get("warmup_start_factor", 0.1)
    if "_target_" not in settings:
        return Schedule(None, per_step, warmup_steps=warmup, warmup_start=start)
    watched = scheduler_cfg.get("monitor")
    metric = None if watched is None else monitor if watched == "auto" else watched
    if settings.get("T_max", 0) is None:  # the run after the warm-up, in the steps it counts
        total = epochs * steps_per_epoch - warmup
        settings["T_max"] = max(1, total if per_step else total // steps_per_epoch)
    if "max_lr" in settings and settings["max_lr"] is None:
        settings["max_lr"] = optimizer.param_groups[0]["lr"]
    if settings["_target_"].endswith("OneCycleLR"):
        settings["total_steps"] = max(1, epochs * steps_per_epoch - warmup)
    if settings.get("mode") == "auto":
        settings["mode"] = metrics.better_of(metric)
    try:
        scheduler = instantiate(settings, _partial_=True, _convert_="all")(optimizer)
    except ValueError as error:
        raise ConfigError(f"scheduler: {error}") from None
    return Schedule(scheduler, per_step, metric, warmup_steps=warmup, warmup_start=start)


def _warmup_steps(scheduler_cfg: DictConfig, steps_per_epoch: int) -> int:
    steps, epochs = scheduler_cfg.get("warmup_steps", 0), scheduler_cfg.get("warmup_epochs", 0)
    if steps and epochs:
        raise ConfigError(
            f"scheduler.warmup_steps={steps} and scheduler.warmup_epochs={epochs}: give one of them"
        )
    return steps or epochs * steps_per_epoch


def build_metrics(
    metric_entries: Any, task: str, classes: int
) -> tuple[dict[str, metrics.Metric], tuple, tuple]:
    """(the run's table, what a validation measures besides the loss, what training measures):
    the task's metrics, then those of `metrics=[...]`, the user's functions among them; with none
    chosen, top-5 accuracy joins accuracy from 10 classes on."""
    extra = []
    chosen = OmegaConf.to_container(metric_entries, resolve=True) if metric_entries is not None else []
    if not chosen and task == metrics.CLASSIFICATION and classes >= metrics.TOP5_FROM:
        chosen = ["top5"]
    for spec in metrics.user_metric_specs(chosen):
        function = locate(spec.target, f"metrics.{spec.name}._target_") if spec.target else None
        extra.append(metrics.from_spec(spec, function))
    declared = metrics.TASKS[task]
    measured = [metrics.BUILT_IN[name] for name in declared.measures]
    measured += [metric for metric in extra if metric.name not in declared.measures]
    table = {**metrics.BUILT_IN, **{metric.name: metric for metric in measured}}
    trained = tuple(metrics.BUILT_IN[name] for name in declared.while_training)
    return table, tuple(measured), trained


def build_sinks(logger_cfg: DictConfig, folder: RunFolder, terminal: Report) -> Sinks:
    """Every logger of `logger=...`, given the run folder and the terminal if it asks for them."""
    sinks = Sinks()
    for name, node in logger_cfg.items():
        key = f"logger.{name}._target_"
        accepted = _parameters(locate(node._target_, key))
        given = {"run_folder": folder, "terminal": terminal}
        sinks.append(_call(node, key, **{k: v for k, v in given.items() if k in accepted}))
    return sinks


# ---------------------------------------------------------------------------------------------
# calling what a config names


def _call(node: DictConfig, key: str, **given: Any) -> Any:
    """Call the node's `_target_` with its settings (nested targets first) and `given`. What the
    user's code raises is reported with the user's traceback; dlrun's own errors pass as they are."""
    target = node._target_
    try:
        factory = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, DlrunError):
            raise cause from None
        raise raised(cause, key, target) from None
    try:
        return factory(**given)
    except DlrunError:
        raise
    except ValueError as error:
        if not target.startswith(OWN):
            raise raised(error, key, target) from None
        # dlrun's own classes explain why a setting cannot work with this data
        raise ConfigError(
            f"{key.rsplit('.', 1)[0]}: {target.rsplit('.', 1)[-1]} cannot be built for this data: {error}"
        ) from None
    except Exception as error:
        if target.startswith(OWN):
            raise
        raise raised(error, key, target) from None


def _takes_any_keyword(factory: Callable) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _parameters(factory: Callable) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _dataset_settings(dataset_cfg: DictConfig, factory: Callable) -> dict[str, Any]:
    """A dataset's own settings: its config without dlrun's keys (DATASET_SETTINGS), but for those
    its signature names (dlrun's own loaders take val_fraction, num_workers, ...)."""
    accepted = _parameters(factory)
    return {
        k: v
        for k, v in _plain(dataset_cfg).items()
        if k != "_target_" and (k not in DATASET_SETTINGS or k in accepted)
    }


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)
