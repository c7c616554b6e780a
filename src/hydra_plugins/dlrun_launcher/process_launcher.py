"""Run each job of a sweep in a process of its own, a few at a time, and outlive them.

A job whose process dies (killed, out of memory, a crash in native code) cannot report its own
failure, so this process does: it writes the job's error.txt with the reason and the command that
resumes it, and goes on with the other jobs; the sweep summary then lists it as failed. A stop
signal is passed on to the running jobs, which save last.pt, and the sweep ends with the command
that finishes it (`trainer.resume=auto` into the same sweep folder).

Jobs are forked from this process, which has not imported torch (dlrun loads it in the job), so
each job starts in a fraction of a second with the composed config in hand.
"""

import logging
import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class ProcessLauncherConf:
    _target_: str = "hydra_plugins.dlrun_launcher.process_launcher.ProcessLauncher"
    # jobs running at once; -1: one per CPU core
    n_jobs: int = 2


ConfigStore.instance().store(group="hydra/launcher", name="processes", node=ProcessLauncherConf)


@dataclass
class Job:
    index: int
    overrides: list[str]
    config: DictConfig
    folder: Path
    result_file: Path


class ProcessLauncher(Launcher):
    def __init__(self, n_jobs: int = 2) -> None:
        super().__init__()
        self.n_jobs = n_jobs if n_jobs > 0 else os.cpu_count() or 1
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, {self.n_jobs} at a time, each in its own process")
        with tempfile.TemporaryDirectory(prefix="dlrun-sweep-") as scratch:
            jobs = [
                self._prepare(initial_job_idx + offset, list(overrides), Path(scratch))
                for offset, overrides in enumerate(job_overrides)
            ]
            returns = self._run_all(jobs)
        return [returns[job.index] for job in jobs]

    def _prepare(self, index: int, overrides: list[str], scratch: Path) -> Job:
        config, folder = job_config(self.hydra_context, self.config, overrides, index)
        return Job(index, overrides, config, folder, scratch / f"{index}.pickle")

    def _run_all(self, jobs: list[Job]) -> dict[int, JobReturn]:
        waiting, running, returns = list(jobs), {}, {}
        try:
            while waiting or running:
                while waiting and len(running) < self.n_jobs:
                    job = waiting.pop(0)
                    log.info(f"\t#{job.index} : {' '.join(filter_overrides(job.overrides))}")
                    running[self._start(job)] = job
                pid, status = os.waitpid(-1, 0)
                if pid in running:
                    job = running.pop(pid)
                    returns[job.index] = self._collect(job, status)
        except BaseException as stop:  # a stop signal (dlrun.signals.Interrupted) or Ctrl-C
            self._stop(running, stop)
            raise
        return returns

    def _start(self, job: Job) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(self._child(job))
        return pid

    def _child(self, job: Job) -> int:
        """In the job's process: run it, leave its JobReturn for the parent, exit."""
        code = 1
        try:
            from dlrun.runs.lock import forget_inherited_locks
            from dlrun.signals import STOP

            # a group of its own: Ctrl-C reaches the launcher only, which passes it on once (a
            # second signal would stop the job before it saved); and the job stops with it
            os.setpgid(0, 0)
            _stop_with_parent()
            forget_inherited_locks()
            STOP.install()
            HydraConfig.instance().set_config(job.config)
            result = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=job.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            _save(result, job.result_file)
            code = 0
        except BaseException as error:  # a stop signal too: the parent reads it from the exit code
            code = getattr(error, "exit_code", 1)
            if code == 1:
                import traceback

                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return code

    def _collect(self, job: Job, status: int) -> JobReturn:
        if job.result_file.is_file():
            with open(job.result_file, "rb") as handle:
                return pickle.load(handle)  # written by our own child a moment ago
        return failed_without_result(job.overrides, job.config, job.folder, job.index, _death(status))

    def _stop(self, running: dict[int, Job], stop: BaseException) -> None:
        """Pass the signal on, let each job save its last.pt, then say how to finish the sweep."""
        signum = getattr(stop, "signum", signal.SIGINT)
        for pid in running:
            _signal(pid, signum)
        try:
            for pid in list(running):
                os.waitpid(pid, 0)
        except BaseException:  # a second signal: stop at once
            for pid in running:
                _signal(pid, signal.SIGKILL)
            raise
        from dlrun.runs.commands import sweep_resume_command

        print(f"finish this sweep with: {sweep_resume_command(self.config.hydra)}", file=sys.stderr)


def job_config(hydra_context: HydraContext, config: DictConfig, overrides: list[str], index: int):
    """(a sweep job's config, its folder), as the job itself will compose them."""
    job = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(job):
        job.hydra.job.id = index
        job.hydra.job.num = index
    folder = Path(str(job.hydra.sweep.dir)) / str(OmegaConf.select(job, "hydra.sweep.subdir"))
    return job, folder.resolve()


def failed_without_result(overrides: list[str], config: DictConfig, folder: Path, index: int, reason: str):
    """The JobReturn of a job that ended without reporting: like a job that failed by itself
    (cli._run_job), recorded in its folder (error.txt, with the command that resumes it) and NaN
    for the sweeper, which would otherwise stop the whole sweep on it."""
    from dlrun.runs.commands import run_resume_command
    from dlrun.runs.folder import RunFolder

    text = f"job {index} {reason}; resume it with: {run_resume_command(overrides, folder)}"
    log.error(text)
    folder.mkdir(parents=True, exist_ok=True)
    RunFolder(folder).error.write_text(text + "\n")
    result = JobReturn(overrides=overrides, cfg=config, hydra_cfg=config, working_dir=str(folder))
    result.status = JobStatus.COMPLETED
    result._return_value = float("nan")
    return result


def _save(result: JobReturn, path: Path) -> None:
    result.hydra_cfg = None  # the parent has it; a smaller file
    if result.status == JobStatus.FAILED:  # an exception's traceback does not travel
        result._return_value = RuntimeError(str(result._return_value))
    with open(path, "wb") as handle:
        pickle.dump(result, handle)


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        if os.WTERMSIG(status) == signal.SIGKILL:
            return f"was killed by {name} (the kernel's out-of-memory killer sends it; see dmesg)"
        return f"was killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return f"was stopped by {signal.Signals(code - 128).name}"
    return f"ended with exit code {code} before reporting a result"


def _stop_with_parent() -> None:
    """SIGTERM to this job when the launcher dies (Linux), so that no job trains on, orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
