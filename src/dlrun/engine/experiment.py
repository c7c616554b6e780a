"""One experiment, from the composed config to metrics.json: the run's start and its end.

Data flows one way: config -> data (and its facts) -> parts -> train.fit -> results. The config
is read here, at the entry, and turned into the parts, the training state and typed settings
(schema.Trainer); nothing below reads it again.
"""

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from dlrun import metrics
from dlrun.checkpoints.files import check_finite, remove_stale_temporaries
from dlrun.checkpoints.format import read_checkpoint
from dlrun.checkpoints.resume import apply_optimizer_settings, check_resumable
from dlrun.checkpoints.trust import targets
from dlrun.config.brief import brief
from dlrun.config.checks import check_task_settings, doubtful_settings, facts_pending
from dlrun.config.resolvers import rounded
from dlrun.config.schema import YIELDED, Trainer
from dlrun.data import Data, LoadOptions
from dlrun.data.training_length import epochs_for
from dlrun.engine import distributed, runtime
from dlrun.engine.build import build_data, build_sinks, check_targets
from dlrun.engine.first_batch import check_first_batch
from dlrun.engine.state import CheckpointFiles, Monitor, Outputs, Parts, TrainingState, restore
from dlrun.engine.train import build_parts, evaluate, fit
from dlrun.errors import (
    DISK_REFUSED,
    ConfigError,
    DlrunError,
    UserCodeError,
    WrongReturn,
    failed_in_user_code,
    one_line,
)
from dlrun.machine import SlowSteps, usable_cpus
from dlrun.models.summary import ModelSummary, parameter_counts, summarize
from dlrun.quoting import shell_path
from dlrun.reporting.sinks import Finished, Started
from dlrun.reporting.terminal import Report, summary_table
from dlrun.runs.commands import run_resume_command
from dlrun.runs.folder import RunFolder, checkpoint_to_resume
from dlrun.runs.results import final_split, read_results, write_results
from dlrun.signals import STOP, Interrupted

log = logging.getLogger("dlrun")


def run_experiment(cfg: DictConfig, run_dir: Optional[Path] = None) -> float:
    """Run one experiment (its config already passed dlrun.config.checks); returns the metric a
    sweeper optimizes (`optimized_metric`)."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    folder = RunFolder(run_dir or hydra.runtime.output_dir)
    ranks = distributed.from_environment()
    try:
        return _run(cfg, folder, hydra, ranks)
    except DlrunError:
        raise  # one line for the user; the caller writes it to the run's log
    except Interrupted:
        if ranks.is_main and folder.last.is_file():
            print(f"resume with: {run_resume_command(_typed(hydra), folder.path)}", file=sys.stderr)
        raise
    except (RuntimeError, ConnectionError, EOFError) as error:
        if not _worker_died(error):
            raise
        problem = f"a data-loading process died ({_worker_died(error)})"
        fix = "if memory is short, add a lower dataset.num_workers=N"
        raise _cut_short(problem, fix, folder, hydra) from None
    except OSError as error:
        if error.filename is None and error.errno not in DISK_REFUSED:
            raise
        # TensorBoard's writer thread reports a failed write without the file's name
        problem = f"could not write {shell_path(error.filename or folder.path)} ({error.strerror})"
        raise _cut_short(problem, "make room", folder, hydra) from None
    except Exception:
        log.exception("the run failed")
        raise
    finally:
        distributed.stop()
        if ranks.rank > 0:
            distributed.remove_scratch(folder.path)  # this rank's Hydra folder, never the shared one


def _worker_died(error: BaseException) -> str:
    """What torch said of a DataLoader worker that died ("" for any other error): its own
    RuntimeError, or the main process's end of the worker's connection breaking first."""
    if isinstance(error, (ConnectionError, EOFError)):
        return f"its connection broke: {error}"
    said = one_line(error).rstrip(". ")
    if not said.startswith("DataLoader worker"):
        return ""
    # the out-of-memory killer sends SIGKILL: a worker that torch saw killed by another signal
    # (Terminated, Segmentation fault) was not out of memory; one it only saw vanish may have been
    named_another = "killed by signal" in said and "Killed" not in said
    return said if named_another else f"{said}: out of memory?"


def _run(cfg: DictConfig, folder: RunFolder, hydra, ranks: distributed.Ranks) -> float:
    started = time.perf_counter()
    device, threads = set_up_process(cfg, hydra, ranks)
    if ranks.enabled:
        folder = RunFolder(distributed.shared_run_dir(folder.path))
    if cfg.trainer.resume == "auto" and folder.finished():
        return _already_finished(cfg, folder)  # a sweep run again: its finished jobs are not redone
    resume_from = checkpoint_to_resume(cfg.trainer.resume, folder)
    checkpoint = read_checkpoint(resume_from, map_location=device) if resume_from else None
    if checkpoint is not None:
        check_finite(checkpoint["model"], resume_from)
    settings = tuple(targets(OmegaConf.to_container(cfg)))  # (key, _target_) of each
    with users_code(lambda: "while the run was built", config_targets=settings):
        run = _start(cfg, folder, hydra, ranks, device, threads)
    if checkpoint is not None:
        _resume(run, checkpoint, resume_from)
    with users_code(lambda: f"on a first batch of inputs {_shape(run.example)}", True, settings):
        check_first_batch(run.parts, run.example, run.cfg, run.choices, run.trainer)
        run.summary = summarize(run.parts.model, run.example[:2]) if run.example is not None else None
    if run.summary is not None and cfg.terminal.summary:
        run.out.terminal.show(summary_table(run.summary))
    # everything that can refuse the run has been decided: only now is anything written
    if ranks.is_main:
        remove_stale_temporaries(folder.checkpoints)
    with users_code(lambda: _where(run.state), config_targets=settings):
        results = _train(run, hydra, resumed=checkpoint is not None, started=started)
    return _optimized(cfg, results)


@contextlib.contextmanager
def users_code(
    stage: Callable[[], str], theirs: bool = False, config_targets: tuple[tuple[str, str], ...] = ()
):
    """An exception the user's code raised (a forward, a loss, a dataset's __getitem__, in this
    process or a DataLoader worker) becomes one line naming the stage, the setting whose
    `_target_` it was and the user's file; the details keep the user's own frames (and those of
    the installed packages the config's (key, `_target_`) pairs in `config_targets` come from). A fault
    with no user frame keeps its traceback, unless only the user's code ran (`theirs`). What the
    user's code returned wrong (WrongReturn) gets the stage in front of its line."""
    try:
        yield
    except WrongReturn as error:
        raise UserCodeError(f"{stage()}, {error}") from None
    except (DlrunError, Interrupted):
        raise
    except Exception as error:
        packages = frozenset(target.split(".")[0] for _, target in config_targets)
        failed = failed_in_user_code(error, stage(), theirs, packages, config_targets)
        if failed is None:
            raise
        raise failed from None


def _where(state: TrainingState) -> str:
    position = state.position
    if state.scoring == "val":  # the epoch is counted once its validation is done
        return f"validating after epoch {position.epoch + 1} (step {position.global_step})"
    if state.scoring is not None:
        return f"scoring best.pt on {state.scoring}"
    return f"at step {position.global_step + 1} (epoch {position.epoch + 1})"


def _shape(example: Optional[torch.Tensor]) -> list[int]:
    return list(example[:2].shape) if example is not None else []


@dataclass
class Run:
    """A run as it starts: the config as it uses it, and what it is made of."""

    cfg: DictConfig  # resolved, with the data's facts and the training length as numbers
    trainer: Trainer
    parts: Parts
    state: TrainingState
    out: Outputs
    choices: dict[str, str]  # the option chosen in each group
    example: Optional[torch.Tensor]  # a batch of validation inputs
    summary: Optional[ModelSummary] = None  # its layers on that batch, once it went through


def set_up_process(cfg: DictConfig, hydra, ranks: distributed.Ranks) -> tuple[torch.device, int]:
    """Threads, device, process group, determinism and seeds: set for every job, as a reused
    worker process (joblib) would otherwise keep the last job's."""
    jobs = parallel_jobs(hydra)
    threads = runtime.configure_threads(cfg.trainer.num_threads, jobs * ranks.local_world_size)
    device = runtime.select_device(cfg.trainer.device, slot=_device_slot(hydra, jobs, ranks))
    if ranks.enabled:
        distributed.start(device, ranks)
    runtime.set_deterministic(cfg.trainer.deterministic)
    runtime.seed_everything(cfg.seed)  # the same on every rank: resuming restores rank 0's state
    return device, threads


def _start(cfg: DictConfig, folder: RunFolder, hydra, ranks: distributed.Ranks, device, threads: int) -> Run:
    """Check the code the config names, load the data, build the parts, say what was built."""
    choices = dict(hydra.runtime.choices) if hydra is not None else {}
    terminal = Report(cfg.terminal.progress) if ranks.is_main else Report("off", console=Console(quiet=True))
    pending, task = checked(cfg, choices)
    sinks = build_sinks(pending.logger if ranks.is_main else {}, folder, terminal)  # rank 0 logs for all
    cfg, trainer, parts = assembled(cfg, pending, task, device, ranks)
    data = parts.data
    terminal.table = parts.metrics
    chosen = OmegaConf.to_container(cfg.metrics, resolve=True)
    if chosen:  # metrics=[...] also chooses what the epoch row shows
        terminal.shown = tuple(entry if isinstance(entry, str) else entry["name"] for entry in chosen)
    terminal.pace = SlowSteps(threads, usable_cpus()) if device.type == "cpu" else None
    files = CheckpointFiles(
        folder, OmegaConf.to_container(cfg, resolve=True), data.facts, writes=ranks.is_main
    )
    run = Run(
        cfg,
        trainer,
        parts,
        _fresh_state(trainer, task, parts.metrics),
        Outputs(terminal, sinks, files),
        choices,
        _example_batch(data),
    )
    _show_config(terminal, cfg, choices, hydra, folder)
    for group, name in choices.items():
        if name in YIELDED.get(group, ()):
            terminal.line(
                f"{group}={name} is your project's configs/{group}/{name}.yaml, not dlrun's own {name}"
            )
    for doubt in doubtful_settings(cfg):
        terminal.warn(doubt)
    terminal.line(
        f"device {device}{_ranks_text(ranks)}, {threads} CPU thread(s), {parameter_counts(parts.model)}"
    )
    terminal.line(_data_line(data))
    if trainer.ema.decay is not None:
        terminal.line(
            f"validation, best.pt, dlrun-eval and dlrun-predict use the moving average of the "
            f"weights (trainer.ema.decay={trainer.ema.decay})"
        )
    if parts.mixing is not None:
        terminal.line(
            f"training batches mixed ({parts.mixing}): train acc counts the label with the larger "
            "share of each mixed image"
        )
    for note in data.facts.notes:
        terminal.warn(note)
    if data.facts.skipped_files:
        terminal.warn(
            f"left out {data.facts.skipped_files} unreadable image file(s) "
            f"(dataset.bad_images=skip; each is named in {folder.log})"
        )
    return run


def checked(cfg: DictConfig, choices: dict) -> tuple[DictConfig, str]:
    """(the config with `${facts.NAME}` reading None until the data is loaded, the task): the
    user's code the config names is imported and checked before any data is read."""
    pending = facts_pending(cfg)
    task = check_targets(pending)
    check_task_settings(pending, task, choices)
    return pending, task


def assembled(
    cfg: DictConfig, pending: DictConfig, task: str, device: torch.device, ranks: distributed.Ranks
) -> tuple[DictConfig, Trainer, Parts]:
    """The data loaded and the parts built: (the config as the run uses it, with the data's facts,
    which is what is saved and shown; the trainer's settings; the parts)."""
    data = build_data(pending.dataset, _load_options(pending, task, device, ranks))
    cfg = _with_facts(cfg, data)
    trainer = _trainer_settings(cfg)
    if trainer.batch_size < ranks.world_size:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is the global batch: it must be at least "
            f"the number of processes ({ranks.world_size})"
        )
    return cfg, trainer, build_parts(cfg, data, task, device, ranks)


def _resume(run: Run, checkpoint: dict[str, Any], path: Path) -> None:
    """Continue from `checkpoint`, whose config must be this run's (unless trainer.resume_force)."""
    check_resumable(checkpoint["config"], run.cfg, path)
    restore(run.parts, run.state, checkpoint, path)
    if run.trainer.resume_force:
        apply_optimizer_settings(run.parts.optimizer, run.cfg.optimizer)
    position = run.state.position
    run.out.terminal.line(f"resumed from {path} at epoch {position.epoch + 1}, step {position.global_step}")


def _train(run: Run, hydra, resumed: bool, started: float) -> dict[str, Any]:
    """Open the loggers, train, score best.pt, and tell the loggers and the terminal the results."""
    out, parts, config = run.out, run.parts, run.out.checkpoints.config
    facts = parts.data.facts
    try:
        out.sinks.start(run.state.position.global_step if resumed else None)
        if not resumed:
            out.sinks.run_started(
                Started(config, OmegaConf.to_yaml(run.cfg), parts.model, run.example, facts, run.summary)
            )
        if out.checkpoints.writes:
            OmegaConf.save(run.cfg, out.folder.config)
        with STOP.deferred():  # a signal now finishes the step and saves before stopping
            fit(parts, run.state, out, run.trainer)
        results = _finish(parts, run.state, out, run.trainer, time.perf_counter() - started)
        split = final_split(results)
        trial = _trial(hydra, out.folder)
        out.sinks.finished(Finished(results, split, config, run.choices, facts.class_names, trial))
    except BaseException:
        _close_after_failure(out)
        raise
    out.sinks.close()
    out.terminal.results(results, split, facts.class_names, out.folder.path)
    return results


def _close_after_failure(out: Outputs) -> None:
    """The loggers closed on the way out of a failed run; the run's own error is the one to say
    (closing on a full disk fails again)."""
    try:
        out.sinks.close()
    except Exception as error:
        log.warning("a logger could not be closed: %s", error)


def _load_options(cfg: DictConfig, task: str, device: torch.device, ranks: distributed.Ranks) -> LoadOptions:
    trainer = cfg.trainer
    return LoadOptions(
        task=task,
        seed=cfg.seed,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        device=device,
        channels_last=trainer.channels_last,
        deterministic=trainer.deterministic,
        shard=ranks.shard,
        accumulate=trainer.accumulate_grad_batches,
    )


def _with_facts(cfg: DictConfig, data: Data) -> DictConfig:
    """The config as the run really uses it: resolved, with the data's facts filled in and the
    `auto` training length made a number of epochs and a batch size."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.facts = data.facts.for_config()  # before resolving: `${facts.num_classes}` reads it
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer = resolved["trainer"]
    # the data layer resolved `auto` when it batched; a batch holds the accumulated micro-batches
    trainer["batch_size"] = data.train.batch_size // trainer["accumulate_grad_batches"]
    trainer["epochs"] = epochs_for(trainer["epochs"], len(data.train))
    out = OmegaConf.create(resolved)
    OmegaConf.set_struct(out, True)
    return out


def _trainer_settings(cfg: DictConfig) -> Trainer:
    """The trainer's settings as a plain dataclass: read every step, where a config node would
    cost microseconds per read."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Trainer), cfg.trainer))


def _fresh_state(trainer: Trainer, task: str, table: dict[str, metrics.Metric]) -> TrainingState:
    """The monitors of best.pt and early stopping, at the start of a run."""
    metric = metrics.monitored(trainer.monitor, task)
    early = None
    stopping = trainer.early_stopping
    if stopping.enabled:
        name = metric if stopping.monitor == "auto" else stopping.monitor
        mode = metrics.better_of(name, table) if stopping.mode == "auto" else stopping.mode
        early = Monitor(name, mode, patience=stopping.patience, min_delta=stopping.min_delta)
    return TrainingState(best=Monitor(metric, metrics.better_of(metric, table)), early=early)


def _show_config(terminal: Report, cfg: DictConfig, choices: dict, hydra, folder: RunFolder) -> None:
    """For a run, each group's option and what differs from its defaults; for a sweep job, where
    even that would bury the results, the settings typed for it (terminal.config chooses)."""
    view = cfg.terminal.config
    if view == "auto":
        view = "overrides" if hydra is not None and hydra.mode == RunMode.MULTIRUN else "brief"
    if view == "full":
        terminal.config(cfg, choices)
    elif view == "brief":
        terminal.brief_config(brief(cfg, choices), f"terminal.config=full, or {shell_path(folder.config)}")
    elif view == "overrides":
        typed = " ".join(rounded(item) for item in _typed(hydra)) or "the defaults"
        terminal.line(f"settings: {typed}   (the whole config: {shell_path(folder.config)})")


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


def _example_batch(data: Data) -> Optional[torch.Tensor]:
    # from the validation split: drawing from the training batches would move their generator
    for inputs, _ in data.val:
        return inputs[:64]
    return None


def _finish(
    parts: Parts, state: TrainingState, out: Outputs, trainer: Trainer, seconds: float
) -> dict[str, Any]:
    """Score best.pt on the final split (trainer.limit_test_batches of it) and write metrics.json."""
    data, folder = parts.data, out.folder
    split_name = "test" if data.test is not None else "val"
    if split_name == "val" and state.best_val is not None:
        final = state.best_val  # best.pt's weights, scored on val when they were saved
    else:
        if folder.best.is_file():
            parts.scored().load_state_dict(read_checkpoint(folder.best, map_location=parts.device)["model"])
        split = data.test if data.test is not None else data.val
        limit = trainer.limit_test_batches
        steps = len(split) if limit is None else min(limit, len(split))
        scoring = out.terminal.pass_progress(f"scoring best.pt on {split_name}", steps)
        with scoring as progress, state.scored(split_name):
            final = evaluate(
                parts.evaluator,
                split,
                parts.criterion,
                parts.task,
                parts.measured,
                data.facts.num_classes,
                precision=parts.precision,
                limit=limit,
                progress=progress,
            )
    results = {
        "task": parts.task.name,
        "monitor": state.best.metric,
        "best_value": state.best.best,
        "best_epoch": state.best.best_epoch,
        "last_val": {k.split("/", 1)[1]: v for k, v in state.last_val.items()},
        split_name: final.metrics,
        "epochs": state.position.epoch,
        "steps": state.position.global_step,
        "seconds": round(seconds, 3),
        "history": state.history,
    }
    names = data.facts.class_names
    if final.per_class_acc:  # each class's recall, and its precision
        results["per_class_acc"] = {split_name: dict(zip(names, final.per_class_acc))}
        results["per_class_precision"] = {split_name: dict(zip(names, final.per_class_precision))}
    if out.checkpoints.writes:
        write_results(folder, results)
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


def _already_finished(cfg: DictConfig, folder: RunFolder) -> float:
    results = read_results(folder)
    print(
        f"{shell_path(folder.path)} finished already (metrics.json): {results['monitor']} "
        f"{results['best_value']}; nothing to do"
    )
    return _optimized(cfg, results)


def _cut_short(problem: str, fix: str, folder: RunFolder, hydra) -> DlrunError:
    """A run the machine stopped (a full disk, a dead worker): what happened, what is intact,
    and the command that resumes it once fixed."""
    if not folder.last.is_file():
        return DlrunError(f"{problem}; no checkpoint was written yet: {fix}, then start the run again")
    command = run_resume_command(_typed(hydra), folder.path)
    return DlrunError(f"{problem}; {shell_path(folder.last)} is intact: {fix}, then resume with: {command}")


def _trial(hydra, folder: RunFolder) -> str:
    """A run's name where runs are compared: its folder's; a sweep job's with its sweep's, so
    that jobs of two sweeps never share one."""
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        return f"{Path(hydra.sweep.dir).name}/{folder.name}"
    return folder.name


def _typed(hydra) -> list[str]:
    """The settings the user typed for this run (a sweep job's own, for a job)."""
    return list(hydra.overrides.task) if hydra is not None else []


def parallel_jobs(hydra) -> int:
    """How many jobs of this sweep run at once on this machine (they share its cores)."""
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return 1
    n_jobs = OmegaConf.select(hydra, "launcher.n_jobs", default=1) or 1
    return n_jobs if n_jobs > 0 else os.cpu_count() or 1  # joblib: -1 means one job per core
