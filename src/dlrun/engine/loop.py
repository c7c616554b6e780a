"""The training loop: plain functions over a model, its batches and an optimizer.

No host-device synchronisation per step: the running loss and accuracy stay on the device and
are read once per logging interval; each step's loss also travels to the host asynchronously
and is looked at one step later (LossWatch), so a NaN/inf stops training within one step. Only
trainer.on_nonfinite=skip waits for each step's finiteness, as it decides there whether the
optimizer may step (as PyTorch's GradScaler decides for fp16).
"""

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from dlrun.errors import DlrunError
from dlrun.engine.tasks import Evaluation

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


class LossWatch:
    """Each step's loss, copied to the host without waiting for the device and looked at one
    step later: by then the device has long computed it, so the look costs no stall, and a
    NaN/inf loss is found within one step."""

    def __init__(self, device: torch.device):
        cuda = device.type == "cuda"
        self.host = torch.zeros((), dtype=torch.float32, pin_memory=cuda)  # pinned: an async copy
        self.copied = torch.cuda.Event() if cuda else None
        self.step: Optional[int] = None  # the step whose loss `host` holds, not yet looked at

    def copy(self, loss: Tensor, step: int) -> None:
        self.host.copy_(loss.detach(), non_blocking=self.copied is not None)
        if self.copied is not None:
            self.copied.record()
        self.step = step

    def look(self) -> Optional[tuple[int, float]]:
        """(step, loss) if the last copied loss is not finite; None if it is, or if none waits."""
        if self.step is None:
            return None
        if self.copied is not None:
            self.copied.synchronize()  # this copy only, not the steps queued after it
        step, self.step = self.step, None
        value = self.host.item()  # host memory
        return None if math.isfinite(value) else (step, value)


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
    non-finite loss raises NonFinite one step later, naming the step where it happened (a
    non-finite gradient makes the weights, and so the next step's loss, non-finite). With
    on_nonfinite="skip" each step's loss and gradient norm are checked before the optimizer
    steps: a bad step changes no weight, is counted, and training goes on.
    """
    model.train()
    device = next(model.parameters()).device
    interval = RunningMeans(device, reduce)
    watch = LossWatch(device)
    totals = EpochTotals()
    end = len(batches) if limit is None else min(limit, len(batches))
    for inputs, labels in batches.batches(skip=position.step_in_epoch):
        if position.step_in_epoch >= end:
            break
        loss, outputs, applied = _step(model, inputs, labels, optimizer, criterion, task, precision, grad_clip,
                                       skip_nonfinite=on_nonfinite == "skip")
        _stop_if_nonfinite(watch.look(), position, end)  # the previous step's loss
        if applied:
            interval.add(loss, task.correct(outputs.detach(), labels), len(labels))
            watch.copy(loss, position.global_step + 1)
        else:
            log.warning("skipped %s: its loss or gradient is not finite; no weight was changed", _where(
                position.global_step + 1, position, end))
            totals.skipped += 1
        position.global_step += 1
        position.step_in_epoch += 1
        totals.steps += 1
        if position.global_step % log_every == 0 or position.step_in_epoch == end:
            _stop_if_nonfinite(watch.look(), position, end)
            _read(interval, totals, position, on_log)  # logs the lr this step used: before the scheduler
        if step_scheduler is not None:
            step_scheduler.step()
        after_step()
        if stop_requested() and position.step_in_epoch < end:
            _stop_if_nonfinite(watch.look(), position, end)
            _read(interval, totals, position, on_log)
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


def _read(interval: RunningMeans, totals: EpochTotals, position: Position, on_log) -> None:
    loss, acc, samples = interval.read()
    if samples == 0:
        return
    totals.add(loss, acc, samples)
    on_log(position.global_step, loss, acc)


def _stop_if_nonfinite(bad: Optional[tuple[int, float]], position: Position, end: int) -> None:
    if bad is None:
        return
    step, loss = bad
    raise NonFinite(
        f"the training loss became {loss} at {_where(step, position, end)}; training stopped and no checkpoint "
        "holds weights from after it: lower optimizer.lr, set trainer.grad_clip, check the data for NaN/inf, "
        "or set trainer.on_nonfinite=skip"
    )


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
