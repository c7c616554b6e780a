"""Where a run's results go besides the terminal: the loggers chosen with `logger=...`.

A logger is a Sink: the run tells it what happens, in this order, and each logger keeps what it
wants (every method does nothing unless a logger overrides it). dlrun's own are TensorBoard
(tensorboard.py), CSV files (csv_log.py) and MLflow (mlflow_log.py); a logger is built like
anything else a config names, by `_target_` with its settings, and may ask for `run_folder` (the
run's RunFolder) and `terminal` (for warnings).

To add one: a module here with a Sink subclass, and its option in config/schema.py.
"""

from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor, nn

from dlrun.data.facts import Facts
from dlrun.models.summary import ModelSummary


@dataclass
class Started:
    """A fresh run, as it starts training."""

    config: dict[str, Any]  # the resolved config
    config_yaml: str
    model: nn.Module
    example: Optional[Tensor]  # a batch of validation inputs (None: an empty split)
    facts: Facts
    summary: Optional[ModelSummary] = None  # the layers on that batch


@dataclass
class Epoch:
    """One epoch, as the loggers are told it."""

    epoch: int
    step: int  # optimizer steps taken so far
    scalars: dict[str, float]  # what is plotted at `step`: val/loss, val/acc, train/epoch_seconds, ...
    row: dict[str, Any]  # metrics.json's history row: the epoch's train and val figures, lr, seconds


@dataclass
class Validation:
    """What one validation keeps to be shown, beyond its figures."""

    step: int
    class_names: list[str]
    probabilities: Optional[Tensor] = None  # [N, classes]: PR curves
    labels: Optional[Tensor] = None
    confusion: Optional[Tensor] = None  # [true, predicted]
    examples: Optional[tuple[Tensor, Tensor]] = None  # a batch of inputs and their reconstructions


@dataclass
class Finished:
    """A finished run, as metrics.json has it, and what its row of settings is made of."""

    results: dict[str, Any]  # metrics.json
    split: str  # the final split: test, or val without one
    config: dict[str, Any]  # the resolved config
    choices: dict[str, str]  # the option chosen in each group
    class_names: list[str]
    # the run's name where runs are compared: its folder's, and a sweep job's with its sweep's
    # (`16-23-04/2_model-mlp_lr-0.01`), so that the first characters tell runs apart
    trial: str = ""


class Sink:
    def start(self, resumed_at: Optional[int]) -> None:
        """Before anything is logged; `resumed_at`: the step a resumed run continues from (what a
        crashed run logged after it is dropped)."""

    def run_started(self, started: Started) -> None:
        """Once, for a fresh run (a resumed one continues what it logged)."""

    def logged(self, step: int, values: dict[str, float]) -> None:
        """Each logging interval: train/loss, the task's training metrics, train/lr."""

    def epoch_ended(self, epoch: Epoch) -> None:
        """After each epoch's validation."""

    def validated(self, validation: Validation, model: nn.Module) -> None:
        """After each validation, what it kept to be shown (PR curves, confusion, reconstructions)."""

    def finished(self, run: Finished) -> None:
        """Once the final split is scored and metrics.json is written."""

    def stopped(self) -> None:
        """A stop signal ends the run here (last.pt is saved): everything so far to disk."""

    def close(self) -> None:
        """At the end; also after a failure."""


class Sinks(list):
    """Every chosen logger, told the same thing in turn."""

    def start(self, resumed_at: Optional[int]) -> None:
        for sink in self:
            sink.start(resumed_at)

    def run_started(self, started: Started) -> None:
        for sink in self:
            sink.run_started(started)

    def logged(self, step: int, values: dict[str, float]) -> None:
        for sink in self:
            sink.logged(step, values)

    def epoch_ended(self, epoch: Epoch) -> None:
        for sink in self:
            sink.epoch_ended(epoch)

    def validated(self, validation: Validation, model: nn.Module) -> None:
        for sink in self:
            sink.validated(validation, model)

    def finished(self, run: Finished) -> None:
        for sink in self:
            sink.finished(run)

    def stopped(self) -> None:
        for sink in self:
            sink.stopped()

    def close(self) -> None:
        for sink in self:
            sink.close()
