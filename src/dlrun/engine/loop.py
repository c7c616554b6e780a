"""The training loop: one epoch, one step, one evaluation; plain functions over a model, its
batches and an optimizer. Read top-down.

No host-device synchronisation per step: the running loss and accuracy stay on the device and
are read once per logging interval; each step's loss also travels to the host asynchronously
and is looked at one step later (LossWatch), so a NaN/inf stops training within one step. Only
trainer.on_nonfinite=skip waits for each step's finiteness, as it decides there whether the
optimizer may step (as PyTorch's GradScaler decides for fp16).

What a run does around the steps (TensorBoard, the progress bar, per-step schedulers, mid-epoch
checkpoints, stop signals) comes in through one EpochHooks object; the loop knows nothing else
of the run.
"""

import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from dlrun.engine.runtime import Precision
from dlrun.engine.state import Position
from dlrun.engine.tasks import Evaluation
from dlrun.errors import DlrunError

log = logging.getLogger("dlrun")


@dataclass(frozen=True)
class StepRules:
    """How each optimizer step is taken."""

    precision: Precision
    grad_clip: Optional[float] = None  # max gradient norm
    skip_nonfinite: bool = False  # trainer.on_nonfinite=skip: leave a bad step out instead of stopping


class EpochHooks:
    """The run's side of an epoch. This base does nothing: tests and benchmarks use it as it is;
    engine/fit.py's RunHooks fills it in for a real run."""

    log_every = 50  # steps between two reads of the running loss and accuracy

    def logged(self, step: int, loss: float, acc: Optional[float]) -> None:
        """Once per logging interval, with the interval's mean loss and accuracy (None: no accuracy)."""

    def stepped(self, step: int) -> None:
        """After every optimizer step (and after `logged`, so a logged lr is the one the step used)."""

    def stop_requested(self, step: int) -> bool:
        """Asked after each step but the epoch's last: True ends the epoch early."""
        return False

    def combine(self, figures: Tensor) -> None:
        """The interval's [loss sum, correct, samples] in place: summed over the processes of a
        distributed run before they are read."""


NO_HOOKS = EpochHooks()


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
    rules: StepRules,
    hooks: EpochHooks = NO_HOOKS,
    limit: Optional[int] = None,
) -> EpochResult:
    """Train until the epoch ends, `limit` batches are done, or the hooks ask to stop.

    Resumes inside an epoch when `position.step_in_epoch` > 0: those batches are skipped. A
    non-finite loss raises NonFinite one step later, naming the step where it happened (a
    non-finite gradient makes the weights, and so the next step's loss, non-finite). With
    rules.skip_nonfinite each step's loss and gradient norm are checked before the optimizer
    steps: a bad step changes no weight, is counted, and training goes on.
    """
    model.train()
    device = next(model.parameters()).device
    interval, watch, totals = RunningMeans(device), LossWatch(device), EpochTotals()
    end = len(batches) if limit is None else min(limit, len(batches))
    for inputs, labels in batches.batches(skip=position.step_in_epoch):
        if position.step_in_epoch >= end:
            break
        loss, outputs, applied = train_step(model, inputs, labels, optimizer, criterion, task, rules)
        _stop_if_nonfinite(watch.look(), position, end)  # the previous step's loss
        if applied:
            interval.add(loss, task.correct(outputs.detach(), labels), len(labels))
            watch.copy(loss, position.global_step + 1)
        else:
            log.warning(
                "skipped %s: its loss or gradient is not finite; no weight was changed",
                _where(position.global_step + 1, position, end),
            )
            totals.skipped += 1
        position.global_step += 1
        position.step_in_epoch += 1
        totals.steps += 1
        last = position.step_in_epoch == end
        if position.global_step % hooks.log_every == 0 or last:
            _stop_if_nonfinite(watch.look(), position, end)
            _read(interval, totals, position, hooks)
        hooks.stepped(position.global_step)
        if not last and hooks.stop_requested(position.global_step):
            _stop_if_nonfinite(watch.look(), position, end)
            _read(interval, totals, position, hooks)
            return totals.result(interrupted=True)
    return totals.result()


def train_step(model, inputs, labels, optimizer, criterion, task, rules: StepRules):
    """One optimizer step: (loss, outputs, whether the weights were updated). With
    rules.skip_nonfinite a step whose loss or gradient norm is not finite leaves the weights alone
    (a sync per step)."""
    with rules.precision.autocast():
        outputs = model(inputs)
        loss = criterion(outputs, task.target(inputs, labels))
    optimizer.zero_grad(set_to_none=True)
    scaler = rules.precision.scaler  # disabled (fp32, bf16): scale, unscale_ and update pass through
    scaler.scale(loss).backward()
    if rules.grad_clip is not None or rules.skip_nonfinite:
        scaler.unscale_(optimizer)  # the true gradients, to measure and clip
        parameters = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        # fp16 gradients overflow now and then by design: the scaler skips those steps itself
        checked = loss.detach() if scaler.is_enabled() else loss.detach() + norm
        if rules.skip_nonfinite and not torch.isfinite(checked):
            scaler.update()
            return loss, outputs, False
        if rules.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(parameters, rules.grad_clip, norm)
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


# ---------------------------------------------------------------------------------------------
# the figures an epoch keeps, and the NaN/inf watch


class RunningMeans:
    """Loss and accuracy sums kept on the device between two reads."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = 0
        self.has_correct = False

    def add(self, loss: Tensor, correct: Optional[Tensor], samples: int) -> None:
        self.loss.add_(loss.detach(), alpha=samples)  # promoted to float64 in place
        if correct is not None:
            self.correct.add_(correct)
            self.has_correct = True
        self.samples += samples

    def read(self, combine=lambda figures: None) -> tuple[float, Optional[float], int]:
        """(mean loss, accuracy or None, samples) since the last read; one device sync.
        `combine` sums the figures over the processes of a distributed run."""
        figures = torch.stack(
            [
                self.loss,
                self.correct.double(),
                torch.tensor(float(self.samples), dtype=torch.float64, device=self.loss.device),
            ]
        )
        combine(figures)
        loss, correct, samples = figures.tolist()
        samples = int(samples)
        self.loss.zero_()
        self.correct.zero_()
        self.samples = 0
        if samples == 0:
            return float("nan"), None, 0
        return loss / samples, (correct / samples if self.has_correct else None), samples


class EpochTotals:
    """The epoch's figures, summed from each interval's means as they are read."""

    def __init__(self):
        self.loss = 0.0
        self.correct: Optional[float] = 0.0  # None once an interval reports no accuracy
        self.samples = self.steps = self.skipped = 0

    def add(self, loss: float, acc: Optional[float], samples: int) -> None:
        self.loss += loss * samples
        self.correct = None if acc is None or self.correct is None else self.correct + acc * samples
        self.samples += samples

    def result(self, interrupted: bool = False) -> EpochResult:
        loss = self.loss / self.samples if self.samples else float("nan")
        acc = self.correct / self.samples if self.samples and self.correct is not None else None
        return EpochResult(loss, acc, self.samples, self.steps, interrupted, self.skipped)


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


def _read(interval: RunningMeans, totals: EpochTotals, position: Position, hooks: EpochHooks) -> None:
    loss, acc, samples = interval.read(hooks.combine)
    if samples == 0:
        return
    totals.add(loss, acc, samples)
    hooks.logged(position.global_step, loss, acc)


def _stop_if_nonfinite(bad: Optional[tuple[int, float]], position: Position, end: int) -> None:
    if bad is None:
        return
    step, loss = bad
    raise NonFinite(
        f"the training loss became {loss} at {_where(step, position, end)}; training stopped and no "
        "checkpoint holds weights from after it: lower optimizer.lr, set trainer.grad_clip, check the "
        "data for NaN/inf, "
        "or set trainer.on_nonfinite=skip"
    )


def _where(step: int, position: Position, end: int) -> str:
    """'step 37 (epoch 1, batch 37 of 50)' for a step of the current epoch."""
    batch = position.step_in_epoch - (position.global_step - step)
    return f"step {step} (epoch {position.epoch + 1}, batch {batch} of {end})"
