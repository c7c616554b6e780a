"""Sweeps: every job in its own folder, failures contained and summarized, parallel and Optuna."""

import csv
import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from dlrun.config.resolvers import direction, short_overrides
from dlrun.quoting import HYDRA_PLAIN
from tests.helpers import compose_config, hparams


def sweep_folder(root: Path) -> Path:
    folders = list((root / "runs" / "multirun").glob("*/*"))
    assert len(folders) == 1, folders
    return folders[0]


def test_a_failing_job_does_not_stop_the_others(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "dataset=wine", "optimizer.lr=0.001,-1,0.01", "trainer.epochs=2")
    assert result.code == 1
    assert "1 of 3 sweep jobs failed (job 1;" in result.err and result.err.count("\n") == 1
    assert (
        "run only those with: dlrun -m dataset=wine optimizer.lr=0.001,-1,0.01 trainer.epochs=2" in result.err
    )
    assert result.err.rstrip().endswith("trainer.resume=auto")
    folder = sweep_folder(tmp_path)
    jobs = sorted(path.name for path in folder.iterdir() if path.is_dir())
    # the swept setting first, where the jobs differ
    assert jobs == [
        "0_lr-0.001_dataset-wine_epochs-2",
        "1_lr--1_dataset-wine_epochs-2",
        "2_lr-0.01_dataset-wine_epochs-2",
    ]
    assert (folder / jobs[0] / "metrics.json").is_file() and (folder / jobs[2] / "metrics.json").is_file()
    failed = folder / jobs[1]
    assert "optimizer.lr=-1.0 is out of range" in (failed / "error.txt").read_text()
    assert "optimizer.lr=-1.0 is out of range" in (failed / "dlrun.log").read_text()

    rows = list(csv.DictReader(open(folder / "sweep_summary.csv")))
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert (
        rows[0]["overrides"] == "dataset=wine optimizer.lr=0.001 trainer.epochs=2"
        and rows[0]["metric"] == "val/acc"
    )
    assert float(rows[2]["value"]) > 0.5 and float(rows[0]["seconds"]) > 0
    assert json.loads((folder / "sweep_summary.json").read_text())[1]["status"] == "failed"
    assert "sweep: 3 jobs, 1 failed" in result.out
    assert "job 1 failed: optimizer.lr=-1.0 is out of range" in result.out
    # the table shows what differs between the jobs; what they share is said once, above it
    assert "every job: dataset=wine trainer.epochs=2" in result.out
    header = next(line for line in result.out.splitlines() if " job " in line and " status " in line)
    assert " val/acc " in header and " metric " not in header  # one metric names the value column
    first = next(line for line in result.out.splitlines() if line.startswith("│   0 │"))
    assert "optimizer.lr=0.001" in first and "dataset=wine" not in first
    best = 0 if float(rows[0]["value"]) >= float(rows[2]["value"]) else 2
    assert f"best: job {best} (val/acc {float(rows[best]['value']):.2%}): optimizer.lr=" in result.out


def test_every_job_gets_its_own_tensorboard_row_with_the_swept_keys(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,0.003,0.01", "model=mlp,linear", "trainer.epochs=1")
    assert result.code == 0, result.err
    folder = sweep_folder(tmp_path)
    rows = [hparams(job) for job in sorted(path for path in folder.iterdir() if path.is_dir())]
    assert len(rows) == 6
    assert {values["optimizer.lr"] for values, _, _ in rows} == {0.001, 0.003, 0.01}
    assert {values["choice/model"] for values, _, _ in rows} == {"mlp", "linear"}
    assert all(
        final == ["whole_run/epochs", "whole_run/test_acc", "whole_run/test_loss", "whole_run/val_acc_best"]
        for _, final, _ in rows
    )  # the same metrics in every row: the charts draw
    assert all(trial.startswith(f"{folder.name}/") for _, _, trial in rows)  # the sweep, then the job
    assert len({trial for _, _, trial in rows}) == 6


def test_parallel_jobs_with_joblib_share_the_cores(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp,linear", "trainer.epochs=2"
    )
    assert result.code == 0, result.err
    folder = sweep_folder(tmp_path)
    jobs = [path for path in folder.iterdir() if path.is_dir()]
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "metrics.json").is_file()
        assert "1 CPU thread(s)" in (job / "dlrun.log").read_text()  # 2 cores / 2 jobs
    assert [row["status"] for row in json.loads((folder / "sweep_summary.json").read_text())] == ["ok", "ok"]


def test_an_optuna_search_on_wine(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("hparams_search=wine_optuna", "hydra.sweeper.n_trials=3", "trainer.epochs=5")
    assert result.code == 0, result.err
    folder = sweep_folder(tmp_path)
    rows = json.loads((folder / "sweep_summary.json").read_text())
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(row["value"] for row in rows))  # the task returned val/acc
    assert set(best["best_params"]) == {"optimizer.lr", "model.dropout", "trainer.batch_size"}
    # the terminal: no plugin noise, floats to 4 significant digits, the best job named once
    assert "setup plugin" not in result.out and "A new study created" not in result.out + result.err
    assert "Best parameters" not in result.out
    lr = best["best_params"]["optimizer.lr"]
    assert f"optimizer.lr={lr:.4g} " in result.out and f"settings: optimizer.lr={lr} " not in result.out
    winner = max(rows, key=lambda row: row["value"])
    assert f"best: job {winner['job']} (val/acc {winner['value']:.2%}): optimizer.lr={lr:.4g} " in result.out


def test_the_launcher_presets_compose():
    slurm = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu" and slurm.gpus_per_node == 1
    parallel = compose_config("hydra/launcher=parallel", hydra=True).hydra.launcher
    assert parallel._target_ == "hydra_plugins.dlrun_launcher.process_launcher.ProcessLauncher"
    assert parallel.n_jobs == 2


@pytest.mark.parametrize("preset,metric", [("wine_optuna", "val/acc"), ("mnist_optuna", "val/acc")])
def test_the_search_presets_compose_with_a_direction_from_the_metric(preset, metric):
    cfg = compose_config(f"hparams_search={preset}", hydra=True)
    assert cfg.optimized_metric == metric and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.sweeper.params


def test_direction_follows_the_metric():
    autoencoder, cnn = "dlrun.models.autoencoder.LinearAutoencoder", "dlrun.models.convnet.ConvNet"
    assert direction("val/acc", cnn) == "maximize"
    assert direction("val/loss", cnn) == direction("val/mse", autoencoder) == "minimize"
    assert direction("auto", autoencoder) == "minimize" and direction("auto", cnn) == "maximize"
    assert direction("auto", "nets.MyNet") == "maximize"  # a model of the user's: classification
    assert direction("test/acc", "mlp") == "maximize"


def test_sweep_folder_names_start_with_the_swept_settings(monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["dlrun", "-m", "optimizer.lr=1e-3,1e-2", "model=mlp,cnn", "dataset=mnist"]
    )
    assert short_overrides("dataset=mnist,model=cnn,optimizer.lr=0.01") == "model-cnn_lr-0.01_dataset-mnist"
    monkeypatch.setattr(sys, "argv", ["dlrun", "-m", "trainer.epochs=range(1,4)", "dataset=wine", "oops=["])
    assert short_overrides("dataset=wine,trainer.epochs=2") == "epochs-2_dataset-wine"
    monkeypatch.setattr(sys, "argv", ["submitit"])  # a job that did not get the command: Hydra's order
    assert short_overrides("dataset=mnist,model=cnn") == "dataset-mnist_model-cnn"


def test_sweep_folder_names_are_short_and_safe():
    """Names a user can paste into trainer.resume= and a shell as they are: no `=`, `,`, brackets,
    quotes or spaces; cut between whole settings, saying how many were left out."""
    assert short_overrides("optimizer.lr=0.000846800857524,model=mlp") == "lr-0.0008468_model-mlp"
    assert short_overrides("model.hidden_sizes=[64,32],trainer.epochs=3") == "hidden_sizes-64-32_epochs-3"
    assert short_overrides("optimizer.lr=-1,model.act='leaky relu'") == "lr--1_act-leaky-relu"
    assert short_overrides("") == "default"
    many = ",".join(f"setting_{index}=value{index}" for index in range(8))
    assert short_overrides(many, limit=40) == "setting_0-value0_setting_1-value1_+6"
    for name in (short_overrides(many), short_overrides("model.hidden_sizes=[64,32],optimizer.lr=1e-3")):
        assert HYDRA_PLAIN.fullmatch(name) and shlex.quote(name) == name


def test_a_sweep_over_tasks_keeps_a_metric_column_and_a_single_job_shows_all_its_overrides(capsys, tmp_path):
    from dlrun.reporting.sweep_summary import Summary, show

    def row(job, model, metric, value):
        overrides = [f"model={model}", "trainer.epochs=1"]
        return {
            "job": job,
            "overrides": overrides,
            "status": "ok",
            "metric": metric,
            "value": value,
            "seconds": 1.0,
            "folder": f"{job}_model-{model}",
            "error": "",
        }

    show(Summary(tmp_path, [row(0, "mlp", "val/acc", 0.9), row(1, "autoencoder", "val/mse", 0.03)]))
    out = capsys.readouterr().out
    assert "every job: trainer.epochs=1" in out and " metric " in out and "val/mse" in out
    assert "90.00%" in out and "0.0300" in out  # each value as the metrics table shows it
    assert "best:" not in out  # two metrics: nothing to rank them by
    show(Summary(tmp_path, [row(0, "mlp", "val/acc", 0.9)]))
    out = capsys.readouterr().out
    assert "every job" not in out and "model=mlp trainer.epochs=1" in out and "best:" not in out
    show(Summary(tmp_path, [row(0, "autoencoder", "val/mse", 0.05), row(1, "autoencoder", "val/mse", 0.03)]))
    out = capsys.readouterr().out
    assert "best: job 1 (val/mse 0.0300)\n" in out  # lower is better; the jobs share every setting
    show(Summary(tmp_path, [row(0, "mlp", "val/brier", 0.2), row(1, "linear", "val/brier", 0.1)]))
    assert "best:" not in capsys.readouterr().out  # a user's metric: which way is better is theirs
