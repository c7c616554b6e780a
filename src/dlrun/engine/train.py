"""Training, read top-down: build_parts puts the run together, fit runs the epochs,
train_one_epoch the steps, train_step takes one, evaluate scores a split. Everything a run does
happens here, where it happens: the scheduler steps, the checkpoints written after a step or an
epoch, early stopping, stop signals, what the terminal and the loggers are told.

No host-device synchronisation per step: the running loss and metrics stay on the device and are
read once per logging interval; each step's loss also travels to the host asynchronously and is
looked at one step later (LossWatch), so a NaN/inf stops training within one step. Only
trainer.on_nonfinite=skip waits for each step's finiteness, as it decides there whether the
optimizer may step (as PyTorch's GradScaler decides for fp16).
"""

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dlrun import metrics
from dlrun.config.schema import Trainer
from dlrun.data import Data
from dlrun.data.mixing import mixing_for
from dlrun.engine import distributed
from dlrun.engine.build import build_loss, build_metrics, build_model, build_optimizer, build_schedule
from dlrun.engine.compiling import compile_failures, compiled
from dlrun.engine.distributed import Ranks
from dlrun.engine.profiling import StepProfiler
from dlrun.engine.runtime import Precision
from dlrun.engine.state import Outputs, Parts, Position, Scores, TrainingState
from dlrun.engine.weight_average import WeightAverage
from dlrun.errors import DlrunError, UserCodeError
from dlrun.metrics import Metric, Task
from dlrun.reporting.sinks import Epoch, Validation
from dlrun.signals import Interrupted

log = logging.getLogger("dlrun")

DIVERGING = 10.0  # a training loss this many times its lowest so far


def build_parts(cfg: DictConfig, data: Data, task: str, device: torch.device, ranks: Ranks) -> Parts:
    """Everything built once for a run, on the training device, from the resolved config (with the
    data's facts and the training length as numbers): the pieces engine/build.py makes from the
    config, put together. A training feature that keeps state (an average of the weights...)
    adds it to `extras`: checkpoints save and restore it by name."""
    trainer = cfg.trainer
    model = build_model(cfg.model, data.facts).to(device)
    _initialize_lazy_layers(model, data)
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    table, measured, trained = build_metrics(cfg.metrics, task, data.facts.num_classes)
    steps = steps_per_epoch(len(data.train), trainer.limit_train_batches)
    schedule = build_schedule(
        cfg.scheduler,
        optimizer,
        epochs=trainer.epochs,
        steps_per_epoch=steps,
        monitor=metrics.monitored(trainer.monitor, task),
    )
    forward, evaluator = compiled(model, trainer.compile, ranks, device)
    criterion = build_loss(cfg.loss, data.facts)
    extras = {}
    if trainer.ema.decay is not None:  # validation scores the average instead
        extras["ema"] = WeightAverage(model, trainer.ema.decay, trainer.ema.warmup)
        evaluator = extras["ema"].average
    return Parts(
        model=model,
        forward=forward,
        evaluator=evaluator,
        criterion=criterion,
        optimizer=optimizer,
        schedule=schedule,
        precision=Precision(str(trainer.precision), device),
        data=data,
        task=metrics.TASKS[task],
        metrics=table,
        measured=measured,
        trained=trained,
        device=device,
        ranks=ranks,
        extras=extras,
        mixing=mixing_for(cfg.dataset.get("augment"), data.facts, task, criterion, cfg.loss._target_),
    )


def _initialize_lazy_layers(model: nn.Module, data: Data) -> None:
    """Lazy layers (nn.LazyLinear, nn.LazyConv2d...) take their sizes from the first batch they
    see: two validation inputs go through before the optimizer is built, the parameters counted,
    the graph traced or the model compiled."""
    if not any(nn.parameter.is_lazy(parameter) for parameter in model.parameters()):
        return
    inputs = next(iter(data.val))[0][:2]
    training = model.training
    model.eval()  # BatchNorm's running statistics stay untouched
    with torch.no_grad():
        model(inputs)
    model.train(training)


def fit(parts: Parts, state: TrainingState, out: Outputs, trainer: Trainer) -> None:
    """Epochs until trainer.epochs, early stopping, or a stop signal (which saves last.pt first)."""
    if trainer.profile and parts.ranks.is_main:
        out.profiler = StepProfiler(out.folder.path / "profile.json", parts.device, out.terminal)
    try:
        with compile_failures(trainer.compile):
            _epochs(parts, state, out, trainer)
    finally:
        if out.profiler is not None:
            short = out.profiler.close()
            if short:
                out.terminal.warn(short)


def _epochs(parts: Parts, state: TrainingState, out: Outputs, trainer: Trainer) -> None:
    while state.position.epoch < trainer.epochs and not state.stopped_early:
        started = time.perf_counter()
        generator = parts.data.train.generator
        if state.position.step_in_epoch == 0 and generator is not None:
            state.epoch_generator_state = generator.get_state()
        trained = train_one_epoch(parts, state, out, trainer)
        if trained.interrupted:
            save_and_stop(parts, state, out)
        # every process validates on the whole split: they all take the same decisions after it
        with state.scored("val"):
            evaluation = validate(parts, parts.evaluator, trainer)
        lr = used_lr(parts, state.position.global_step)  # this epoch's, before the scheduler moves it
        state.last_val = {f"val/{name}": value for name, value in evaluation.metrics.items()}
        parts.schedule.after_epoch(state.last_val, state.position.global_step)
        state.position.epoch += 1
        state.position.step_in_epoch = 0
        if generator is not None:
            state.epoch_generator_state = generator.get_state()  # where the next epoch starts
        if state.early is not None:
            state.early.update(state.last_val[state.early.metric], state.position.epoch)
        improved = state.best.update(
            state.last_val[state.best.metric], state.position.epoch, state.last_val.get("val/loss")
        )
        if improved:
            whole = trainer.limit_val_batches is None or trainer.limit_val_batches >= len(parts.data.val)
            state.best_val = (
                Scores(dict(evaluation.metrics), evaluation.per_class_acc, evaluation.per_class_precision)
                if whole
                else None
            )
        seconds = time.perf_counter() - started
        report_epoch(parts, state, out, trained, evaluation, lr, improved, seconds, trainer.epochs)
        if "ema" in parts.extras:  # validation scored the average: the raw weights once too
            with state.scored("val"):
                score_raw_weights(parts, out, trainer, state.position.global_step)
        warn_if_diverging(state, out, lr)
        starved = parts.data.train.starved(seconds, state.position.epoch)
        if starved and parts.ranks.is_main:
            out.terminal.warn(starved)
        out.checkpoints.save(
            (out.folder.last, out.folder.best) if improved else (out.folder.last,), parts, state
        )
        if stop_requested(parts):
            save_and_stop(parts, state, out)
    if parts.ranks.enabled:
        distributed.barrier()  # rank 0's last checkpoint is on disk before anyone reads best.pt
    if state.stopped_early:
        out.terminal.line(
            f"early stopping: {state.early.metric} has not improved for {state.early.bad_epochs} epochs"
        )


@dataclass
class EpochResult:
    loss: float
    metrics: dict[str, Optional[float]]  # the task's training metrics (train acc), over the epoch
    samples: int
    steps: int
    interrupted: bool = False
    skipped: int = 0  # steps left out for a non-finite loss or gradient (on_nonfinite=skip)


def train_one_epoch(parts: Parts, state: TrainingState, out: Outputs, trainer: Trainer) -> EpochResult:
    """Train until the epoch ends, trainer.limit_train_batches are done, or a stop signal.

    Resumes inside an epoch when position.step_in_epoch > 0: those batches are skipped. A
    non-finite loss raises NonFinite one step later, naming the step where it happened (a
    non-finite gradient makes the weights, and so the next step's loss, non-finite). With
    on_nonfinite=skip each step's loss and gradient norm are checked before the optimizer
    steps: a bad step changes no weight, is counted, and training goes on.
    """
    position, batches, task = state.position, parts.data.train, parts.task
    parts.forward.train()
    end = steps_per_epoch(len(batches), trainer.limit_train_batches)
    # read once: a step reads plain local values
    log_every, save_every = trainer.log_every_n_steps, trainer.checkpoint_every_n_steps
    stepped_scheduler = parts.schedule.scheduler if parts.schedule.per_step else None
    warmup = parts.schedule.warmup_steps
    average, profiler, mixing = parts.extras.get("ema"), out.profiler, parts.mixing
    running, watch, totals = (
        RunningSums(parts.trained, parts.device),
        LossWatch(parts.device),
        EpochTotals(parts.trained),
    )
    with out.terminal.epoch_progress(position.epoch + 1, trainer.epochs, end, position.step_in_epoch) as bar:
        for inputs, labels in batches.batches(skip=position.step_in_epoch):
            if position.step_in_epoch >= end:
                break
            targets = inputs if task.against_inputs else labels
            if mixing is not None:  # the loss takes class probabilities; the metrics, labels
                inputs, targets, labels = mixing(inputs, labels)
            if position.global_step < warmup:
                with warmed_up(parts, position.global_step):
                    loss, outputs, applied = train_step(parts, inputs, targets, trainer)
            else:
                loss, outputs, applied = train_step(parts, inputs, targets, trainer)
            stop_if_nonfinite(watch.look(), position, end)  # the previous step's loss
            if applied:
                if average is not None:
                    average.update(parts.model)
                running.add(loss, outputs.detach(), targets if mixing is None else labels)
                watch.copy(loss, position.global_step + 1)
            else:
                where = _where(position.global_step + 1, position, end)
                log.warning("skipped %s: its loss or gradient is not finite; no weight was changed", where)
                totals.skipped += 1
            if profiler is not None:
                profiler.step()
            position.global_step += 1
            position.step_in_epoch += 1
            totals.steps += 1
            last = position.step_in_epoch == end
            if position.global_step % log_every == 0 or last:
                stop_if_nonfinite(watch.look(), position, end)
                log_interval(position.global_step, running, totals, parts, out, bar)
            if stepped_scheduler is not None and position.global_step > warmup:
                stepped_scheduler.step()  # after the interval's lr was logged: the one this step used
            bar.advance(batches.batch_size)
            if save_every and position.global_step % save_every == 0:
                out.checkpoints.save((out.folder.last,), parts, state)  # resumes exactly mid-epoch
            # the ranks of a distributed run decide together, once per logging interval
            if not last and (not parts.ranks.enabled or position.global_step % log_every == 0):
                if stop_requested(parts):
                    stop_if_nonfinite(watch.look(), position, end)
                    log_interval(position.global_step, running, totals, parts, out, bar)
                    return totals.result(interrupted=True)
    return totals.result()


def train_step(
    parts: Parts, inputs: Tensor, targets: Tensor, trainer: Trainer
) -> tuple[Tensor, Tensor, bool]:
    """One optimizer step: (loss, outputs, whether the weights were updated). With
    on_nonfinite=skip a step whose loss or gradient norm is not finite leaves the weights alone
    (a sync per step)."""
    model, optimizer, precision = parts.forward, parts.optimizer, parts.precision
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler  # disabled (fp32, bf16): scale, unscale_ and update pass through
    outputs, loss = accumulate_gradient(parts, inputs, targets, trainer.accumulate_grad_batches)
    skip_nonfinite = trainer.on_nonfinite == "skip"
    if trainer.grad_clip is not None or skip_nonfinite:
        scaler.unscale_(optimizer)  # the true gradients, to measure and clip
        parameters = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        # fp16 gradients overflow now and then by design: the scaler skips those steps itself
        checked = loss.detach() if scaler.is_enabled() else loss.detach() + norm
        if skip_nonfinite and not torch.isfinite(checked):
            scaler.update()
            return loss, outputs, False
        if trainer.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(parameters, trainer.grad_clip, norm)
    scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
    scaler.update()
    return loss, outputs, True


def accumulate_gradient(
    parts: Parts, inputs: Tensor, targets: Tensor, micro_batches: int
) -> tuple[Tensor, Tensor]:
    """The batch's gradient, summed over `micro_batches` forward and backward passes (one when
    not accumulating), each micro-batch's loss weighted by its share of the batch: the gradient
    of the whole batch's mean loss. Under DDP the gradients sync on the last pass only.
    Returns (outputs, loss) of the whole batch."""
    model, precision = parts.forward, parts.precision
    if micro_batches == 1:
        pieces = [(inputs, targets)]
    else:
        size = -(-len(inputs) // micro_batches)
        pieces = list(zip(inputs.split(size), targets.split(size)))
    outputs, losses = [], []
    for index, (piece, piece_targets) in enumerate(pieces):
        synced = index == len(pieces) - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if synced else model.no_sync():
            with precision.autocast():
                piece_outputs = model(piece)
                loss = parts.criterion(piece_outputs, piece_targets)
            if loss.dim() != 0 or not loss.requires_grad:  # attributes: no sync
                raise UserCodeError(_not_a_training_loss(parts.criterion, loss))
            if len(pieces) > 1:
                loss = loss * (len(piece) / len(inputs))
            precision.scaler.scale(loss).backward()
        outputs.append(piece_outputs)
        losses.append(loss)
    if len(pieces) == 1:
        return outputs[0], losses[0]
    return torch.cat([out.detach() for out in outputs]), torch.stack([loss.detach() for loss in losses]).sum()


def _not_a_training_loss(criterion: nn.Module, loss: Tensor) -> str:
    name = getattr(getattr(criterion, "func", None), "__name__", type(criterion).__name__)  # a partial
    if loss.dim() != 0:
        return (
            f"loss: {name} gives a tensor of shape {list(loss.shape)}, not one number: reduce it "
            "over the batch (e.g. .mean(), or reduction='mean')"
        )
    return (
        f"loss: {name} gives a number with no gradient to train on: compute it from the model's "
        "outputs with torch operations (not under torch.no_grad(), .detach(), .item() or NumPy)"
    )


@dataclass
class Evaluation:
    """The result of one pass over a split."""

    metrics: dict[str, float]  # "loss", and what the task and the user measure ("acc", "mse", ...)
    per_class_acc: list[float] = field(default_factory=list)  # each class's recall
    per_class_precision: list[float] = field(default_factory=list)
    probabilities: Optional[Tensor] = None  # classification: [N, C] on the device, for PR curves
    labels: Optional[Tensor] = None
    confusion: Optional[Tensor] = None  # [true, predicted]
    examples: Optional[tuple[Tensor, Tensor]] = None  # reconstruction: inputs, outputs


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    criterion: nn.Module,
    task: Task,
    measured: tuple[Metric, ...],
    num_classes: int,
    *,
    precision: Precision,
    limit: Optional[int] = None,
    progress=None,
) -> Evaluation:
    """One pass over a split in eval mode (its first `limit` batches): the loss and each measured
    metric, summed over every sample, and what the task keeps to be shown. `progress` is told of
    each batch (the terminal's bar for the final score)."""
    model.eval()
    sums, kept = MetricSums(measured), Kept(task, num_classes)
    loss_sum, samples = None, 0
    for index, (inputs, labels) in enumerate(batches):
        if limit is not None and index >= limit:
            break
        with precision.autocast():
            outputs = model(inputs)
        outputs = outputs.float()
        targets = inputs if task.against_inputs else labels
        loss = criterion(outputs, targets).double() * len(labels)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        samples += len(labels)
        sums.add(outputs, targets)
        kept.add(inputs, labels, outputs)
        if progress is not None:
            progress.advance(len(labels))
    if samples == 0:
        raise DlrunError("the evaluation split is empty: check the dataset's val/test fractions")
    return kept.finish({"loss": loss_sum.item() / samples, **sums.values()})


# ---------------------------------------------------------------------------------------------
# what an epoch tells the terminal and the loggers


def log_interval(
    step: int, running: "RunningSums", totals: "EpochTotals", parts: Parts, out: Outputs, bar
) -> None:
    """The interval's mean loss and training metrics (summed over the processes), once per
    log_every_n_steps: to the loggers and the progress bar."""
    loss, values, sums, samples = running.read(distributed.sum_over_ranks if parts.ranks.enabled else None)
    if samples == 0:
        return
    totals.add(loss, sums, samples)
    figures = {"train/loss": loss, **{f"train/{name}": value for name, value in values.items()}}
    out.sinks.logged(step, {**figures, "train/lr": used_lr(parts, step)})
    bar.metrics({"loss": loss, **values})


def report_epoch(
    parts: Parts,
    state: TrainingState,
    out: Outputs,
    trained: EpochResult,
    evaluation: Evaluation,
    lr: float,
    improved: bool,
    seconds: float,  # training, validation and logging; not the saves
    epochs: int,
) -> None:
    """The epoch in the loggers, the history (metrics.json) and on the terminal."""
    step, epoch = state.position.global_step, state.position.epoch
    scalars = {
        **state.last_val,
        "train/epoch_seconds": seconds,
        "train/samples_per_second": trained.samples / max(seconds, 1e-9),
    }
    if trained.skipped:
        scalars["train/skipped_steps"] = trained.skipped
    row = {
        "epoch": epoch,
        "train_loss": trained.loss,
        **{f"train_{name}": value for name, value in trained.metrics.items()},
        **state.last_val,
        "lr": lr,
        "seconds": round(seconds, 3),
    }
    state.history.append(row)
    out.sinks.epoch_ended(Epoch(epoch, step, scalars, row))
    out.sinks.validated(
        Validation(
            step,
            parts.data.facts.class_names,
            evaluation.probabilities,
            evaluation.labels,
            evaluation.confusion,
            evaluation.examples,
        ),
        parts.model,
    )
    out.terminal.epoch_summary(
        epoch,
        epochs,
        {"loss": trained.loss, **trained.metrics},
        evaluation.metrics,
        lr,
        seconds,
        trained.samples,
        improved,
    )
    if trained.skipped:
        out.terminal.warn(
            f"epoch {epoch}: skipped {trained.skipped} step(s) with a non-finite loss or "
            "gradient (trainer.on_nonfinite=skip; each is named in dlrun.log)"
        )


def warn_if_diverging(state: TrainingState, out: Outputs, lr: float) -> None:
    """Said once per run, at the first epoch whose training loss is more than ten times the lowest
    before it: nearly always a learning rate too high (or a loss that does not fit the task)."""
    losses = [row["train_loss"] for row in state.history if row.get("train_loss") is not None]
    if len(losses) < 2 or min(losses) <= 0:
        return
    lowest, first_crossing = losses[0], None
    for epoch, loss in enumerate(losses[1:], start=1):
        if first_crossing is None and loss > DIVERGING * lowest:
            first_crossing, lowest_then = epoch, lowest
        lowest = min(lowest, loss)
    if first_crossing == len(losses) - 1:
        ratio = losses[-1] / lowest_then
        out.terminal.warn(
            f"epoch {state.position.epoch}: training loss {losses[-1]:.4g} is {ratio:.0f}x "
            f"its lowest so far ({lowest_then:.4g}): the run is diverging; the likely cause is the "
            f"learning rate ({lr:.3g}): try optimizer.lr={lr / 10:.3g}"
        )


def save_and_stop(parts: Parts, state: TrainingState, out: Outputs) -> None:
    out.checkpoints.save((out.folder.last,), parts, state)
    out.sinks.stopped()
    out.terminal.warn(f"stopped at step {state.position.global_step}; state saved to {out.folder.last}")
    raise Interrupted(parts.stop.signum or signal.SIGTERM)  # ranks a signal did not reach stop too


def stop_requested(parts: Parts) -> bool:
    """A stop signal reached this process (or, in a distributed run, any process)."""
    if parts.ranks.enabled:
        return distributed.any_rank(bool(parts.stop), parts.device)
    return bool(parts.stop)


def validate(parts: Parts, module: nn.Module, trainer: Trainer) -> "Evaluation":
    """`module` (the evaluator, or the raw weights) on trainer.limit_val_batches of val."""
    return evaluate(
        module,
        parts.data.val,
        parts.criterion,
        parts.task,
        parts.measured,
        parts.data.facts.num_classes,
        precision=parts.precision,
        limit=trainer.limit_val_batches,
    )


def score_raw_weights(parts: Parts, out: Outputs, trainer: Trainer, step: int) -> None:
    """With trainer.ema: the model's own weights on the validation split, logged as val_raw/*."""
    raw = validate(parts, parts.model, trainer)
    out.sinks.logged(step, {f"val_raw/{name}": value for name, value in raw.metrics.items()})
    out.terminal.line(f"  raw weights (not averaged): val {out.terminal.figures(raw.metrics)}")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def used_lr(parts: Parts, steps: int) -> float:
    """The lr the last of `steps` optimizer steps took: the scheduler's, warmed up."""
    return current_lr(parts.optimizer) * parts.schedule.warmup_factor(steps - 1)


@contextlib.contextmanager
def warmed_up(parts: Parts, step: int):
    """The scheduler's lr times the warm-up factor, for optimizer step `step` only: the
    scheduler never sees the product (many scale the lr they find)."""
    groups = parts.optimizer.param_groups
    kept = [group["lr"] for group in groups]
    factor = parts.schedule.warmup_factor(step)
    for group, lr in zip(groups, kept):
        group["lr"] = lr * factor
    try:
        yield
    finally:
        for group, lr in zip(groups, kept):
            group["lr"] = lr


def steps_per_epoch(batches: int, limit: Optional[int]) -> int:
    return batches if limit is None else min(limit, batches)


# ---------------------------------------------------------------------------------------------
# the figures an epoch keeps, and the NaN/inf watch


class MetricSums:
    """Each metric's sums (metrics.py), added up batch after batch where the tensors are."""

    def __init__(self, measured: tuple[Metric, ...]):
        self.measured = measured
        self.totals: list[Optional[list]] = [None] * len(measured)

    def add(self, outputs: Tensor, targets: Tensor) -> None:
        for index, metric in enumerate(self.measured):
            sums = metric.sums(outputs, targets)
            total = self.totals[index]
            if total is None:
                self.totals[index] = list(sums)
                continue
            for part, value in enumerate(sums):
                # in place on the device: the first batch's sums are this object's own tensors
                total[part] = (
                    total[part].add_(value) if isinstance(total[part], Tensor) else total[part] + value
                )

    def values(self) -> dict[str, float]:
        return values_of(self.measured, self.totals)


def values_of(measured: tuple[Metric, ...], totals: list) -> dict[str, float]:
    """Each metric's figure from its summed parts (None: no batch was summed)."""
    return {
        metric.name: metric.value(tuple(total))
        for metric, total in zip(measured, totals)
        if total is not None
    }


class RunningSums:
    """The loss and the task's training metrics, summed on the device between two reads."""

    def __init__(self, trained: tuple[Metric, ...], device: torch.device):
        self.trained, self.device = trained, device
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.sums = MetricSums(trained)
        self.samples = 0

    def add(self, loss: Tensor, outputs: Tensor, targets: Tensor) -> None:
        self.loss.add_(loss.detach(), alpha=len(targets))  # promoted to float64 in place
        self.sums.add(outputs, targets)
        self.samples += len(targets)

    def read(self, combine=None) -> tuple[float, dict[str, float], list, int]:
        """(mean loss, metric values, each metric's summed parts, samples) since the last read, in
        one device sync; `combine` sums them in place over the processes of a distributed run."""
        totals = self.sums.totals
        parts = [part for total in totals if total is not None for part in total]
        flat = torch.cat(
            [self.loss.view(1), torch.tensor([float(self.samples)], dtype=torch.float64, device=self.device)]
            + [torch.as_tensor(part, dtype=torch.float64, device=self.device).reshape(-1) for part in parts]
        )
        if combine is not None:
            combine(flat)
        host, offset = flat.tolist(), 2  # the one read from the device
        loss_sum, samples = host[0], int(host[1])
        summed = []
        for total in totals:
            if total is None:
                summed.append(None)
                continue
            group = []
            for part in total:
                shape = tuple(part.shape) if isinstance(part, Tensor) else ()
                size = math.prod(shape)
                chunk = host[offset : offset + size]
                group.append(torch.tensor(chunk, dtype=torch.float64).view(shape) if shape else chunk[0])
                offset += size
            summed.append(group)
        self.loss.zero_()
        self.sums = MetricSums(self.trained)
        self.samples = 0
        if samples == 0:
            return float("nan"), {}, summed, 0
        return loss_sum / samples, values_of(self.trained, summed), summed, samples


class EpochTotals:
    """The epoch's figures, from each interval's sums as they are read: exact for any metric."""

    def __init__(self, trained: tuple[Metric, ...]):
        self.trained = trained
        self.loss_sum = 0.0
        self.sums: list = [None] * len(trained)
        self.samples = self.steps = self.skipped = 0

    def add(self, loss: float, sums: list, samples: int) -> None:
        self.loss_sum += loss * samples
        for index, group in enumerate(sums):
            if group is not None:
                total = self.sums[index]
                self.sums[index] = group if total is None else [a + b for a, b in zip(total, group)]
        self.samples += samples

    def result(self, interrupted: bool = False) -> EpochResult:
        loss = self.loss_sum / self.samples if self.samples else float("nan")
        figures: dict[str, Optional[float]] = {metric.name: None for metric in self.trained}
        figures.update(values_of(self.trained, self.sums))
        return EpochResult(loss, figures, self.samples, self.steps, interrupted, self.skipped)


class Kept:
    """What a validation keeps to be shown: every sample's class probabilities (PR curves) and the
    confusion matrix for classification; the first batch of inputs and outputs for reconstruction."""

    def __init__(self, task: Task, num_classes: int):
        self.num_classes = num_classes
        self.classifies = "confusion" in task.visuals or "pr_curves" in task.visuals
        self.reconstructs = "reconstructions" in task.visuals
        self.probabilities: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.examples: Optional[tuple[Tensor, Tensor]] = None

    def add(self, inputs: Tensor, labels: Tensor, outputs: Tensor) -> None:
        if self.classifies:
            # softmax also turns the log-probabilities of a model ending in log-softmax into probabilities
            self.probabilities.append(outputs.softmax(dim=1))
            self.labels.append(labels)
        if self.reconstructs and self.examples is None:
            self.examples = (inputs[:32].float(), outputs[:32].float())

    def finish(self, figures: dict[str, float]) -> Evaluation:
        if not self.classifies:
            return Evaluation(figures, examples=self.examples)
        probabilities, labels = torch.cat(self.probabilities), torch.cat(self.labels)
        confusion = metrics.confusion_matrix(probabilities.argmax(dim=1), labels, self.num_classes)
        return Evaluation(
            figures,
            per_class_acc=metrics.per_class_accuracy(confusion),
            per_class_precision=metrics.per_class_precision(confusion),
            probabilities=probabilities,
            labels=labels,
            confusion=confusion.cpu(),
            examples=self.examples,
        )


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


class NonFinite(DlrunError):
    """A NaN/inf loss or gradient under trainer.on_nonfinite=stop."""


def stop_if_nonfinite(bad: Optional[tuple[int, float]], position: Position, end: int) -> None:
    if bad is None:
        return
    step, loss = bad
    raise NonFinite(
        f"the training loss became {loss} at {_where(step, position, end)}; training stopped and no "
        "checkpoint holds weights from after it: lower optimizer.lr, set trainer.grad_clip, check the "
        "data for NaN/inf, or set trainer.on_nonfinite=skip"
    )


def _where(step: int, position: Position, end: int) -> str:
    """'step 37 (epoch 1, batch 37 of 50)' for a step of the current epoch."""
    batch = position.step_in_epoch - (position.global_step - step)
    return f"step {step} (epoch {position.epoch + 1}, batch {batch} of {end})"
