"""Epochs: train, validate, step the scheduler, keep the best, stop early, checkpoint."""

import signal
import time

from dlrun import distributed
from dlrun.session import Session
from dlrun.signals import Interrupted
from dlrun.train import evaluate, train_one_epoch


def fit(s: Session) -> None:
    trainer = s.cfg.trainer
    while s.position.epoch < trainer.epochs and not (s.early is not None and s.early.should_stop):
        if s.position.step_in_epoch == 0 and s.generator is not None:
            s.epoch_generator_state = s.generator.get_state()
        started = time.perf_counter()
        epoch_number = s.position.epoch + 1
        with s.report.epoch_progress(epoch_number, trainer.epochs, _steps(s), s.position.step_in_epoch) as bar:
            result = train_one_epoch(
                s.forward, s.data.train, s.optimizer, s.criterion, s.task, s.position,
                precision=s.precision,
                grad_clip=trainer.grad_clip,
                step_scheduler=s.scheduler if s.cfg.scheduler.interval == "step" else None,
                limit=trainer.limit_train_batches,
                log_every=trainer.log_every_n_steps,
                on_log=lambda step, loss, acc: _log_train(s, bar, step, loss, acc),
                after_step=lambda: _after_step(s, bar),
                stop_requested=lambda: _stop_requested(s),
                reduce=distributed.sum_over_ranks if s.ranks.enabled else None,
            )
        if result.interrupted:
            _save_and_stop(s)
        # every process validates on the whole split: they all take the same decisions after it
        evaluation = evaluate(
            s.evaluator, s.data.val, s.criterion, s.task, s.data.facts.num_classes,
            precision=s.precision, limit=trainer.limit_val_batches,
        )
        s.last_val = {f"val/{name}": value for name, value in evaluation.metrics.items()}
        lr = current_lr(s)
        _step_epoch_scheduler(s)
        s.position.epoch += 1
        s.position.step_in_epoch = 0
        if s.generator is not None:
            s.epoch_generator_state = s.generator.get_state()
        improved = s.best.update(s.last_val[s.best.metric], epoch_number)
        if s.early is not None:
            s.early.update(s.last_val[s.early.metric], epoch_number)
        s.board.scalars(s.position.global_step, s.last_val)
        s.board.epoch(s, evaluation)
        seconds = time.perf_counter() - started  # training, validation and logging; not the saves
        s.board.scalars(s.position.global_step, {"time/epoch_seconds": seconds,
                                                 "time/samples_per_second": result.samples / max(seconds, 1e-9)})
        s.history.append({"epoch": epoch_number, "train_loss": result.loss, "train_acc": result.acc,
                          **s.last_val, "lr": lr, "seconds": round(seconds, 3)})
        s.report.epoch_summary(epoch_number, trainer.epochs, {"loss": result.loss, "acc": result.acc},
                               evaluation.metrics, lr, seconds, result.samples, improved)
        s.save("last.pt")
        if improved:
            s.save("best.pt")
        if _stop_now(s):
            _save_and_stop(s)
    if s.ranks.enabled:
        distributed.barrier()  # rank 0's last checkpoint is on disk before anyone reads best.pt
    if s.early is not None and s.early.should_stop:
        s.report.line(f"early stopping: {s.early.metric} has not improved for {s.early.bad_epochs} epochs")


def current_lr(s: Session) -> float:
    return s.optimizer.param_groups[0]["lr"]


def _steps(s: Session) -> int:
    limit = s.cfg.trainer.limit_train_batches
    return len(s.data.train) if limit is None else min(limit, len(s.data.train))


def _log_train(s: Session, bar, step: int, loss: float, acc) -> None:
    s.board.scalars(step, {"train/loss": loss, "train/acc": acc, "lr": current_lr(s)})
    bar.metrics(loss, acc)


def _after_step(s: Session, bar) -> None:
    bar.advance(s.cfg.trainer.batch_size)
    every = s.cfg.trainer.checkpoint_every_n_steps
    if every and s.position.global_step % every == 0:
        s.save("last.pt")


def _stop_requested(s: Session) -> bool:
    """Whether to stop after this step. In a distributed run the ranks decide together, once
    per logging interval, so that all of them stop after the same step."""
    if not s.ranks.enabled:
        return bool(s.stop)
    return s.position.global_step % s.cfg.trainer.log_every_n_steps == 0 and _stop_now(s)


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
