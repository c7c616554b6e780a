"""Rebuilding a trained model from a checkpoint alone, for dlrun-eval and dlrun-predict.

Only plain values are read from the checkpoint, and the model is rebuilt through the one build
path from the `_target_` its config names: dlrun's own code, or the user's own when the user allows
it for this call; never code the file alone names.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dlrun.checkpoints.files import check_finite
from dlrun.checkpoints.format import read_checkpoint
from dlrun.checkpoints.trust import Trust
from dlrun.config.project import importable
from dlrun.data import Data, LoadOptions
from dlrun.data.facts import Facts
from dlrun.engine.build import build_data, build_loss, build_model
from dlrun.errors import CheckpointError, ConfigError, DataError, one_line


@dataclass
class Restored:
    path: Path
    cfg: DictConfig  # the run's resolved config
    facts: Facts
    model: torch.nn.Module  # in eval mode, on the device


def restore(path: str, device: torch.device, trust: Trust, data_too: bool = False) -> Restored:
    """The model of a checkpoint, on `device`, in eval mode. Before anything is imported, every
    `_target_` the parts to rebuild name (the model; the dataset and loss when `data_too`) must
    be code the user allows (checkpoints/trust.py)."""
    path = Path(path).expanduser()
    payload = read_checkpoint(path, map_location=device)
    if isinstance(payload.get("model"), dict):
        check_finite(payload["model"], path)  # NaN weights would "predict" with exit 0
    saved = payload.get("config")
    if isinstance(saved, dict):
        parts = ("model", "dataset", "loss", "metrics") if data_too else ("model",)
        trust.check({part: saved.get(part) for part in parts}, path, payload.get("code_folders", []))
        for folder in payload.get("code_folders", []):  # the run's code, found from any folder
            if Path(folder).is_dir():
                importable(Path(folder), first=False)
    try:
        cfg = OmegaConf.create(payload["config"])
        facts = Facts.from_dict(payload["facts"])
        model = build_model(cfg.model, facts)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} does not describe a model dlrun can rebuild: {one_line(error)}"
        ) from None
    return Restored(path, cfg, facts, model.to(device).eval())


def criterion_for(restored: Restored) -> torch.nn.Module:
    return build_loss(restored.cfg.loss, restored.facts)


def restored_data(restored: Restored, overrides: Any, options: LoadOptions) -> Data:
    """The run's data, read again with the run's dataset settings and the user's replacements
    (`dataset.root=DIR` where it moved); refused when it is not what the model was trained on."""
    saved = restored.cfg.dataset
    given = OmegaConf.to_container(overrides) if not isinstance(overrides, dict) else overrides
    unknown = sorted(set(given) - set(saved))
    if unknown:
        raise ConfigError(
            f"dataset.{unknown[0]} is not a setting of this run's dataset; it has: {', '.join(saved)}"
        )
    data = build_data(OmegaConf.merge(saved, given), options)
    found, expected = data.facts, restored.facts
    if found.class_names != expected.class_names or found.input_shape != expected.input_shape:
        raise DataError(
            f"the data found ({found.num_classes} classes, inputs {found.input_shape}) is not what the model "
            f"was trained on ({expected.num_classes} classes, inputs {expected.input_shape}); "
            "check dataset.root"
        )
    return data
