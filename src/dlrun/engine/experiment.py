"""One experiment, from the composed config to metrics.json.

Data flows one way: config -> data (and its facts) -> model -> loop -> report and checkpoints.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from dlrun.checkpoints.files import check_finite, load_checkpoint, remove_stale_temporaries
from dlrun.checkpoints.policy import BEST, CheckpointPolicy
from dlrun.checkpoints.resume import apply_optimizer_settings, check_resumable, load_into, resume_path
from dlrun.config.catalog import mode_of, monitored
from dlrun.config.checks import check_task_settings
from dlrun.config.paths import run_resume_command, shell_path
from dlrun.config.training_length import epochs_for
from dlrun.data import Data, LoadOptions
from dlrun.engine import distributed, runtime
from dlrun.engine.build import (
    build_data,
    build_loss,
    build_model,
    build_optimizer,
    build_scheduler,
    check_targets,
)
from dlrun.engine.fit import fit
from dlrun.engine.loop import evaluate
from dlrun.engine.runtime import Precision
from dlrun.engine.state import Monitor, Session
from dlrun.engine.tasks import make_task
from dlrun.errors import DISK_REFUSED, ConfigError, DlrunError, one_line
from dlrun.reporting.tensorboard import Board, final_metrics, hparam_values, shown_hparams
from dlrun.reporting.terminal import Report
from dlrun.signals import Interrupted

log = logging.getLogger("dlrun")


def run_experiment(cfg: DictConfig, run_dir: Optional[Path] = None) -> float:
    """Run one experiment (its config already passed dlrun.config.checks); returns the metric a
    sweeper optimizes (`optimized_metric`)."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    run_dir = Path(run_dir or hydra.runtime.output_dir)
    ranks = distributed.from_environment()
    try:
        return _run(cfg, run_dir, hydra, ranks)
    except DlrunError:
        raise  # one line for the user; the caller writes it to the run's log
    except Interrupted:
        if ranks.is_main and (run_dir / "checkpoints" / "last.pt").is_file():
            print(f"resume with: {run_resume_command(_typed(hydra), run_dir)}", file=sys.stderr)
        raise
    except OSError as error:
        if error.filename is None and error.errno not in DISK_REFUSED:
            raise
        # TensorBoard's writer thread reports a failed write without the file's name
        problem = f"could not write {shell_path(error.filename or run_dir)} ({error.strerror})"
        raise _cut_short(problem, "make room", run_dir, hydra) from None
    except RuntimeError as error:
        if not str(error).startswith("DataLoader worker"):
            raise
        problem = f"a data-loading process died ({one_line(error).rstrip('. ')}: out of memory?)"
        fix = "if memory is short, add a lower dataset.num_workers=N"
        raise _cut_short(problem, fix, run_dir, hydra) from None
    except Exception:
        log.exception("the run failed")
        raise
    finally:
        distributed.stop()
        if ranks.rank > 0:
            distributed.remove_scratch(run_dir)  # this rank's Hydra folder, never the shared one


def _run(cfg: DictConfig, run_dir: Path, hydra, ranks: distributed.Ranks) -> float:
    started = time.perf_counter()
    jobs = parallel_jobs(hydra)
    threads = runtime.configure_threads(cfg.trainer.num_threads, jobs * ranks.local_world_size)
    device = runtime.select_device(cfg.trainer.device, slot=_device_slot(hydra, jobs, ranks))
    if ranks.enabled:
        distributed.start(device)
        run_dir = distributed.shared_run_dir(run_dir)
    runtime.set_deterministic(cfg.trainer.deterministic)
    runtime.seed_everything(cfg.seed)  # the same on every rank: resuming restores rank 0's state
    if cfg.trainer.resume == "auto" and (run_dir / "metrics.json").is_file():
        return _already_finished(cfg, run_dir)  # a sweep run again: its finished jobs are not redone
    resume_from = resume_path(cfg.trainer.resume, run_dir)
    checkpoint = load_checkpoint(resume_from, map_location=device) if resume_from else None
    if checkpoint is not None:
        check_finite(checkpoint["model"], resume_from)

    choices = dict(hydra.runtime.choices) if hydra is not None else {}
    report = Report(cfg.logger.progress) if ranks.is_main else Report("off", console=Console(quiet=True))
    session = _build_session(cfg, run_dir, device, report, ranks, choices)
    _show_config(report, session.cfg, choices, hydra, run_dir)
    report.line(
        f"device {device}{_ranks_text(ranks)}, {threads} CPU thread(s), "
        f"{_count(session.model):,} trainable parameters"
    )
    report.line(_data_line(session.data))
    if session.data.facts.skipped_files:
        report.warn(
            f"left out {session.data.facts.skipped_files} unreadable image file(s) "
            f"(dataset.bad_images=skip; each is named in {run_dir / 'dlrun.log'})"
        )
    if checkpoint is not None:
        check_resumable(checkpoint["config"], session.cfg, resume_from)
        load_into(session, checkpoint, resume_from)
        if cfg.trainer.resume_force:
            apply_optimizer_settings(session.optimizer, session.cfg.optimizer)
        report.line(
            f"resumed from {resume_from} at epoch {session.position.epoch + 1}, "
            f"step {session.position.global_step}"
        )
    example = _example_batch(session)
    _check_outputs(session, example)
    # everything that can refuse the run has been decided: only now is anything written
    if ranks.is_main:
        remove_stale_temporaries(run_dir / "checkpoints")
    _open_board(session, example, resumed=checkpoint is not None)
    _save_resolved_config(session)

    with session.stop.deferred():  # a signal now finishes the step and saves before stopping
        fit(session)
    results = _finish(session, time.perf_counter() - started)
    return _optimized(cfg, results)


def _show_config(report: Report, cfg: DictConfig, choices: dict, hydra, run_dir: Path) -> None:
    """The config tree for a run; for a sweep job, where a tree per job would bury the results,
    only the settings typed for it (logger.config chooses)."""
    view = cfg.logger.config
    if view == "auto":
        view = "overrides" if hydra is not None and hydra.mode == RunMode.MULTIRUN else "full"
    if view == "full":
        report.config(cfg, choices)
    elif view == "overrides":
        typed = " ".join(_typed(hydra)) or "the defaults"
        report.line(f"settings: {typed}   (the whole config: {shell_path(run_dir / 'config.yaml')})")


def _device_slot(hydra, jobs: int, ranks: distributed.Ranks) -> Optional[int]:
    """Which GPU this process takes: its torchrun local rank, or its parallel sweep job number."""
    if ranks.enabled:
        return ranks.local_rank
    return hydra.job.num if jobs > 1 else None


def _data_line(data: Data) -> str:
    """'data: 3 classes, inputs [2], 630 train / 135 val / 135 test, held on cpu'."""
    facts = data.facts
    sizes = [
        f"{split.num_samples:,} {name}"
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
        if split is not None
    ]
    return (
        f"data: {facts.num_classes} classes, inputs {facts.input_shape}, {' / '.join(sizes)}, "
        f"{data.train.source}"
    )


def _ranks_text(ranks: distributed.Ranks) -> str:
    return f" (rank 0 of {ranks.world_size} processes)" if ranks.enabled else ""


def _build_session(cfg, run_dir, device, report, ranks, choices) -> Session:
    task_name = check_targets(cfg)  # the user's code is imported and checked before data is read
    check_task_settings(cfg, task_name, choices.get("model", "?"))
    trainer = cfg.trainer
    options = LoadOptions(
        task=task_name,
        seed=cfg.seed,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        device=device,
        channels_last=trainer.channels_last,
        deterministic=trainer.deterministic,
        shard=ranks.shard,
    )
    data = build_data(cfg.dataset, options)
    cfg = _with_facts(cfg, data)
    trainer = cfg.trainer
    if trainer.batch_size < ranks.world_size:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is the global batch: it must be at least "
            f"the number of processes ({ranks.world_size})"
        )
    model = build_model(cfg.model, data.facts, cfg.loss.get("name")).to(device)
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    metric = monitored(trainer.monitor, task_name)
    steps = (
        len(data.train)
        if trainer.limit_train_batches is None
        else min(trainer.limit_train_batches, len(data.train))
    )
    scheduler = build_scheduler(
        cfg.scheduler,
        optimizer,
        epochs=trainer.epochs,
        steps_per_epoch=steps,
        monitor_mode=mode_of(_scheduler_metric(cfg, metric)),
    )
    forward, evaluator = _callables(model, trainer.compile, ranks, device)
    return Session(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        data=data,
        task=make_task(task_name),
        model=model,
        forward=forward,
        evaluator=evaluator,
        criterion=build_loss(cfg.loss, task_name, data.facts.num_classes),
        optimizer=optimizer,
        scheduler=scheduler,
        precision=Precision(str(trainer.precision), device),
        best=Monitor(metric, mode_of(metric)),
        early=_early_stopping(cfg, metric),
        report=report,
        board=Board(run_dir, cfg.logger, report, writes_files=ranks.is_main),
        policy=CheckpointPolicy(trainer.checkpoint_every_n_steps),
        ranks=ranks,
        choices=choices,
    )


def _callables(model: torch.nn.Module, compile_model: bool, ranks: distributed.Ranks, device: torch.device):
    """(what training calls, what evaluation calls): compiled if asked; DDP only for training."""
    evaluator = torch.compile(model) if compile_model else model
    if not ranks.enabled:
        return evaluator, evaluator
    ddp = distributed.wrap(model, device)
    return (torch.compile(ddp) if compile_model else ddp), evaluator


def _with_facts(cfg: DictConfig, data: Data) -> DictConfig:
    """The config as the run really uses it: resolved, with the data's facts filled in and the
    `auto` training length made a number of epochs and a batch size."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["facts"] = data.facts.to_dict()
    trainer = resolved["trainer"]
    trainer["batch_size"] = data.train.batch_size  # the data layer resolved `auto` when it batched
    trainer["epochs"] = epochs_for(trainer["epochs"], len(data.train))
    out = OmegaConf.create(resolved)
    OmegaConf.set_struct(out, True)
    return out


def _scheduler_metric(cfg: DictConfig, metric: str) -> str:
    monitor = cfg.scheduler.get("monitor", "auto")
    return metric if monitor == "auto" else monitor


def _early_stopping(cfg: DictConfig, metric: str) -> Optional[Monitor]:
    settings = cfg.trainer.early_stopping
    if not settings.enabled:
        return None
    name = metric if settings.monitor == "auto" else settings.monitor
    mode = mode_of(name) if settings.mode == "auto" else settings.mode
    return Monitor(name, mode, patience=settings.patience, min_delta=settings.min_delta)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_outputs(s: Session, example: Optional[torch.Tensor]) -> None:
    """A model whose outputs do not fit the task is refused before training, naming the shapes."""
    if example is None:
        return
    inputs = example[:2]
    s.model.eval()
    with torch.no_grad():
        outputs = s.model(inputs)
    classes = s.data.facts.num_classes
    if s.task.name == "classification":
        expected, what = [len(inputs), classes], f"one score per class ({classes} classes)"
    else:
        expected, what = list(inputs.shape), "outputs shaped like its inputs"
    shape = list(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
    if shape != expected:
        model = s.cfg.model.get("_target_") or f"model={s.choices.get('model', s.cfg.model.get('arch'))}"
        raise ConfigError(
            f"{model} gives outputs {shape} for inputs {list(inputs.shape)}, but {s.task.name} needs "
            f"{what}: {expected}; make its last layer fit (the model is given num_classes and in_shape)"
        )


def _open_board(s: Session, example: Optional[torch.Tensor], resumed: bool) -> None:
    """A fresh run's event file starts with its config, graph and input grid; a resumed run's
    continues where its checkpoint stands (later events of the crashed run are purged)."""
    s.board.open(purge_step=s.position.global_step + 1 if resumed else None)
    if not resumed:
        s.board.run_started(OmegaConf.to_yaml(s.cfg), s.model, example, s.data.facts)


def _example_batch(s: Session) -> Optional[torch.Tensor]:
    # from the validation split: drawing from the training batches would move their generator
    for inputs, _ in s.data.val:
        return inputs[:64]
    return None


def _save_resolved_config(s: Session) -> None:
    if s.writes_files:
        OmegaConf.save(s.cfg, s.run_dir / "config.yaml")


def _finish(s: Session, seconds: float) -> dict[str, Any]:
    """Test the best checkpoint, then write metrics.json, the HPARAMS row and the final table."""
    split_name = "test" if s.data.test is not None else "val"
    if split_name == "val" and s.best_val is not None:
        final = s.best_val  # best.pt's weights, scored on val when they were saved
    else:
        best_path = s.checkpoints / BEST
        if best_path.is_file():
            s.model.load_state_dict(load_checkpoint(best_path, map_location=s.device)["model"])
        split = s.data.test if s.data.test is not None else s.data.val
        final = evaluate(
            s.evaluator, split, s.criterion, s.task, s.data.facts.num_classes, precision=s.precision
        )
    results = {
        "task": s.task.name,
        "monitor": s.best.metric,
        "best_value": s.best.best,
        "best_epoch": s.best.best_epoch,
        "last_val": {k.split("/", 1)[1]: v for k, v in s.last_val.items()},
        split_name: final.metrics,
        "epochs": s.position.epoch,
        "steps": s.position.global_step,
        "seconds": round(seconds, 3),
        "history": s.history,
    }
    names = s.data.facts.class_names
    if final.per_class_acc:
        results["per_class_acc"] = {split_name: dict(zip(names, final.per_class_acc))}
        s.board.per_class_accuracy(s.position.global_step, split_name, names, final.per_class_acc)
    if s.writes_files:
        (s.run_dir / "metrics.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
        (s.run_dir / "error.txt").unlink(missing_ok=True)  # an earlier attempt's, now resumed to the end
    s.board.hparams(
        s.position.global_step,
        hparam_values(s.cfg, s.choices),
        final_metrics(results, split_name),
        shown_hparams(_typed_keys()),
    )
    s.board.close()
    s.report.results(results, split_name, names, s.run_dir)
    return results


def _optimized(cfg: DictConfig, results: dict) -> float:
    """The metric a sweeper optimizes, from a run's results (metrics.json)."""
    name = cfg.optimized_metric
    if name == "auto" or name == results["monitor"]:
        return results["best_value"]
    split, _, metric = name.partition("/")
    if split in results and metric in results[split]:
        return results[split][metric]
    raise DlrunError(
        f"optimized_metric={name} is not among this run's results: {results['monitor']}, "
        + ", ".join(f"{k}/{m}" for k in ("val", "test") if k in results for m in results[k])
    )


def _already_finished(cfg: DictConfig, run_dir: Path) -> float:
    results = json.loads((run_dir / "metrics.json").read_text())
    print(
        f"{shell_path(run_dir)} finished already (metrics.json): {results['monitor']} "
        f"{results['best_value']}; nothing to do"
    )
    return _optimized(cfg, results)


def _cut_short(problem: str, fix: str, run_dir: Path, hydra) -> DlrunError:
    """A run the machine stopped (a full disk, a dead worker): what happened, what is intact,
    and the command that resumes it once fixed."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return DlrunError(f"{problem}; no checkpoint was written yet: {fix}, then start the run again")
    command = run_resume_command(_typed(hydra), run_dir)
    return DlrunError(f"{problem}; {shell_path(last)} is intact: {fix}, then resume with: {command}")


def _typed(hydra) -> list[str]:
    """The settings the user typed for this run (a sweep job's own, for a job)."""
    return list(hydra.overrides.task) if hydra is not None else []


def _typed_keys() -> list[str]:
    """The HPARAMS names of the settings typed for this run: `model=cnn` is choice/model."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    keys = [override.split("=", 1)[0].lstrip("+~") for override in _typed(hydra)]
    return [f"choice/{key}" if "." not in key and "/" not in key else key for key in keys]


def parallel_jobs(hydra) -> int:
    """How many jobs of this sweep run at once on this machine (they share its cores)."""
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return 1
    n_jobs = OmegaConf.select(hydra, "launcher.n_jobs", default=1) or 1
    return n_jobs if n_jobs > 0 else os.cpu_count() or 1  # joblib: -1 means one job per core
