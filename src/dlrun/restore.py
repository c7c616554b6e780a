"""Rebuilding a trained model (and its data) from a checkpoint alone, for dlrun-eval and dlrun-predict.

Only plain values are read from the checkpoint: the model is rebuilt from dlrun's own tables by
its `arch` name, never from code named in the file.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dlrun.build import build_loss, build_model
from dlrun.catalog import model_entry
from dlrun.checkpoint import load_checkpoint
from dlrun.data.facts import Facts
from dlrun.errors import CheckpointError


@dataclass
class Restored:
    path: Path
    cfg: DictConfig  # the run's resolved config
    facts: Facts
    model: torch.nn.Module  # in eval mode, on the device
    payload: dict[str, Any]


def restore(path: str, device: torch.device) -> Restored:
    path = Path(path).expanduser()
    payload = load_checkpoint(path, map_location=device)
    try:
        cfg = OmegaConf.create(payload["config"])
        facts = Facts.from_dict(payload["facts"])
        model_entry(cfg.model.arch)  # an unknown name stops here, before anything is built
        model = build_model(cfg.model, facts, cfg.loss.name)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not describe a model dlrun can rebuild: {_first_line(error)}") from None
    return Restored(path, cfg, facts, model.to(device).eval(), payload)


def criterion_for(restored: Restored) -> torch.nn.Module:
    return build_loss(restored.cfg.loss, restored.facts.task, restored.facts.num_classes)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
