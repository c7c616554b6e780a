"""Continuing a run from its checkpoint: whether the config still fits it, and the settings a
forced resume changes."""

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from dlrun.config.schema import BOOKKEEPING, Augment, Trainer, Warmup
from dlrun.errors import CheckpointError


def check_resumable(saved: dict[str, Any], current: DictConfig, path: Path) -> None:
    """Refuse a resume whose config differs from the checkpoint's, unless forced."""
    now = _flatten(OmegaConf.to_container(current, resolve=True))
    before = _flatten(saved)
    differing = sorted(
        key
        for key in now.keys() | before.keys()
        if now.get(key) != before.get(key)
        and not key.startswith(BOOKKEEPING)
        and not _derived(key, before, now)
    )
    if differing and not current.trainer.resume_force:
        shown = ", ".join(f"{key} ({before.get(key)!r} -> {now.get(key)!r})" for key in differing[:8])
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        raise CheckpointError(
            f"cannot resume from {path}: the config differs in {shown}{more}; rerun with the "
            "checkpoint's overrides, or add trainer.resume_force=true to accept the change"
        )
    lengthened = [key for key in ("trainer.epochs", "trainer.limit_train_batches") if key in differing]
    planned = _planned_over_the_run(now)
    if planned and lengthened:
        raise CheckpointError(
            f"cannot resume from {path} with another {lengthened[0]}: {planned} plans its schedule over "
            "the run's length, which the checkpoint fixed; keep "
            f"{lengthened[0]}={before.get(lengthened[0])}, or start a new run"
        )


def _derived(key: str, before: dict[str, Any], now: dict[str, Any]) -> bool:
    """What an older checkpoint did not record: a fact this dlrun derives from the data, or a
    setting added since, at its default (set otherwise, it is a change)."""
    if key in before:
        return False
    return key.startswith("facts.") or (key in ADDED_DEFAULTS and now.get(key) == ADDED_DEFAULTS[key])


def _planned_over_the_run(flat: dict[str, Any]) -> Optional[str]:
    """The scheduler whose shape depends on the number of epochs (or steps), if it is one."""
    target = str(flat.get("scheduler._target_", ""))
    if target.endswith("OneCycleLR"):
        return "scheduler=onecycle"
    if target.endswith("CosineAnnealingLR") and flat.get("scheduler.T_max") is None:
        return "scheduler=cosine with T_max=null (the run's epochs)"
    return None


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, optimizer_cfg: DictConfig) -> None:
    """After a forced resume, the config's lr (and the rest) win over the checkpoint's."""
    settings = OmegaConf.to_container(optimizer_cfg, resolve=True)
    for group in optimizer.param_groups:
        for key, value in settings.items():
            if key in group and not key.startswith("_"):
                group[key] = tuple(value) if isinstance(group[key], tuple) else value
                if key == "lr":
                    group["initial_lr"] = value


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(
            _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        )
    return flat


# the defaults of settings added after dlrun 0.1: absent from older checkpoints' configs
ADDED_DEFAULTS = {
    **_flatten(asdict(Trainer()), "trainer."),
    **{f"scheduler.{field.name}": field.default for field in fields(Warmup)},
    **{
        f"dataset.augment.{name}": asdict(Augment())[name]
        for name in ("auto", "random_erasing", "mixup_alpha", "cutmix_alpha")
    },
}
