"""Epochs: train, validate, step the scheduler, keep the best, stop early, checkpoint."""

import signal
import time

from dlrun.engine import distributed
from dlrun.engine.state import Session
from dlrun.engine.runtime import Interrupted
from dlrun.engine.tasks import Evaluation
from dlrun.engine.loop import EpochResult, evaluate, train_one_epoch


def fit(s: Session) -> None:
    trainer = s.cfg.trainer
    while s.position.epoch < trainer.epochs and not (s.early is not None and s.early.should_stop):
        started = time.perf_counter()
        result = _train_epoch(s)
        if result.interrupted:
            _save_and_stop(s)
        # every process validates on the whole split: they all take the same decisions after it
        evaluation = evaluate(s.evaluator, s.data.val, s.criterion, s.task, s.data.facts.num_classes,
                              precision=s.precision, limit=trainer.limit_val_batches)
        lr = current_lr(s)  # the rate this epoch trained with, before the scheduler moves it
        improved = _close_epoch(s, evaluation)
        _record(s, result, evaluation, lr, improved, started)
        s.save("last.pt")
        if improved:
            s.save("best.pt")
        if _stop_now(s):
            _save_and_stop(s)
    if s.ranks.enabled:
        distributed.barrier()  # rank 0's last checkpoint is on disk before anyone reads best.pt
    if s.early is not None and s.early.should_stop:
        s.report.line(f"early stopping: {s.early.metric} has not improved for {s.early.bad_epochs} epochs")


def _train_epoch(s: Session) -> EpochResult:
    trainer = s.cfg.trainer
    if s.position.step_in_epoch == 0 and s.generator is not None:
        s.epoch_generator_state = s.generator.get_state()
    # plain values for the per-step hooks: reading a config node costs microseconds each time
    batch_size, save_every, log_every = trainer.batch_size, trainer.checkpoint_every_n_steps, trainer.log_every_n_steps

    def after_step() -> None:
        bar.advance(batch_size)
        if save_every and s.position.global_step % save_every == 0:
            s.save("last.pt")

    def stop_requested() -> bool:
        # ranks of a distributed run decide together, once per logging interval, to stop after
        # the same step
        return (not s.ranks.enabled or s.position.global_step % log_every == 0) and _stop_now(s)

    with s.report.epoch_progress(s.position.epoch + 1, trainer.epochs, _steps(s), s.position.step_in_epoch) as bar:
        return train_one_epoch(
            s.forward, s.data.train, s.optimizer, s.criterion, s.task, s.position,
            precision=s.precision,
            grad_clip=trainer.grad_clip,
            on_nonfinite=trainer.on_nonfinite,
            step_scheduler=s.scheduler if s.cfg.scheduler.interval == "step" else None,
            limit=trainer.limit_train_batches,
            log_every=log_every,
            on_log=lambda step, loss, acc: _log_train(s, bar, step, loss, acc),
            after_step=after_step,
            stop_requested=stop_requested,
            reduce=distributed.sum_over_ranks if s.ranks.enabled else None,
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
    return s.best.update(s.last_val[s.best.metric], s.position.epoch)


def _record(s: Session, result: EpochResult, evaluation: Evaluation, lr: float, improved: bool, started: float) -> None:
    """The epoch in TensorBoard, in the history and on the terminal."""
    s.board.scalars(s.position.global_step, s.last_val)
    s.board.epoch(s, evaluation)
    seconds = time.perf_counter() - started  # training, validation and logging; not the saves
    s.board.scalars(s.position.global_step, {"time/epoch_seconds": seconds,
                                             "time/samples_per_second": result.samples / max(seconds, 1e-9)})
    s.history.append({"epoch": s.position.epoch, "train_loss": result.loss, "train_acc": result.acc,
                      **s.last_val, "lr": lr, "seconds": round(seconds, 3)})
    s.report.epoch_summary(s.position.epoch, s.cfg.trainer.epochs, {"loss": result.loss, "acc": result.acc},
                           evaluation.metrics, lr, seconds, result.samples, improved)
    if result.skipped:
        s.board.scalars(s.position.global_step, {"train/skipped_steps": result.skipped})
        s.report.warn(f"epoch {s.position.epoch}: skipped {result.skipped} step(s) with a non-finite loss or "
                      "gradient (trainer.on_nonfinite=skip; each is named in dlrun.log)")


def current_lr(s: Session) -> float:
    return s.optimizer.param_groups[0]["lr"]


def _steps(s: Session) -> int:
    limit = s.cfg.trainer.limit_train_batches
    return len(s.data.train) if limit is None else min(limit, len(s.data.train))


def _log_train(s: Session, bar, step: int, loss: float, acc) -> None:
    s.board.scalars(step, {"train/loss": loss, "train/acc": acc, "lr": current_lr(s)})
    bar.metrics(loss, acc)


def _stop_now(s: Session) -> bool:
    return distributed.any_rank(bool(s.stop), s.device) if s.ranks.enabled else bool(s.stop)


def _step_epoch_scheduler(s: Session) -> None:
    if s.scheduler is None or s.cfg.scheduler.interval != "epoch":
        return
    monitor = s.cfg.scheduler.get("monitor")
    if monitor is not None:  # ReduceLROnPlateau steps on a validation metric
        s.scheduler.step(s.last_val[s.best.metric if monitor == "auto" else monitor])
    else:
        s.scheduler.step()


def _save_and_stop(s: Session) -> None:
    s.save("last.pt")
    s.board.flush()
    s.report.warn(f"stopped at step {s.position.global_step}; state saved to {s.checkpoints / 'last.pt'} (resume with trainer.resume=...)")
    raise Interrupted(s.stop.signum or signal.SIGTERM)  # ranks a signal did not reach stop too
