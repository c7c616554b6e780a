"""The search loop of `hparams_search=...` (hydra/sweeper=dlrun_optuna, whose plugin imports this
module once a search starts): hydra-optuna-sweeper's, with the study's state kept in its
database and trusted over this process's.

- `n_trials` is the study's total: a search run again after a stop asks only for what is
  missing, and several processes sharing one study stop together at n_trials. Each trial is
  checked against the study right after it is asked (trial numbers come from the database in
  order), so two processes never run more than n_trials between them.
- Every trial records the process that runs it. A trial left running by a process that is gone
  (killed, crashed, its machine lost) or stopped by a signal is set aside (failed, marked
  skipped, not counted) and its settings are asked for again, first.
- Each trial is sampled from a random stream of its own (the sampler's seed plus the trial's
  number): processes sharing a study, or a search run again, never draw the same first settings.
- Job folders are numbered by trial number: unique in the sweep folder across processes and
  restarts. A trial set aside is asked for again by its settings and runs in the set-aside
  trial's folder with trainer.resume=auto: it resumes from that job's last.pt.
"""

import contextlib
import datetime
import fcntl
import logging
import math
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import alembic.migration
import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.storages._rdb import storage as rdb_storage
from optuna.trial import Trial, TrialState

log = logging.getLogger("dlrun")


def _stamp_in_a_transaction(self, revision: str) -> None:
    # Optuna 2.10 (the newest hydra-optuna-sweeper 1.3 takes) stamps its schema version on a
    # connection it never commits: SQLAlchemy 2 (which MLflow's store needs) then drops it, and
    # every later open of the database fails. The same stamp, committed.
    with self.engine.begin() as connection:
        alembic.migration.MigrationContext.configure(connection).stamp(
            self._create_alembic_script(), revision
        )


rdb_storage._VersionManager._set_alembic_revision = _stamp_in_a_transaction

PROCESS = "dlrun_process"  # host:pid of the sweeper process that runs the trial
UNNAMED_FOR = datetime.timedelta(minutes=10)  # a running trial no process named: abandoned after this
SKIPPED = "dlrun_skipped"  # beyond n_trials, abandoned or stopped: not counted
JOB = "dlrun_job"  # the job number (folder) the trial ran as


class SurvivingSearch(OptunaSweeperImpl):
    _set_aside_jobs: dict[tuple, int]

    def sweep(self, arguments: list[str]) -> None:
        self._set_aside_jobs = {}
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments)
        )
        space = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            space.pop(name, None)
        directions = self._get_directions()
        study = self._study(directions)
        self._retry_abandoned(study)
        while trials := self._ask(study, self.n_jobs):
            overrides, jobs = [], []
            for trial in trials:  # sampled now, from a stream of this trial's own
                _reseed(self.sampler, self._seed + trial.number)
                overrides += self._configure_trials([trial], space, fixed)
                jobs.append(self._job_of(trial))
                if jobs[-1] != trial.number:  # the set-aside trial's job, resumed in its folder
                    overrides[-1] = (*overrides[-1], "trainer.resume=auto")
            try:
                returns = self._launch(jobs, overrides)
            except BaseException:  # a stop signal: these trials are asked for again next time
                for trial in trials:
                    self._set_aside(study, trial)
                raise
            for trial, result in zip(trials, returns):
                _tell(study, trial, result, len(directions))
        self._save_results(study, directions)

    @property
    def _seed(self) -> int:
        return int(OmegaConf.select(self.config, "hydra.sweeper.sampler.seed", default=None) or 0)

    def _study(self, directions: list[Any]) -> optuna.Study:
        folder = Path(str(self.config.hydra.sweep.dir)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.storage = self.storage or f"sqlite:///{folder / 'optuna.db'}"
        with _one_at_a_time(self.storage):
            study = optuna.create_study(
                study_name=self.study_name or "dlrun",
                storage=self.storage,
                sampler=self.sampler,
                directions=directions,
                load_if_exists=True,
            )
        finished = len([t for t in study.get_trials(deepcopy=False) if _counted(t) and t.state.is_finished()])
        log.info(
            f"Optuna study {study.study_name} in {self.storage}: {finished} of {self.n_trials} trials done"
        )
        return study

    def _retry_abandoned(self, study: optuna.Study) -> None:
        """Trials left running by a process of this machine that is gone are asked for again."""
        here, now = socket.gethostname(), datetime.datetime.now()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, _, pid = str(trial.user_attrs.get(PROCESS, "")).rpartition(":")
            gone = host == here and pid.isdigit() and not _alive(int(pid))
            # a process that died between asking for a trial and naming itself on it
            unnamed = not pid and trial.datetime_start and now - trial.datetime_start > UNNAMED_FOR
            if gone or unnamed:
                log.info(f"trial {trial.number} was left running by a process that is gone: asked for again")
                self._set_aside(study, trial)

    def _ask(self, study: optuna.Study, wanted: int) -> list[Trial]:
        """Up to `wanted` new trials, none beyond the study's n_trials."""
        asked = []
        for _ in range(wanted):
            if len([t for t in study.get_trials(deepcopy=False) if _counted(t)]) >= self.n_trials:
                break
            trial = study.ask()
            trial.set_user_attr(PROCESS, f"{socket.gethostname()}:{os.getpid()}")
            before = [t for t in study.get_trials(deepcopy=False) if t.number <= trial.number and _counted(t)]
            if len(before) > self.n_trials:
                trial.set_user_attr(SKIPPED, True)
                study.tell(trial, state=TrialState.FAIL)
                break
            asked.append(trial)
        return asked

    def _job_of(self, trial: Trial) -> int:
        """The job number (folder) of a trial: its own number, or that of the trial it takes
        over from, whose job then resumes from its last.pt."""
        job = self._set_aside_jobs.pop(_key(trial.params), trial.number)
        trial.set_user_attr(JOB, job)
        return job

    def _set_aside(self, study: optuna.Study, trial) -> None:
        """Failed and not counted; its settings are the next ones asked for, in its job's folder."""
        Trial(study, trial._trial_id).set_user_attr(SKIPPED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(trial.params)
        self._set_aside_jobs[_key(trial.params)] = trial.user_attrs.get(JOB, trial.number)

    def _launch(self, jobs: list[int], overrides) -> list:
        if jobs == list(range(jobs[0], jobs[0] + len(jobs))):
            return list(self.launcher.launch(overrides, initial_job_idx=jobs[0]))
        return [self.launcher.launch([one], initial_job_idx=job)[0] for one, job in zip(overrides, jobs)]

    def _save_results(self, study: optuna.Study, directions: list[Any]) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return
        if len(directions) < 2:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
            }
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")


def _tell(study: optuna.Study, trial: Trial, result, objectives: int) -> None:
    try:
        value = result.return_value
        values = [float(value)] if objectives == 1 else [float(v) for v in value]
    except Exception as error:  # noqa: BLE001 - the job's own failure, reported by the sweep table
        log.warning(f"trial {trial.number} failed: {error}")
        study.tell(trial, state=TrialState.FAIL)
        return
    if any(math.isnan(v) for v in values):  # a dlrun job that failed returns NaN
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, values=values)


@contextlib.contextmanager
def _one_at_a_time(storage: str) -> Iterator[None]:
    """Processes of this machine open a SQLite study one at a time: two creating its tables at
    once would fail ("table studies already exists"). A server database locks for itself."""
    if not storage.startswith("sqlite:///"):
        yield
        return
    with open(storage.removeprefix("sqlite:///") + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _reseed(sampler, seed: int) -> None:
    """The sampler's random streams (numpy's, in Optuna 2.10's samplers) started at `seed`:
    trials of one study sampled by several processes, or by a search run again, each draw from a
    stream of their own instead of the same first draws; the same search still draws the same."""
    for value in vars(sampler).values():
        if hasattr(value, "seed") and hasattr(value, "randint"):  # a numpy RandomState
            value.seed(seed % 2**32)
        elif isinstance(value, optuna.samplers.BaseSampler):
            _reseed(value, seed)


def _counted(trial: optuna.trial.FrozenTrial) -> bool:
    return not trial.user_attrs.get(SKIPPED)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((name, repr(value)) for name, value in params.items()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
