"""dlrun's SLURM launcher (`hydra/launcher=slurm`): Hydra's submitit launcher, as a sweep of
dlrun needs it on a cluster.

- The jobs go as one SLURM array; each runs in its own folder of the sweep, named as locally.
- A job of several tasks (tasks_per_node, nodes) is one distributed run of that many processes,
  joined from SLURM's environment without torchrun; rank 0 writes.
- A job that SLURM ends without a result (killed, out of memory, cancelled, past its time with
  no requeue left) is recorded like a local job that died: its reason in error.txt and in the
  sweep table, with the command that resumes it; the other jobs' results are kept.
- Jobs are followed with squeue where sacct has no accounting database (dlrun/runs/slurm.py).
- Preemption and time limits lose no work: submitit asks SLURM for SIGUSR1 `signal_delay_s`
  before the limit; the job finishes its step, saves last.pt and is requeued, and the requeued
  job resumes from it (trainer.resume=auto is a SLURM job's default).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.dlrun_launcher.process_launcher import failed_without_result, job_config

try:  # the sweep extra (hydra-submitit-launcher); without it hydra/launcher=slurm is not offered
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
except ImportError:
    submitit_launcher = None
    SlurmQueueConf = object

log = logging.getLogger(__name__)


@dataclass
class DlrunSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.dlrun_launcher.slurm_launcher.SlurmLauncher"
    max_num_timeout: int = 3  # times a job that reaches its time limit is requeued


if submitit_launcher is not None:
    ConfigStore.instance().store(
        group="hydra/launcher", name="dlrun_slurm", node=DlrunSlurmConf, provider="dlrun"
    )


class SlurmLauncher(submitit_launcher.SlurmLauncher if submitit_launcher else object):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from dlrun.runs.slurm import follow_with_squeue

        follow_with_squeue()
        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"], slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"slurm_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        indices = [initial_job_idx + offset for offset in range(len(job_overrides))]
        for index, overrides in zip(indices, job_overrides):
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
        state = Singleton.get_state()
        jobs = executor.map_array(
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(indices),
            indices,
            [f"job_id_for_{index}" for index in indices],
            [state] * len(indices),
        )
        return [
            self._result(job, list(overrides), index)
            for job, overrides, index in zip(jobs, job_overrides, indices)
        ]

    def _result(self, job, overrides: list[str], index: int) -> JobReturn:
        """The job's JobReturn; for a job that ended without one, its reason, recorded."""
        from submitit.core.utils import UncompletedJobError

        try:
            return job.results()[0]
        except UncompletedJobError as error:
            config, folder = job_config(self.hydra_context, self.config, overrides, index)
            reason = _reason(error, job)
            return failed_without_result(overrides, config, folder, index, reason)

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        """The job, on the cluster."""
        from dlrun.runs.slurm import join_tasks, requeue_when_signalled

        if not any(item.lstrip("+").startswith("trainer.resume=") for item in sweep_overrides):
            sweep_overrides = [*sweep_overrides, "trainer.resume=auto"]  # a requeued job resumes
        sweep_overrides = join_tasks(sweep_overrides)
        with requeue_when_signalled():
            return super().__call__(sweep_overrides, *args)


def _reason(error: Exception, job) -> str:
    """Why a SLURM job gave no result, in a clause: its state, and the last line it wrote."""
    state = job.state
    lines = [line for line in (job.stderr() or "").splitlines() if line.strip()]
    last = f" (its last words: {lines[-1].strip()[:200]})" if lines else ""
    return f"ended on SLURM without a result (state {state}, SLURM job {job.job_id}){last}"
