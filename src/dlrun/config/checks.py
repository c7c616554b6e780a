"""Config checks that need no torch: a bad combination fails in a second, with the fix."""

import dataclasses
import math
import re

from omegaconf import DictConfig, OmegaConf

from dlrun.config.catalog import check_loss, check_pairing, task_of, val_metrics
from dlrun.config.training_length import AUTO, AUTO_SETTINGS
from dlrun.errors import ConfigError, unknown_name

PRECISIONS = ("32", "bf16", "16")
PROGRESS = ("auto", "bar", "lines", "off")
CONFIG_VIEWS = ("auto", "full", "overrides", "off")
INTERVALS = ("epoch", "step")
NONFINITE = ("stop", "skip")
BAD_IMAGES = ("error", "skip")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

# the values each setting may take, in interval notation; a key the chosen option lacks is skipped
LIMITS = {
    "seed": "[0, inf)",
    "trainer.epochs": "[1, inf)",
    "trainer.batch_size": "[1, inf)",
    "trainer.eval_batch_size": "[1, inf)",
    "trainer.num_threads": "[0, inf)",
    "trainer.log_every_n_steps": "[1, inf)",
    "trainer.limit_train_batches": "[1, inf)",
    "trainer.limit_val_batches": "[1, inf)",
    "trainer.checkpoint_every_n_steps": "[1, inf)",
    "trainer.grad_clip": "(0, inf)",
    "trainer.early_stopping.patience": "[1, inf)",
    "trainer.early_stopping.min_delta": "[0, inf)",
    "dataset.val_fraction": "[0, 1)",
    "dataset.test_fraction": "[0, 1)",
    "dataset.num_workers": "[0, inf)",
    "dataset.prefetch_factor": "[1, inf)",
    "dataset.augment.crop_padding": "[0, inf)",
    "model.dropout": "[0, 1)",
    "model.hidden_size": "[1, inf)",
    "model.num_layers": "[1, inf)",
    "model.kernel_size": "[1, inf)",
    "model.padding": "[0, inf)",
    "model.embedding_dim": "[0, inf)",
    "loss.label_smoothing": "[0, 1)",
    "optimizer.lr": "(0, inf)",
    "optimizer.momentum": "[0, 1)",
    "optimizer.weight_decay": "[0, inf)",
    "optimizer.eps": "(0, inf)",
    "optimizer.alpha": "[0, 1)",
    "scheduler.gamma": "(0, inf)",
    "scheduler.step_size": "[1, inf)",
    "scheduler.T_max": "[1, inf)",
    "scheduler.factor": "(0, 1)",
    "scheduler.patience": "[0, inf)",
    "scheduler.max_lr": "(0, inf)",
    "scheduler.pct_start": "(0, 1)",
}
# list settings whose every element must lie within the bounds
ELEMENT_LIMITS = {
    "model.hidden_sizes": "[1, inf)",
    "model.channels": "[1, inf)",
    "optimizer.betas": "[0, 1)",
    "scheduler.milestones": "[1, inf)",
}


def check_config(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Everything that can be checked before torch is imported. A model or dataset of the user's
    (`_target_`) is checked once it is imported (engine/build.check_targets), before data is read."""
    model_option = choices.get("model", cfg.model.get("arch", "?"))
    if "arch" in cfg.model and "loader" in cfg.dataset:
        dataset_option = choices.get("dataset", cfg.dataset.loader)
        check_pairing(cfg.model.arch, cfg.dataset.loader, model_option, dataset_option)
    check_known_keys(cfg)
    check_limits(cfg)
    trainer = cfg.trainer
    _one_of("trainer.precision", str(trainer.precision), PRECISIONS)
    _one_of("trainer.on_nonfinite", trainer.on_nonfinite, NONFINITE)
    _one_of("logger.progress", cfg.logger.progress, PROGRESS)
    _one_of("logger.config", cfg.logger.config, CONFIG_VIEWS)
    _one_of("scheduler.interval", cfg.scheduler.get("interval", "epoch"), INTERVALS)
    if "bad_images" in cfg.dataset:
        _one_of("dataset.bad_images", cfg.dataset.bad_images, BAD_IMAGES)
    if len(cfg.dataset.get("delimiter", ",")) != 1:
        raise ConfigError(
            f"dataset.delimiter={cfg.dataset.delimiter!r} must be one character, e.g. ';' or '\\t' (tab)"
        )
    if not DEVICE.fullmatch(trainer.device):
        raise ConfigError(
            f"trainer.device={trainer.device} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
        )
    fractions = cfg.dataset.get("val_fraction", 0) + cfg.dataset.get("test_fraction", 0)
    if fractions >= 1:
        raise ConfigError(
            f"dataset.val_fraction + dataset.test_fraction = {fractions:g} leaves no training "
            "data; keep the sum below 1 (e.g. 0.1 and 0.1)"
        )
    for key in ("trainer.early_stopping.mode", "scheduler.mode"):
        mode = OmegaConf.select(cfg, key, default=None)
        if mode is not None:
            _one_of(key, mode, ("auto", "min", "max"))
    if "arch" in cfg.model:
        check_task_settings(cfg, task_of(cfg.model.arch), model_option)


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Every key is a setting its schema knows: Hydra's `+key=value` adds keys past the schema,
    and a misspelt one would otherwise be accepted and ignored. (A node without a schema, such
    as your own model's, takes any key.)"""
    schema = OmegaConf.get_type(node)
    known = {field.name for field in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        full = f"{path}{key}"
        if known is not None and key not in known:
            scope = f"in {path.rstrip('.')}" if path else "at the top level"
            choices = sorted(name for name in known if not name.startswith("_"))
            raise ConfigError(
                unknown_name(full, f"no setting {key!r} {scope}", str(key), choices, "settings")
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{full}.")


def check_task_settings(cfg: DictConfig, task: str, model_option: str) -> None:
    """The settings that depend on what the model does: the loss, and the metrics monitored."""
    check_loss(cfg.loss.get("name"), task, model_option)
    metrics = val_metrics(task)
    for key, value in (
        ("trainer.monitor", cfg.trainer.monitor),
        ("trainer.early_stopping.monitor", cfg.trainer.early_stopping.monitor),
        ("scheduler.monitor", cfg.scheduler.get("monitor", "auto")),
    ):
        if value != "auto" and value not in metrics:
            raise ConfigError(f"{key}={value} is not measured by this run; valid: auto, {', '.join(metrics)}")


def check_limits(cfg: DictConfig) -> None:
    """Every number within its bounds (LIMITS), before any data is read."""
    for key in AUTO_SETTINGS:
        value = OmegaConf.select(cfg, key)
        if value != AUTO and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(
                f"{key}={value} is not valid: give a whole number, or auto (scaled to the data)"
            )
    for key, bounds in LIMITS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != AUTO and not within(value, bounds):
            raise ConfigError(f"{key}={value} is out of range: it must lie in {bounds}")
    for key, bounds in ELEMENT_LIMITS.items():
        values = OmegaConf.select(cfg, key, default=None) or []
        for value in values:
            if not within(value, bounds):
                raise ConfigError(f"{key}={list(values)} is out of range: each value must lie in {bounds}")


def within(value: float, bounds: str) -> bool:
    """within(0.5, "[0, 1)") -> True; "(" and ")" leave the bound itself out."""
    low, high = (float(part) for part in bounds[1:-1].split(","))
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[-1] == "]" else value < high
    return above and below and not math.isnan(value)


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value} is not valid; valid: {', '.join(valid)}")
