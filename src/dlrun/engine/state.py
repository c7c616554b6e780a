"""Everything one training run holds, and how it is saved to and restored from a checkpoint."""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dlrun import __version__
from dlrun.checkpoints.files import restore_rng_states, rng_states, save_checkpoint
from dlrun.checkpoints.policy import CheckpointPolicy
from dlrun.data import Data
from dlrun.engine.distributed import Ranks
from dlrun.engine.runtime import Precision
from dlrun.engine.tasks import Evaluation
from dlrun.errors import DlrunError
from dlrun.reporting.tensorboard import Board
from dlrun.reporting.terminal import Report
from dlrun.signals import STOP, StopRequest


@dataclass
class Position:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs finished
    global_step: int = 0  # optimizer steps taken
    step_in_epoch: int = 0  # batches of the current epoch already trained


class Monitor:
    """The best value of a validation metric so far, for best.pt and for early stopping."""

    def __init__(self, metric: str, mode: str, patience: Optional[int] = None, min_delta: float = 0.0):
        self.metric = metric
        self.mode = mode  # max | min
        self.patience = patience
        self.min_delta = min_delta
        self.best: Optional[float] = None
        self.best_loss: Optional[float] = None  # the validation loss at the best value
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int, loss: Optional[float] = None) -> bool:
        """Record a new value; True when it improves on the best by more than min_delta, or, given
        the validation loss, equals the best with a lower loss: on a small validation split the
        accuracy stops moving while the model still improves, and the first epoch to reach it
        would be kept although it is the least trained one."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if not improved and value == self.best and loss is not None and self.best_loss is not None:
            improved = loss < self.best_loss
        if improved:
            self.best, self.best_loss, self.best_epoch, self.bad_epochs = value, loss, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_loss = state.get("best_loss")  # absent from older checkpoints
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]


@dataclass
class Session:
    cfg: DictConfig  # resolved, facts filled in
    run_dir: Path
    device: torch.device
    data: Data
    task: Any  # engine.tasks.Classification | Reconstruction
    model: nn.Module  # the plain module: its state dict is what checkpoints hold
    forward: nn.Module  # what training calls: the model, compiled and/or wrapped for DDP
    evaluator: nn.Module  # what evaluation calls: the model, compiled, never the DDP wrapper
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any]
    precision: Precision
    best: Monitor
    early: Optional[Monitor]
    report: Report
    board: Board
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    stop: StopRequest = STOP  # the process's: a signal during start-up counts too
    position: Position = field(default_factory=Position)
    # the data generator as it was when the current epoch began: with position.step_in_epoch
    # it replays the epoch's order and augmentation exactly after a crash
    epoch_generator_state: Optional[torch.Tensor] = None
    last_val: dict[str, float] = field(default_factory=dict)
    # best.pt's weights scored on the whole val split, when this process saw them improve: a run
    # without a test split reports these instead of scoring the same weights on val again
    best_val: Optional[Evaluation] = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row of figures per epoch
    ranks: Ranks = field(default_factory=Ranks)  # this process's place in a torchrun launch
    choices: dict[str, str] = field(default_factory=dict)  # the option picked in each group

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def generator(self) -> Optional[torch.Generator]:
        return self.data.train.generator

    @property
    def writes_files(self) -> bool:
        return self.ranks.is_main  # in a distributed run, rank 0 writes for all

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict(),
            "position": asdict(self.position),
            "monitor": self.best.state_dict(),
            "early_stopping": self.early.state_dict() if self.early is not None else None,
            "data_generator": self.epoch_generator_state,
            "rng": rng_states(),
            "metrics": dict(self.last_val),
            "history": list(self.history),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "facts": self.data.facts.to_dict(),
            "dlrun_version": __version__,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.position = type(self.position)(**state["position"])
        self.best.load_state_dict(state["monitor"])
        if self.early is not None and state["early_stopping"] is not None:
            self.early.load_state_dict(state["early_stopping"])
        self.epoch_generator_state = state["data_generator"]
        if self.generator is not None and self.epoch_generator_state is not None:
            self.generator.set_state(self.epoch_generator_state)
        self.last_val = dict(state["metrics"])
        self.history = list(state["history"])
        restore_rng_states(state["rng"])

    def save(self, names: tuple[str, ...]) -> None:
        """Write the checkpoints the policy named (last.pt, best.pt) from the current state."""
        if not names or not self.writes_files:
            return
        # the step checks catch NaN/inf losses and gradients; an update can still overflow
        if not torch.stack([p.isfinite().all() for p in self.model.parameters()]).all():
            raise DlrunError(
                f"the weights are no longer finite after step {self.position.global_step}; "
                f"{', '.join(names)} not written, so {self.checkpoints} keeps the last finite state: "
                "lower optimizer.lr or set trainer.grad_clip"
            )
        state = self.state_dict()
        for name in names:
            save_checkpoint(self.checkpoints / name, state)
