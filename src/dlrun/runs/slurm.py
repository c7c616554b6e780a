"""What dlrun adds to submitit on a SLURM cluster (hydra_plugins/dlrun_launcher/slurm_launcher.py
uses it): jobs followed with squeue where sacct has no accounting database, the tasks of a job
joined into one distributed run, and the stop signal of a job that SLURM preempts or is about to
time out.

submitit asks sacct for the state of its jobs; on a cluster without accounting (many small ones)
every poll fails and submitit warns "Bypassing sacct error ... status may be inaccurate", and a
job that died without a result would never be seen as ended. squeue answers on every cluster: a
job keeps its final state there for a while (COMPLETED, FAILED, CANCELLED, TIMEOUT,
OUT_OF_MEMORY), and one it no longer lists has ended too; submitit then reads its result (or
reports that there is none, with the job's error stream).
"""

import logging
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from submitit import JobEnvironment
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from dlrun.runs.folder import SCRATCH_PREFIX
from dlrun.signals import STOP, Interrupted

log = logging.getLogger("dlrun")

ENDED = "ENDED"  # a job squeue no longer lists: done, whatever its result turns out to be


class QueueWatcher(SlurmInfoWatcher):
    """submitit's watcher of SLURM jobs, reading squeue when sacct cannot answer."""

    def __init__(self, delay_s: int = 60):
        super().__init__(delay_s)
        self.accounting: Optional[bool] = None

    def _make_command(self) -> Optional[list[str]]:
        command = super()._make_command()
        if command is None or self._has_accounting():
            return command
        # this user's jobs only: a big cluster's whole queue is not polled
        return ["squeue", "--me", "--states=all", "--array", "--noheader", "--format=%i|%T|%N"]

    def read_info(self, string) -> dict[str, dict[str, str]]:
        if self.accounting:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        listed = super().read_info("JobID|State|NodeList\n" + text)
        for job_id in self._registered - self._finished:
            if job_id not in listed and job_id.split("_")[0] not in listed:
                listed[job_id] = {"JobID": job_id, "State": ENDED, "NodeList": ""}
        return listed

    def _has_accounting(self) -> bool:
        if self.accounting is None:
            probe = subprocess.run(["sacct", "--noheader", "-j", "1"], capture_output=True, text=True)
            self.accounting = probe.returncode == 0
            if not self.accounting:
                log.info("SLURM accounting is off on this cluster (sacct fails): jobs are followed with squeue")
        return self.accounting


def follow_with_squeue() -> None:
    """Every SLURM job submitit submits from now on is followed by a QueueWatcher, which looks
    at most every 30 s (submitit's looks every 10 minutes once a job has run 20)."""
    if not isinstance(SlurmJob.watcher, QueueWatcher):
        SlurmJob.watcher = QueueWatcher(delay_s=30)


def join_tasks(overrides: list[str]) -> list[str]:
    """In a job of several SLURM tasks (hydra.launcher.tasks_per_node, nodes): each task is one
    process of a distributed run, without torchrun. Rank, world size and the master's address
    (the first node of the job, a port from the job id) come from SLURM's environment, set as
    torchrun would set them; a task above rank 0 composes into a scratch folder and trains in
    rank 0's (engine/distributed.py). Returns the task's overrides."""
    from submitit.helpers import TorchDistributedEnvironment

    environment = JobEnvironment()
    if environment.num_tasks < 2:
        return overrides
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if environment.global_rank == 0:
        return overrides
    scratch = f"{SCRATCH_PREFIX}{environment.job_id}-rank{environment.global_rank}"  # removed at the end
    return [
        *overrides,
        f"hydra.sweep.dir={tempfile.gettempdir()}",
        f"hydra.sweep.subdir={scratch}",
        "hydra.output_subdir=null",
    ]


@contextmanager
def requeue_when_signalled() -> Iterator[None]:
    """In a SLURM job: submitit's signal (SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL says otherwise;
    SLURM sends it signal_delay_s before the time limit, and a preemption may) stops training at
    the next step boundary with last.pt saved, as SIGTERM and SIGINT do; then submitit's own
    handler requeues the job, which resumes from last.pt."""
    warned = JobEnvironment._usr_sig()
    requeue = signal.getsignal(warned)  # submitit's, installed before the job started
    STOP.install(extra=(warned,))
    try:
        yield
    except Interrupted as stopped:
        if stopped.signum == warned and callable(requeue):
            log.warning("last.pt is saved: the job is handed back to SLURM to be requeued")
            requeue(warned, None)  # requeues and exits
        raise
    finally:
        STOP.restore()
