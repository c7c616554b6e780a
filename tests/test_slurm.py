"""Sweeps on a real one-node SLURM cluster (tools/slurm_cluster.sh, started by the slurm_cluster
fixture): jobs as an array, failures with their reasons, and a job signalled before its time
limit that saves, is requeued and ends exactly where an uninterrupted run ends."""

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import read_events

pytestmark = pytest.mark.slurm
pytest.importorskip("submitit", reason="the sweep extra is not installed")

ON_THE_CLUSTER = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]


def dlrun(cwd: Path, *args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **options,
    )


def test_a_sweep_runs_as_a_slurm_array_and_a_failing_job_says_why(slurm_cluster, tmp_path):
    result = dlrun(
        tmp_path, "-m", *ON_THE_CLUSTER, "optimizer.lr=0.01,-1", "trainer.epochs=2", "hydra.sweep.dir=sweep"
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "sweep: 2 jobs, 1 failed" in output
    assert "job 1 failed: optimizer.lr=-1.0 is out of range" in output
    assert "Bypassing sacct" not in output and output.count("accounting") <= 1  # small clusters have none
    rows = list(csv.DictReader((tmp_path / "sweep" / "sweep_summary.csv").open()))
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert (tmp_path / "sweep" / "0_lr-0.01_epochs-2" / "checkpoints" / "best.pt").is_file()
    array = sorted(path.name for path in (tmp_path / "sweep" / ".submitit").iterdir() if path.is_dir())[1:]
    assert array == [f"{array[0].split('_')[0]}_{task}" for task in (0, 1)]  # one SLURM array, 2 tasks


def test_a_job_that_slurm_kills_is_recorded_with_its_reason(slurm_cluster, tmp_path, data_root):
    sweep = long_sweep(tmp_path, data_root)
    job = job_once_training(tmp_path / "sweep")
    subprocess.run(["scancel", "--signal=KILL", job], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, output
    assert re.search(
        rf"job 0 failed: job 0 ended on SLURM without a result \(state \w+, SLURM job {job}", output
    )
    (folder,) = (tmp_path / "sweep").glob("0_*")
    assert "resume it with: dlrun" in (folder / "error.txt").read_text()


def test_a_job_signalled_before_its_time_limit_is_requeued_and_ends_bitwise_as_if_never_stopped(
    slurm_cluster, tmp_path, data_root
):
    sweep = long_sweep(tmp_path, data_root)
    job = job_once_training(tmp_path / "sweep")
    # what SLURM sends signal_delay_s before the time limit (submitit asks for it with --signal)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    release_when_requeued(job, tmp_path / "sweep")
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    (folder,) = (tmp_path / "sweep").glob("0_*")
    log = (folder / "dlrun.log").read_text()
    stopped = int(re.search(r"stopped at step (\d+); state saved", log)[1])
    assert f"resumed from {folder / 'checkpoints' / 'last.pt'} at epoch" in log and f"step {stopped}" in log
    assert (
        "Restarts=1"
        in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    )

    straight = dlrun(tmp_path, *long_run(data_root), "hydra.run.dir=straight")
    assert straight.returncode == 0, straight.stderr
    resumed = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]
    uninterrupted = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in resumed)
    steps = [event.step for event in read_events(folder).Scalars("train/loss")]
    expected = [event.step for event in read_events(tmp_path / "straight").Scalars("train/loss")]
    # none logged twice, none missing; the stop logs its part of an interval at its own step
    assert len(steps) == len(set(steps)) and sorted(set(steps) - set(expected)) in ([], [stopped])
    assert set(expected) <= set(steps)


def long_sweep(cwd: Path, data_root: Path) -> subprocess.Popen:
    """A sweep of one long_run job on the cluster, into cwd/sweep, left running."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", "-m", *ON_THE_CLUSTER, *long_run(data_root), "hydra.sweep.dir=sweep"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def long_run(data_root: Path) -> list[str]:
    """About 30 steps an epoch for 40 epochs: long enough to be signalled mid-epoch."""
    return [
        "dataset=mnist",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "model=mlp",
        "model.hidden_sizes=[32]",
        "trainer.batch_size=8",
        "trainer.epochs=40",
        "trainer.deterministic=true",
        "trainer.num_threads=1",
        "trainer.log_every_n_steps=5",
    ]


def job_once_training(sweep: Path) -> str:
    """The SLURM job id of the sweep's one job, once it has saved its first last.pt."""
    deadline = time.monotonic() + 120
    while not list(sweep.glob("0_*/checkpoints/last.pt")):
        assert time.monotonic() < deadline, "the job did not start training within 2 minutes"
        time.sleep(0.1)
    (submitted,) = [path.name for path in (sweep / ".submitit").iterdir() if path.is_dir()]
    return submitted.split("_")[0]


def release_when_requeued(job: str, sweep: Path) -> None:
    """SLURM holds a requeued job about two minutes (Reason=BeginTime) before it may start
    again: started sooner here, once the killed run's processes are gone and the second in which
    its node revoked the job's credential has passed (a launch from that same second is refused,
    "Job credential revoked", and the job ends FAILED)."""
    deadline = time.monotonic() + 60
    while (
        "Reason=BeginTime"
        not in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    ):
        assert time.monotonic() < deadline, "the job was not requeued"
        time.sleep(0.2)
    # srun and the job's Python name the job's folder on their command lines
    while subprocess.run(["pgrep", "-f", str(sweep / ".submitit")], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the requeued job's first run did not end"
        time.sleep(0.2)
    time.sleep(1.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)


def test_two_slurm_tasks_are_one_distributed_run_that_matches_one_process(slurm_cluster, tmp_path, data_root):
    from tests.test_distributed import SETTINGS

    settings = [*SETTINGS, f"dataset.root={data_root}", "trainer.epochs=2"]
    swept = dlrun(
        tmp_path, "-m", *ON_THE_CLUSTER, "hydra.launcher.tasks_per_node=2", *settings, "hydra.sweep.dir=ddp"
    )
    assert swept.returncode == 0, swept.stdout + swept.stderr
    (folder,) = (tmp_path / "ddp").glob("0_*")
    assert "(rank 0 of 2 processes)" in (folder / "dlrun.log").read_text()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    single = dlrun(tmp_path, *settings, "hydra.run.dir=single")
    assert single.returncode == 0, single.stderr
    two = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]
    one = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert max((one[key] - two[key]).abs().max().item() for key in one) < 1e-5
