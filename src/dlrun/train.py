"""The training loop: plain functions over a model, its batches and an optimizer.

No host-device synchronisation per step: each step's loss and the accuracy stay on the device
and are read once per logging interval, which is also when a non-finite loss is found (and
named by its step). Only trainer.on_nonfinite=skip reads each step's finiteness, as it decides
there whether the optimizer may step (as PyTorch's GradScaler decides for fp16).
"""

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.tasks import Evaluation

log = logging.getLogger("dlrun")


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


@dataclass
class Reading:
    """The figures of the steps since the last read."""

    loss: float  # mean over samples
    acc: Optional[float]
    samples: int
    steps: int
    first_bad: Optional[int] = None  # which of those steps (0 = the first) had a non-finite loss
    bad_loss: float = 0.0  # that loss


class RunningMeans:
    """Each step's loss and the count of correct predictions, kept on the device between two
    reads that are at most `capacity` steps apart."""

    def __init__(self, device: torch.device, capacity: int, reduce: Optional[Callable[[Tensor], None]] = None):
        self.losses = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.sizes: list[int] = []  # samples per step
        self.has_correct = False
        self.reduce = reduce  # sums the figures over the processes of a distributed run

    def add(self, loss: Tensor, correct: Optional[Tensor], samples: int) -> None:
        self.losses[len(self.sizes)] = loss.detach()  # one copy on the device, no sync
        if correct is not None:
            self.correct.add_(correct)
            self.has_correct = True
        self.sizes.append(samples)

    def read(self) -> Reading:
        """The figures since the last read, with one device sync; then start over."""
        steps = len(self.sizes)
        if steps == 0:
            return Reading(float("nan"), None, 0, 0)
        losses = self.losses[:steps]
        sizes = torch.tensor(self.sizes, dtype=torch.float64).to(losses.device, non_blocking=True)
        figures = torch.stack([losses.double().mul(sizes).sum(), self.correct.double(), sizes.sum()])
        if self.reduce is not None:
            self.reduce(figures)
        # this process's own first bad step: any non-finite loss makes every process's gradients,
        # averaged over them, non-finite too, so all stop together at the next step
        bad = ~torch.isfinite(losses)
        first_bad = bad.int().argmax()  # the first True, when there is one
        loss, correct, samples, any_bad, bad_loss = torch.cat(
            [figures, torch.stack([bad.any().double(), losses[first_bad].double()])]).tolist()
        self.correct.zero_()
        self.sizes = []
        return Reading(loss / samples, correct / samples if self.has_correct else None, int(samples), steps,
                       int(first_bad) if any_bad else None, bad_loss)


@dataclass
class EpochResult:
    loss: float
    acc: Optional[float]
    samples: int
    steps: int
    interrupted: bool = False
    skipped: int = 0  # steps left out for a non-finite loss or gradient (on_nonfinite=skip)


class NonFinite(DlrunError):
    """A NaN/inf loss or gradient under trainer.on_nonfinite=stop."""


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
    on_nonfinite: str = "stop",
    step_scheduler=None,
    limit: Optional[int] = None,
    log_every: int = 50,
    on_log: Callable[[int, float, Optional[float]], None] = lambda step, loss, acc: None,
    after_step: Callable[[], None] = lambda: None,
    stop_requested: Callable[[], bool] = lambda: False,
    reduce: Optional[Callable[[Tensor], None]] = None,
) -> EpochResult:
    """Train until the epoch ends, `limit` batches are done, or a stop is requested.

    Resumes inside an epoch when `position.step_in_epoch` > 0: those batches are skipped. A
    non-finite loss raises NonFinite at the next read of the running figures, naming the step
    where it happened (a non-finite gradient makes the weights, and so the next step's loss,
    non-finite). With on_nonfinite="skip" each step's loss and gradient norm are checked before
    the optimizer steps: a bad step changes no weight, is counted, and training goes on.
    """
    model.train()
    interval = RunningMeans(next(model.parameters()).device, log_every, reduce)
    totals = EpochTotals()
    end = len(batches) if limit is None else min(limit, len(batches))
    for inputs, labels in batches.batches(skip=position.step_in_epoch):
        if position.step_in_epoch >= end:
            break
        loss, outputs, applied = _step(model, inputs, labels, optimizer, criterion, task, precision, grad_clip,
                                       skip_nonfinite=on_nonfinite == "skip")
        if applied:
            interval.add(loss, task.correct(outputs.detach(), labels), len(labels))
        else:
            log.warning("skipped %s: its loss or gradient is not finite; no weight was changed", _where(
                position.global_step + 1, position, end))
            totals.skipped += 1
        position.global_step += 1
        position.step_in_epoch += 1
        totals.steps += 1
        if position.global_step % log_every == 0 or position.step_in_epoch == end:
            _read(interval, totals, position, on_log, end)  # logs the lr this step used: before the scheduler
        if step_scheduler is not None:
            step_scheduler.step()
        after_step()
        if stop_requested() and position.step_in_epoch < end:
            _read(interval, totals, position, on_log, end)
            return totals.result(task, interrupted=True)
    return totals.result(task)


class EpochTotals:
    """The epoch's figures, summed from each interval's means as they are read."""

    def __init__(self):
        self.loss = self.correct = 0.0
        self.samples = self.steps = self.skipped = 0

    def add(self, loss: float, acc: Optional[float], samples: int) -> None:
        self.loss += loss * samples
        self.correct += (acc or 0.0) * samples
        self.samples += samples

    def result(self, task, interrupted: bool = False) -> EpochResult:
        loss = self.loss / self.samples if self.samples else float("nan")
        acc = self.correct / self.samples if self.samples and task.name == "classification" else None
        return EpochResult(loss, acc, self.samples, self.steps, interrupted, self.skipped)


def _read(interval: RunningMeans, totals: EpochTotals, position: Position, on_log, end: int) -> None:
    reading = interval.read()
    if reading.first_bad is not None:
        step = position.global_step - reading.steps + 1 + reading.first_bad
        raise NonFinite(
            f"the training loss became {reading.bad_loss} at {_where(step, position, end)}; training stopped and no "
            "checkpoint holds weights from after it: lower optimizer.lr, set trainer.grad_clip, check the data "
            "for NaN/inf, or set trainer.on_nonfinite=skip"
        )
    if reading.samples == 0:
        return
    totals.add(reading.loss, reading.acc, reading.samples)
    on_log(position.global_step, reading.loss, reading.acc)


def _where(step: int, position: Position, end: int) -> str:
    """'step 37 (epoch 1, batch 37 of 50)' for a step of the current epoch."""
    batch = position.step_in_epoch - (position.global_step - step)
    return f"step {step} (epoch {position.epoch + 1}, batch {batch} of {end})"


def _step(model, inputs, labels, optimizer, criterion, task, precision: Precision, grad_clip, skip_nonfinite: bool):
    """One optimizer step: (loss, outputs, whether the weights were updated). With skip_nonfinite
    a step whose loss or gradient norm is not finite leaves the weights alone (a sync per step)."""
    with precision.autocast():
        outputs = model(inputs)
        loss = criterion(outputs, task.target(inputs, labels))
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler  # disabled (fp32, bf16): scale, unscale_ and update pass through
    scaler.scale(loss).backward()
    if grad_clip is not None or skip_nonfinite:
        scaler.unscale_(optimizer)  # the true gradients, to measure and clip
        parameters = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        # fp16 gradients overflow now and then by design: the scaler skips those steps itself
        if skip_nonfinite and not torch.isfinite(loss.detach() if scaler.is_enabled() else loss.detach() + norm):
            scaler.update()
            return loss, outputs, False
        if grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(parameters, grad_clip, norm)
    scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
    scaler.update()
    return loss, outputs, True


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
