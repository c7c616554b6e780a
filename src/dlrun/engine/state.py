"""What one training run holds, in three parts, and what a checkpoint keeps of it.

- Parts: built once at the start (the model and what trains it, the data, the metrics); a
  checkpoint keeps their state dicts.
- TrainingState: where training stands and what it found (position, monitors, history, the data
  order's generator): exactly what a checkpoint keeps besides the parts' state dicts, and, never
  saved, the split being scored at the moment.
- Outputs: where results go (the terminal, the loggers, the checkpoint files); nothing of theirs
  is saved.
"""

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from torch import nn

from dlrun import __version__, metrics
from dlrun.checkpoints.files import restore_rng_states, rng_states
from dlrun.checkpoints.format import write_checkpoint
from dlrun.config.project import code_folders
from dlrun.data import Data
from dlrun.data.facts import Facts
from dlrun.engine.distributed import Ranks
from dlrun.engine.runtime import Precision
from dlrun.errors import CheckpointError, DlrunError
from dlrun.metrics import Metric, Task
from dlrun.reporting.sinks import Sinks
from dlrun.reporting.terminal import Report
from dlrun.runs.folder import RunFolder
from dlrun.signals import STOP, StopRequest

CPU = torch.device("cpu")

# ---------------------------------------------------------------------------------------------
# built once


@dataclass
class Schedule:
    """The LR scheduler and when it steps."""

    scheduler: Optional[Any] = None  # torch's, or None for a constant lr
    per_step: bool = False  # after every optimizer step (onecycle), else after every epoch
    metric: Optional[str] = None  # plateau: the validation metric it steps on
    # the first warmup_steps optimizer steps take the scheduler's first lr times a factor rising
    # linearly from warmup_start to 1 (a function of the step: resumes exactly); the scheduler
    # starts after them, as torchvision's reference and timm do
    warmup_steps: int = 0
    warmup_start: float = 0.1

    def warmup_factor(self, step: int) -> float:
        """The factor on the lr of optimizer step `step` (counted from 0)."""
        if step >= self.warmup_steps:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps

    def after_epoch(self, last_val: dict[str, float], steps: int) -> None:
        """Step an epoch-wise scheduler, once `steps` optimizer steps have ended the warm-up."""
        if self.scheduler is None or self.per_step or steps <= self.warmup_steps:
            return
        if self.metric is not None:  # ReduceLROnPlateau steps on a validation metric
            self.scheduler.step(last_val[self.metric])
        else:
            self.scheduler.step()


@dataclass
class Parts:
    model: nn.Module  # the plain module: its state dict is what checkpoints hold
    forward: nn.Module  # what training calls: the model, compiled and/or wrapped for DDP
    evaluator: nn.Module  # what evaluation calls: the model, compiled, never the DDP wrapper
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    precision: Precision
    data: Data
    task: Task
    metrics: dict[str, Metric]  # the run's table: dlrun's own and the user's
    measured: tuple[Metric, ...]  # what a validation measures besides the loss
    trained: tuple[Metric, ...]  # what is measured on the training batches too
    device: torch.device = CPU
    ranks: Ranks = field(default_factory=Ranks)  # this process's place in a torchrun launch
    stop: StopRequest = STOP  # the process's: a signal during start-up counts too
    # what a training feature adds that a checkpoint must keep (an average of the weights...):
    # anything with state_dict and load_state_dict, saved and restored under its name
    extras: dict[str, Any] = field(default_factory=dict)
    # MixUp / CutMix of each training batch (data/mixing.py): its draws are torch's, which
    # checkpoints keep
    mixing: Optional[Any] = None

    @classmethod
    def of(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        train,
        val=None,
        task: str = metrics.CLASSIFICATION,
        precision: Optional[Precision] = None,
        schedule: Optional[Schedule] = None,
        device: torch.device = CPU,
    ) -> "Parts":
        """The parts of a run on one process, from objects made by hand (tests, benchmarks)."""
        declared = metrics.TASKS[task]
        split = val if val is not None else train
        # a split held as tensors is read as it is: iterating it would move its generator
        inputs, labels = (split.inputs, split.targets) if hasattr(split, "inputs") else next(iter(split))
        classes = int(labels.max()) + 1 if labels.numel() else 1
        facts = Facts("tensor", task, list(inputs.shape[1:]), classes, [str(c) for c in range(classes)])
        return cls(
            model=model,
            forward=model,
            evaluator=model,
            criterion=criterion,
            optimizer=optimizer,
            schedule=schedule or Schedule(),
            precision=precision or Precision("32", device),
            data=Data(train, val if val is not None else train, None, facts),
            task=declared,
            metrics=dict(metrics.BUILT_IN),
            measured=tuple(metrics.BUILT_IN[name] for name in declared.measures),
            trained=tuple(metrics.BUILT_IN[name] for name in declared.while_training),
            device=device,
        )

    def state_dicts(self) -> dict[str, Any]:
        scheduler = self.schedule.scheduler
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict(),
            **{name: part.state_dict() for name, part in self.extras.items()},
        }

    def scored(self) -> nn.Module:
        """The module whose weights validation scores and best.pt keeps: the model, or the
        moving average of its weights (trainer.ema)."""
        average = self.extras.get("ema")
        return average.average if average is not None else self.model

    def load_state_dicts(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.schedule.scheduler is not None and payload["scheduler"] is not None:
            self.schedule.scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"]:
            self.precision.scaler.load_state_dict(payload["scaler"])
        for name, part in self.extras.items():
            part.load_state_dict(payload[name])  # a checkpoint without it does not fit: said by restore


# ---------------------------------------------------------------------------------------------
# the training state: what a checkpoint holds


@dataclass
class Position:
    """Where training stands."""

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
        self.best_loss = state.get("best_loss")  # absent from the oldest checkpoints
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]


@dataclass
class Scores:
    """A validation's figures without its per-sample outputs: best.pt's, kept for the end of a
    run without a test split, which reports them instead of scoring the same weights twice."""

    metrics: dict[str, float]
    per_class_acc: list[float] = field(default_factory=list)  # each class's recall
    per_class_precision: list[float] = field(default_factory=list)


@dataclass
class TrainingState:
    best: Monitor
    early: Optional[Monitor] = None
    position: Position = field(default_factory=Position)
    # the data generator as it was when the current epoch began: with position.step_in_epoch it
    # replays the epoch's order and augmentation exactly after a crash
    epoch_generator_state: Optional[torch.Tensor] = None
    last_val: dict[str, float] = field(default_factory=dict)
    best_val: Optional[Scores] = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row of figures per epoch
    scoring: Optional[str] = None  # "val" or "test" while a split is scored: error lines say so

    @property
    def stopped_early(self) -> bool:
        return self.early is not None and self.early.should_stop

    @contextlib.contextmanager
    def scored(self, split: str) -> Iterator[None]:
        """While `split` is scored. An error leaves `scoring` set: the line about it is written
        after this block has been left."""
        self.scoring = split
        yield
        self.scoring = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": asdict(self.position),
            "monitor": self.best.state_dict(),
            "early_stopping": self.early.state_dict() if self.early is not None else None,
            "data_generator": self.epoch_generator_state,
            "metrics": dict(self.last_val),
            "best_val": asdict(self.best_val) if self.best_val is not None else None,
            "history": list(self.history),
            "rng": rng_states(),
        }

    def load_state_dict(self, state: dict[str, Any], generator: Optional[torch.Generator]) -> None:
        self.position = Position(**state["position"])
        self.best.load_state_dict(state["monitor"])
        if self.early is not None and state["early_stopping"] is not None:
            self.early.load_state_dict(state["early_stopping"])
        saved = state["data_generator"]  # on the device the checkpoint was read to
        self.epoch_generator_state = saved.cpu() if saved is not None else None
        if generator is not None and self.epoch_generator_state is not None:
            generator.set_state(self.epoch_generator_state)
        self.last_val = dict(state["metrics"])
        best_val = state.get("best_val")  # absent from version 1 checkpoints
        self.best_val = Scores(**best_val) if best_val is not None else None
        self.history = list(state["history"])
        restore_rng_states(state["rng"])


def restore(parts: Parts, state: TrainingState, payload: dict[str, Any], path: Path) -> None:
    """Continue from a checkpoint; a state that does not fit the parts built now (their settings
    changed under resume_force) is refused in one line."""
    try:
        parts.load_state_dicts(payload)
        state.load_state_dict(payload, parts.data.train.generator)
    except (RuntimeError, KeyError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"cannot resume from {path}: its saved state does not fit the model and optimizer built "
            f"from this config ({reason}); resume with the checkpoint's model and optimizer settings"
        ) from None


# ---------------------------------------------------------------------------------------------
# where results go


class CheckpointFiles:
    """Writes last.pt and best.pt: the parts' state dicts, the training state, and what rebuilds
    the model (the resolved config, the data's facts)."""

    def __init__(
        self, folder: RunFolder, config: dict[str, Any], facts: Optional[Facts], writes: bool = True
    ):
        self.folder, self.config, self.facts, self.writes = folder, config, facts, writes

    def save(self, paths: tuple[Path, ...], parts: Parts, state: TrainingState) -> None:
        if not paths or not self.writes:
            return
        # the step checks catch NaN/inf losses and gradients; an update can still overflow
        if not torch.stack([p.isfinite().all() for p in parts.model.parameters()]).all():
            names = ", ".join(path.name for path in paths)
            raise DlrunError(
                f"the weights are no longer finite after step {state.position.global_step}; "
                f"{names} not written, so {self.folder.checkpoints} keeps the last finite state: "
                "lower optimizer.lr or set trainer.grad_clip"
            )
        payload = {
            **parts.state_dicts(),
            **state.state_dict(),
            "config": self.config,
            "facts": self.facts.to_dict(),
            "dlrun_version": __version__,
            "code_folders": code_folders(),  # where dlrun-eval finds the code the config names
        }
        for path in paths:
            if path == self.folder.best:  # what eval and predict load: the weights validation scored
                write_checkpoint(path, {**payload, "model": parts.scored().state_dict()})
            else:
                write_checkpoint(path, payload)


@dataclass
class Outputs:
    terminal: Report
    sinks: Sinks
    checkpoints: CheckpointFiles
    profiler: Optional[Any] = None  # trainer.profile: told of each step (engine/profiling.py)

    @property
    def folder(self) -> RunFolder:
        return self.checkpoints.folder

    @classmethod
    def quiet(cls, terminal: Optional[Report] = None, sinks: Optional[Sinks] = None) -> "Outputs":
        """Outputs that show, log and save nothing unless given a terminal or loggers (tests, benchmarks)."""
        terminal = terminal or Report("off", console=Console(quiet=True))
        return cls(terminal, sinks or Sinks(), CheckpointFiles(RunFolder("."), {}, None, writes=False))
