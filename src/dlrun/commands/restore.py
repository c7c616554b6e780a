"""Rebuilding a trained model from a checkpoint alone, for dlrun-eval and dlrun-predict.

Only plain values are read from the checkpoint: the model is rebuilt from dlrun's own tables by
its `arch` name, never from code named in the file.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dlrun.checkpoints.files import load_checkpoint
from dlrun.data.facts import Facts
from dlrun.engine.build import build_loss, build_model
from dlrun.errors import CheckpointError, one_line


@dataclass
class Restored:
    path: Path
    cfg: DictConfig  # the run's resolved config
    facts: Facts
    model: torch.nn.Module  # in eval mode, on the device


def restore(path: str, device: torch.device) -> Restored:
    path = Path(path).expanduser()
    payload = load_checkpoint(path, map_location=device)
    try:
        cfg = OmegaConf.create(payload["config"])
        facts = Facts.from_dict(payload["facts"])
        model = build_model(cfg.model, facts, cfg.loss.name)  # an unknown arch is refused by name
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} does not describe a model dlrun can rebuild: {one_line(error)}"
        ) from None
    return Restored(path, cfg, facts, model.to(device).eval())


def criterion_for(restored: Restored) -> torch.nn.Module:
    return build_loss(restored.cfg.loss, restored.facts.task, restored.facts.num_classes)
