"""The loggers chosen with `logger=...`: TensorBoard (the default), CSV files, MLflow (read back
with MLflow's own client), several at once, or none."""

import csv
import sys

import pytest

from tests.helpers import FEW_STEPS

TWO_EPOCHS = [
    "trainer.epochs=2",
    "trainer.batch_size=16",
    "trainer.log_every_n_steps=3",
    "terminal.progress=off",
]


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def event_files(folder):
    return list(folder.glob("events.out.tfevents.*"))


def test_csv_writes_each_interval_and_each_epoch_beside_metrics_json(dlrun):
    result = dlrun("logger=csv", *TWO_EPOCHS)
    assert result.code == 0, result.err
    steps, epochs = rows(result.run_dir / "steps.csv"), rows(result.run_dir / "epochs.csv")
    assert list(steps[0]) == ["step", "train/loss", "train/acc", "train/lr"]
    assert [int(row["step"]) for row in steps][:3] == [3, 6, 7]  # every 3 steps and each epoch's end (7)
    assert list(epochs[0]) == [
        "epoch",
        "step",
        "train_loss",
        "train_acc",
        "val/loss",
        "val/acc",
        "lr",
        "seconds",
    ]
    history = result.metrics["history"]
    assert [int(row["epoch"]) for row in epochs] == [row["epoch"] for row in history] == [1, 2]
    assert float(epochs[1]["val/acc"]) == pytest.approx(history[1]["val/acc"])
    assert not event_files(result.run_dir)  # TensorBoard was not chosen


def test_several_loggers_at_once_and_none(dlrun):
    both = dlrun("logger=[tensorboard,csv]", *FEW_STEPS)
    assert both.code == 0, both.err
    assert event_files(both.run_dir) and (both.run_dir / "epochs.csv").is_file()
    none = dlrun("logger=none", *FEW_STEPS)
    assert none.code == 0, none.err
    assert not event_files(none.run_dir) and not (none.run_dir / "epochs.csv").exists()
    assert (none.run_dir / "metrics.json").is_file() and (none.run_dir / "checkpoints" / "best.pt").is_file()


def test_a_resumed_run_continues_its_csv_without_the_rows_a_crash_left_after_the_checkpoint(dlrun, tmp_path):
    folder = tmp_path / "run"
    first = dlrun("logger=csv", *TWO_EPOCHS, run_dir=folder)
    assert first.code == 0, first.err
    # rows a run killed after its last checkpoint would have written
    with open(folder / "steps.csv", "a") as handle:
        handle.write("999,9.9,0.1,0.001\n")
    (folder / "metrics.json").unlink()  # as if it had not finished
    resumed = dlrun(
        "logger=csv",
        *TWO_EPOCHS[1:],
        "trainer.epochs=3",
        "trainer.resume=auto",
        "trainer.resume_force=true",
        run_dir=folder,
    )
    assert resumed.code == 0, resumed.err
    steps = [int(row["step"]) for row in rows(folder / "steps.csv")]
    assert 999 not in steps and steps == sorted(steps) and len(steps) == len(set(steps))
    assert [int(row["epoch"]) for row in rows(folder / "epochs.csv")] == [1, 2, 3]


@pytest.fixture
def mlflow_client():
    """MLflow's own client (the mlflow extra, part of dev), to read back what dlrun wrote."""
    from mlflow.tracking import MlflowClient

    return MlflowClient


def test_mlflow_records_a_run_that_its_own_client_reads_back(dlrun, mlflow_client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts in ./mlruns beside a sqlite store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = dlrun("logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}", *TWO_EPOCHS)
    assert result.code == 0, result.err
    client = mlflow_client(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("dlrun").experiment_id])
    assert run.info.run_name == result.run_dir.name and run.info.status == "FINISHED"
    assert (
        run.data.params["optimizer.lr"] == "0.001"
        and run.data.params["model._target_"] == "dlrun.models.mlp.MLP"
    )
    assert "facts.num_classes" not in run.data.params  # the data's facts are not settings
    val_acc = client.get_metric_history(run.info.run_id, "val/acc")
    assert [point.step for point in val_acc] == [7, 14]  # one point per epoch, at its step
    assert run.data.metrics["test/acc"] == pytest.approx(result.metrics["test"]["acc"])
    assert run.data.metrics["best_val/acc"] == pytest.approx(result.metrics["best_value"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 4
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "best.pt"} <= artifacts
    assert event_files(result.run_dir)  # and TensorBoard beside it


def test_mlflow_uses_its_own_default_store_in_the_folder_dlrun_starts_in(
    dlrun, mlflow_client, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = dlrun("logger=mlflow", *FEW_STEPS)
    assert result.code == 0, result.err
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()
    client = mlflow_client(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("dlrun").experiment_id])
    assert run.info.run_name == result.run_dir.name


def test_logger_mlflow_without_mlflow_names_the_install_command(dlrun, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if it were not installed
    result = dlrun("logger=mlflow", *FEW_STEPS)
    assert result.code == 2 and result.err.count("\n") == 1
    assert 'logger=mlflow needs MLflow, which is not installed: pip install "dlrun[mlflow]"' in result.err
    assert not (result.run_dir / "metrics.json").exists()


@pytest.mark.parametrize(
    "typed,now",
    [
        ("logger.progress=off", "terminal.progress"),
        ("logger.config=full", "terminal.config"),
        ("logger.graph=false", "logger.tensorboard.graph"),
    ],
)
def test_a_setting_that_moved_says_where_it_is_now(dlrun, typed, now):
    result = dlrun(typed)
    assert result.code == 2 and f"{typed.split('=')[0]} is now {now}: write {now}=..." in result.err


def test_a_logger_setting_is_checked_like_any_other(dlrun):
    result = dlrun("logger.tensorboard.grph=false")
    assert result.code == 2 and "did you mean graph?" in result.err
