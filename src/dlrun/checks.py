"""Config checks that need no torch: a bad combination fails in a second, with the fix."""

from omegaconf import DictConfig, OmegaConf

from dlrun.catalog import check_pairing, task_of
from dlrun.errors import ConfigError

PRECISIONS = ("32", "bf16", "16")
PROGRESS = ("auto", "bar", "lines", "off")
INTERVALS = ("epoch", "step")


def check_config(cfg: DictConfig, choices: dict[str, str]) -> None:
    check_pairing(
        cfg.model.arch, cfg.dataset.loader, cfg.loss.name,
        choices.get("model", cfg.model.arch), choices.get("dataset", cfg.dataset.loader),
    )
    trainer = cfg.trainer
    _one_of("trainer.precision", str(trainer.precision), PRECISIONS)
    _one_of("logger.progress", cfg.logger.progress, PROGRESS)
    _one_of("scheduler.interval", cfg.scheduler.interval, INTERVALS)
    for key in ("epochs", "batch_size", "log_every_n_steps", "eval_batch_size",
                "limit_train_batches", "limit_val_batches", "checkpoint_every_n_steps"):
        value = trainer[key]
        minimum = 0 if key == "epochs" else 1
        if value is not None and value < minimum:
            raise ConfigError(f"trainer.{key}={value} must be at least {minimum}")
    metrics = available_metrics(cfg)
    for key, value in (("trainer.monitor", trainer.monitor),
                       ("trainer.early_stopping.monitor", trainer.early_stopping.monitor),
                       ("scheduler.monitor", cfg.scheduler.get("monitor", "auto"))):
        if value != "auto" and value not in metrics:
            raise ConfigError(f"{key}={value} is not measured by this run; valid: auto, {', '.join(metrics)}")
    for key in ("trainer.early_stopping.mode", "scheduler.mode"):
        mode = OmegaConf.select(cfg, key, default=None)
        if mode is not None:
            _one_of(key, mode, ("auto", "min", "max"))


def available_metrics(cfg: DictConfig) -> list[str]:
    """What a validation of this run measures: its loss, and accuracy or reconstruction error."""
    return ["val/loss", "val/acc" if task_of(cfg.model.arch) == "classification" else "val/mse"]


def monitored(cfg: DictConfig) -> str:
    """The metric that decides best.pt: trainer.monitor, or the task's own."""
    if cfg.trainer.monitor != "auto":
        return cfg.trainer.monitor
    return "val/acc" if task_of(cfg.model.arch) == "classification" else "val/mse"


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value} is not valid; valid: {', '.join(valid)}")
