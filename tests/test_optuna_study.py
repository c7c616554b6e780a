"""An Optuna search (`hparams_search=wine_optuna`) whose study lives in optuna.db in the sweep
folder: killed after some trials it continues with the same command to n_trials in all, and two
sweeper processes sharing the study finish n_trials between them, none twice."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed")

from dlrun.runs.optuna_search import SKIPPED  # noqa: E402 - and its fix for Optuna 2.10 on SQLAlchemy 2


def search(folder: Path, trials: int, *settings: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dlrun",
        "hparams_search=wine_optuna",
        f"hydra.sweeper.n_trials={trials}",
        "trainer.epochs=3",
        f"hydra.sweep.dir={folder}",
        *settings,
    ]


def counted(database: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="wine_mlp", storage=f"sqlite:///{database}")
    return [trial for trial in study.get_trials() if not trial.user_attrs.get(SKIPPED)]


def finished_jobs(folder: Path) -> list[Path]:
    return sorted(path.parent for path in folder.glob("*/metrics.json"))


def test_a_killed_search_continues_with_the_same_command_to_n_trials(tmp_path):
    folder = tmp_path / "search"
    first = subprocess.Popen(
        search(folder, 5), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(finished_jobs(folder)) < 2 or len(list(folder.glob("2_*"))) == 0:
        assert time.monotonic() < deadline and first.poll() is None, "two trials did not finish"
        time.sleep(0.05)  # two trials done and the third one's job started
    first.send_signal(signal.SIGKILL)  # no chance to say anything: its running trial is abandoned
    first.wait()
    kept = {path: (path / "metrics.json").stat().st_mtime for path in finished_jobs(folder)}

    again = subprocess.run(search(folder, 5), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "trials done" in again.stdout + again.stderr
    trials = counted(folder / "optuna.db")
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert all((path / "metrics.json").stat().st_mtime == mtime for path, mtime in kept.items())  # not rerun
    jobs = sorted(trial.user_attrs["dlrun_job"] for trial in trials)
    assert jobs == sorted(int(path.name.split("_")[0]) for path in finished_jobs(folder)) and 2 in jobs
    (stopped,) = folder.glob("2_*")  # the trial the kill interrupted: finished in its own folder
    assert (stopped / "metrics.json").is_file() and len(list(folder.glob("*_*/"))) == 5


def test_two_sweeper_processes_share_one_study_and_run_n_trials_between_them(tmp_path):
    """Each sweeper has a sweep folder of its own (one writer per folder); the study is shared."""
    database = tmp_path / "study.db"
    processes = [
        subprocess.Popen(
            search(tmp_path / f"sweeper{index}", 6, f"hydra.sweeper.storage=sqlite:///{database}"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    trials = counted(database)
    assert len(trials) == 6 and all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    settings = [tuple(sorted(trial.params.items())) for trial in trials]
    assert len(set(settings)) == 6  # no settings drawn twice
    jobs = [
        path.name.split("_")[0] for index in range(2) for path in finished_jobs(tmp_path / f"sweeper{index}")
    ]
    assert sorted(jobs, key=int) == sorted(str(trial.number) for trial in trials)  # a folder per trial
    assert all(finished_jobs(tmp_path / f"sweeper{index}") for index in range(2))  # both took part
