"""Epochs: train, validate, step the scheduler, keep the best, stop early, checkpoint."""

import signal
import time
from typing import Optional

from torch import Tensor

from dlrun.engine import distributed
from dlrun.engine.loop import EpochHooks, EpochResult, StepRules, evaluate, train_one_epoch
from dlrun.engine.state import Session
from dlrun.engine.tasks import Evaluation
from dlrun.reporting.terminal import EpochProgress
from dlrun.signals import Interrupted


def fit(s: Session) -> None:
    trainer = s.cfg.trainer
    while s.position.epoch < trainer.epochs and not (s.early is not None and s.early.should_stop):
        started = time.perf_counter()
        result = _train_epoch(s)
        if result.interrupted:
            _save_and_stop(s)
        # every process validates on the whole split: they all take the same decisions after it
        evaluation = evaluate(
            s.evaluator,
            s.data.val,
            s.criterion,
            s.task,
            s.data.facts.num_classes,
            precision=s.precision,
            limit=trainer.limit_val_batches,
        )
        lr = current_lr(s)  # the rate this epoch trained with, before the scheduler moves it
        improved = _close_epoch(s, evaluation)
        if improved:
            s.best_val = _scores_of_whole_split(s, evaluation, trainer.limit_val_batches)
        _record(s, result, evaluation, lr, improved, started)
        _warn_if_diverging(s, lr)
        s.save(s.policy.after_epoch(improved))
        if _stop_now(s):
            _save_and_stop(s)
    if s.ranks.enabled:
        distributed.barrier()  # rank 0's last checkpoint is on disk before anyone reads best.pt
    if s.early is not None and s.early.should_stop:
        s.report.line(f"early stopping: {s.early.metric} has not improved for {s.early.bad_epochs} epochs")


class RunHooks(EpochHooks):
    """A run's side of each step: TensorBoard scalars and the progress bar per logging interval, a
    per-step scheduler, mid-epoch checkpoints, and stop signals (decided together by the ranks of
    a distributed run, once per logging interval, so that they all stop after the same step)."""

    def __init__(self, s: Session, bar: EpochProgress):
        self.s, self.bar = s, bar
        # plain values: reading a config node costs microseconds, and these are read every step
        trainer = s.cfg.trainer
        self.log_every = trainer.log_every_n_steps
        self.batch_size = trainer.batch_size
        self.step_scheduler = s.scheduler if s.cfg.scheduler.get("interval") == "step" else None

    def logged(self, step: int, loss: float, acc: Optional[float]) -> None:
        self.s.board.scalars(step, {"train/loss": loss, "train/acc": acc, "train/lr": current_lr(self.s)})
        self.bar.metrics(loss, acc)

    def stepped(self, step: int) -> None:
        if self.step_scheduler is not None:
            self.step_scheduler.step()
        self.bar.advance(self.batch_size)
        self.s.save(self.s.policy.after_step(step))

    def stop_requested(self, step: int) -> bool:
        return (not self.s.ranks.enabled or step % self.log_every == 0) and _stop_now(self.s)

    def combine(self, figures: Tensor) -> None:
        if self.s.ranks.enabled:
            distributed.sum_over_ranks(figures)


def _train_epoch(s: Session) -> EpochResult:
    trainer = s.cfg.trainer
    if s.position.step_in_epoch == 0 and s.generator is not None:
        s.epoch_generator_state = s.generator.get_state()
    rules = StepRules(s.precision, trainer.grad_clip, skip_nonfinite=trainer.on_nonfinite == "skip")
    with s.report.epoch_progress(
        s.position.epoch + 1, trainer.epochs, _steps(s), s.position.step_in_epoch
    ) as bar:
        return train_one_epoch(
            s.forward,
            s.data.train,
            s.optimizer,
            s.criterion,
            s.task,
            s.position,
            rules,
            RunHooks(s, bar),
            limit=trainer.limit_train_batches,
        )


def _scores_of_whole_split(s: Session, evaluation: Evaluation, limit) -> Optional[Evaluation]:
    """The evaluation's figures (not its per-sample outputs) when it covered the whole split."""
    if limit is not None and limit < len(s.data.val):
        return None
    return Evaluation(metrics=dict(evaluation.metrics), per_class_acc=list(evaluation.per_class_acc))


DIVERGING = 10.0  # a training loss this many times its lowest so far


def _warn_if_diverging(s: Session, lr: float) -> None:
    """Said once per run, at the first epoch whose training loss is more than ten times the lowest
    before it: nearly always a learning rate too high (or a loss that does not fit the task)."""
    losses = [row["train_loss"] for row in s.history if row.get("train_loss") is not None]
    if len(losses) < 2 or min(losses) <= 0:
        return
    lowest, first_crossing = losses[0], None
    for epoch, loss in enumerate(losses[1:], start=1):
        if first_crossing is None and loss > DIVERGING * lowest:
            first_crossing, lowest_then = epoch, lowest
        lowest = min(lowest, loss)
    if first_crossing == len(losses) - 1:
        s.report.warn(
            f"epoch {s.position.epoch}: training loss {losses[-1]:.4g} is {losses[-1] / lowest_then:.0f}x "
            f"its lowest so far ({lowest_then:.4g}): the run is diverging; the likely cause is the "
            f"learning rate ({lr:.3g}): try optimizer.lr={lr / 10:.3g}"
        )


def _close_epoch(s: Session, evaluation: Evaluation) -> bool:
    """Step the epoch scheduler, move the position on, update the monitors; True if best."""
    s.last_val = {f"val/{name}": value for name, value in evaluation.metrics.items()}
    _step_epoch_scheduler(s)
    s.position.epoch += 1
    s.position.step_in_epoch = 0
    if s.generator is not None:
        s.epoch_generator_state = s.generator.get_state()  # where the next epoch starts
    if s.early is not None:
        s.early.update(s.last_val[s.early.metric], s.position.epoch)
    return s.best.update(s.last_val[s.best.metric], s.position.epoch, s.last_val.get("val/loss"))


def _record(
    s: Session, result: EpochResult, evaluation: Evaluation, lr: float, improved: bool, started: float
) -> None:
    """The epoch in TensorBoard, in the history and on the terminal."""
    step = s.position.global_step
    s.board.scalars(step, s.last_val)
    _show_validation(s, evaluation)
    seconds = time.perf_counter() - started  # training, validation and logging; not the saves
    s.board.scalars(
        step,
        {"train/epoch_seconds": seconds, "train/samples_per_second": result.samples / max(seconds, 1e-9)},
    )
    s.history.append(
        {
            "epoch": s.position.epoch,
            "train_loss": result.loss,
            "train_acc": result.acc,
            **s.last_val,
            "lr": lr,
            "seconds": round(seconds, 3),
        }
    )
    s.report.epoch_summary(
        s.position.epoch,
        s.cfg.trainer.epochs,
        {"loss": result.loss, "acc": result.acc},
        evaluation.metrics,
        lr,
        seconds,
        result.samples,
        improved,
    )
    if result.skipped:
        s.board.scalars(step, {"train/skipped_steps": result.skipped})
        s.report.warn(
            f"epoch {s.position.epoch}: skipped {result.skipped} step(s) with a non-finite loss or "
            "gradient (trainer.on_nonfinite=skip; each is named in dlrun.log)"
        )


def _show_validation(s: Session, evaluation: Evaluation) -> None:
    """What one validation shows in TensorBoard beyond scalars (each item has a logger switch)."""
    step, names = s.position.global_step, s.data.facts.class_names
    if evaluation.probabilities is not None:
        s.board.pr_curves(step, evaluation.probabilities, evaluation.labels, names)
    if evaluation.confusion is not None:
        s.board.confusion_matrix(step, evaluation.confusion, names)
    if evaluation.examples is not None:
        s.board.reconstructions(step, *evaluation.examples)
    s.board.histograms(step, s.model)


def current_lr(s: Session) -> float:
    return s.optimizer.param_groups[0]["lr"]


def _steps(s: Session) -> int:
    limit = s.cfg.trainer.limit_train_batches
    return len(s.data.train) if limit is None else min(limit, len(s.data.train))


def _stop_now(s: Session) -> bool:
    return distributed.any_rank(bool(s.stop), s.device) if s.ranks.enabled else bool(s.stop)


def _step_epoch_scheduler(s: Session) -> None:
    if s.scheduler is None or s.cfg.scheduler.get("interval", "epoch") != "epoch":
        return
    monitor = s.cfg.scheduler.get("monitor")
    if monitor is not None:  # ReduceLROnPlateau steps on a validation metric
        s.scheduler.step(s.last_val[s.best.metric if monitor == "auto" else monitor])
    else:
        s.scheduler.step()


def _save_and_stop(s: Session) -> None:
    s.save(s.policy.on_stop())
    s.board.flush()
    s.report.warn(f"stopped at step {s.position.global_step}; state saved to {s.checkpoints / 'last.pt'}")
    raise Interrupted(s.stop.signum or signal.SIGTERM)  # ranks a signal did not reach stop too
