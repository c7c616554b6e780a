"""The training loop: plain functions over a model, its batches and an optimizer.

No host-device synchronisation per step: the running loss and accuracy stay on the device and
are read once per logging interval.
"""

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.tasks import Evaluation


class Precision:
    """Autocast and gradient scaling for `trainer.precision` (32, bf16 or 16)."""

    DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}

    def __init__(self, precision: str, device: torch.device):
        self.name = precision
        self.dtype = self.DTYPES[precision]
        self.device_type = device.type
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()  # fp32: skip even a disabled autocast's bookkeeping
        return torch.autocast(self.device_type, dtype=self.dtype)


@dataclass
class Position:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs finished
    global_step: int = 0  # optimizer steps taken
    step_in_epoch: int = 0  # batches of the current epoch already trained


class RunningMeans:
    """Loss and accuracy sums kept on the device between two reads."""

    def __init__(self, device: torch.device, reduce: Optional[Callable[[Tensor], None]] = None):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0
        self.has_correct = False
        self.reduce = reduce  # sums the figures over the processes of a distributed run

    def add(self, loss: Tensor, correct: Optional[Tensor], samples: int) -> None:
        self.loss.add_(loss.detach(), alpha=samples)  # promoted to float64 in place
        if correct is not None:
            self.correct.add_(correct)
            self.has_correct = True
        self.samples += samples

    def read(self) -> tuple[float, Optional[float], int]:
        """(mean loss, accuracy or None, samples) since the last read; one device sync."""
        figures = torch.stack([self.loss, self.correct.double(),
                               torch.tensor(float(self.samples), dtype=torch.float64, device=self.loss.device)])
        if self.reduce is not None:
            self.reduce(figures)
        loss, correct, samples = figures.tolist()
        samples = int(samples)
        self.loss.zero_()
        self.correct.zero_()
        self.samples = 0
        if samples == 0:
            return float("nan"), None, 0
        return loss / samples, (correct / samples if self.has_correct else None), samples


@dataclass
class EpochResult:
    loss: float
    acc: Optional[float]
    samples: int
    steps: int
    interrupted: bool = False


def train_one_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    task,
    position: Position,
    *,
    precision: Precision,
    grad_clip: Optional[float] = None,
    step_scheduler=None,
    limit: Optional[int] = None,
    log_every: int = 50,
    on_log: Callable[[int, float, Optional[float]], None] = lambda step, loss, acc: None,
    after_step: Callable[[], None] = lambda: None,
    stop_requested: Callable[[], bool] = lambda: False,
    reduce: Optional[Callable[[Tensor], None]] = None,
) -> EpochResult:
    """Train until the epoch ends, `limit` batches are done, or a stop is requested.

    Resumes inside an epoch when `position.step_in_epoch` > 0: those batches are skipped.
    """
    model.train()
    interval = RunningMeans(next(model.parameters()).device, reduce)
    totals = EpochTotals()
    end = len(batches) if limit is None else min(limit, len(batches))
    for inputs, labels in batches.batches(skip=position.step_in_epoch):
        if position.step_in_epoch >= end:
            break
        loss, outputs = _step(model, inputs, labels, optimizer, criterion, task, precision, grad_clip, position)
        interval.add(loss, task.correct(outputs.detach(), labels), len(labels))
        position.global_step += 1
        position.step_in_epoch += 1
        totals.steps += 1
        if position.global_step % log_every == 0 or position.step_in_epoch == end:
            _read(interval, totals, position, on_log)  # logs the lr this step used: before the scheduler
        if step_scheduler is not None:
            step_scheduler.step()
        after_step()
        if stop_requested() and position.step_in_epoch < end:
            _read(interval, totals, position, on_log)
            return totals.result(task, interrupted=True)
    return totals.result(task)


class EpochTotals:
    """The epoch's figures, summed from each interval's means as they are read."""

    def __init__(self):
        self.loss = self.correct = 0.0
        self.samples = self.steps = 0

    def add(self, loss: float, acc: Optional[float], samples: int) -> None:
        self.loss += loss * samples
        self.correct += (acc or 0.0) * samples
        self.samples += samples

    def result(self, task, interrupted: bool = False) -> EpochResult:
        loss = self.loss / self.samples if self.samples else float("nan")
        acc = self.correct / self.samples if self.samples and task.name == "classification" else None
        return EpochResult(loss, acc, self.samples, self.steps, interrupted)


def _read(interval: RunningMeans, totals: EpochTotals, position: Position, on_log) -> None:
    loss, acc, samples = interval.read()
    if samples == 0:
        return
    if not math.isfinite(loss):
        raise DlrunError(
            f"the training loss became {loss} by step {position.global_step} (epoch "
            f"{position.epoch + 1}): lower optimizer.lr or set trainer.grad_clip"
        )
    totals.add(loss, acc, samples)
    on_log(position.global_step, loss, acc)


def _step(model, inputs, labels, optimizer, criterion, task, precision: Precision, grad_clip, position):
    with precision.autocast():
        outputs = model(inputs)
        loss = criterion(outputs, task.target(inputs, labels))
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler  # disabled (fp32, bf16): scale, unscale_ and update pass through
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        _clip(model, grad_clip, precision, position)
    scaler.step(optimizer)  # skipped when the gradients overflowed
    scaler.update()
    return loss, outputs


def _clip(model: nn.Module, max_norm: float, precision: Precision, position: Position) -> None:
    # with fp16 the scaler skips steps with inf gradients by design; elsewhere they are a bug
    strict = not precision.scaler.is_enabled()
    try:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, error_if_nonfinite=strict)
    except RuntimeError as error:
        if "non-finite" not in str(error):
            raise
        raise DlrunError(
            f"non-finite gradients at step {position.global_step + 1} (epoch {position.epoch + 1}): "
            "lower optimizer.lr, or check the data for NaN/inf values"
        ) from None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    criterion: nn.Module,
    task,
    num_classes: int,
    *,
    precision: Precision,
    limit: Optional[int] = None,
) -> Evaluation:
    """One pass over a split in eval mode: the task's metrics, averaged over every sample."""
    model.eval()
    collector = task.collector(num_classes)
    loss_sum, samples = None, 0
    for index, (inputs, labels) in enumerate(batches):
        if limit is not None and index >= limit:
            break
        with precision.autocast():
            outputs = model(inputs)
        outputs = outputs.float()
        loss = criterion(outputs, task.target(inputs, labels)).double() * len(labels)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        samples += len(labels)
        collector.add(inputs, labels, outputs)
    if samples == 0:
        raise DlrunError("the evaluation split is empty: check the dataset's val/test fractions")
    return collector.finish(loss_sum.item() / samples)
