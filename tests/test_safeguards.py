"""What dlrun does instead of failing: skipping bad steps and bad images on request, keeping every
run in a folder of its own, and never writing a checkpoint of non-finite weights."""

import pytest
import torch
from torch import nn

from dlrun.engine.state import CheckpointFiles, Monitor, Parts, Position, TrainingState
from dlrun.errors import DlrunError
from dlrun.runs.folder import RunFolder
from dlrun.runs.lock import claim
from tests.bad_inputs import IMAGE_ARGS, ONE_EPOCH, broken_image, csv_with, images


def overflowing_csv(folder):
    """Rows whose features overflow float32 products, among rows that train fine."""
    return csv_with(folder, ["x,3e38,3e38,3e38"] * 3 + ["y,0.1,0.1,0.1", "x,0.2,0.3,0.1"] * 10)


SPLIT = [
    "dataset.standardize=false",
    "dataset.val_fraction=0.1",
    "dataset.test_fraction=0",
    "trainer.batch_size=4",
]


def test_a_non_finite_step_stops_before_any_checkpoint_is_written(dlrun, tmp_path):
    result = dlrun("dataset=csv", f"dataset.path={overflowing_csv(tmp_path)}", *SPLIT, *ONE_EPOCH)
    assert result.code == 1 and "the training loss became" in result.err
    assert not list((result.run_dir / "checkpoints").glob("*.pt"))
    assert "the training loss became" in (result.run_dir / "error.txt").read_text()


def test_skip_trains_on_and_names_each_skipped_step(dlrun, tmp_path):
    result = dlrun(
        "dataset=csv",
        f"dataset.path={overflowing_csv(tmp_path)}",
        *SPLIT,
        "trainer.on_nonfinite=skip",
        "trainer.epochs=2",
        "terminal.progress=lines",
    )
    assert result.code == 0, result.err
    # the three overflowing training rows fall in three of the six batches (seeded order)
    assert result.out.count("skipped 3 step(s)") == 2
    log = (result.run_dir / "dlrun.log").read_text()
    assert log.count("its loss or gradient is not finite") == 6
    weights = result.checkpoint()["model"]
    assert all(torch.isfinite(value).all() for value in weights.values())
    skipped = result.events().Scalars("train/skipped_steps")
    assert [event.value for event in skipped] == [3.0, 3.0]


def test_bad_images_can_be_skipped_and_are_counted(dlrun, tmp_path):
    root = images(tmp_path)
    broken = broken_image(root)
    result = dlrun(f"dataset.root={root}", *IMAGE_ARGS, "dataset.bad_images=skip", "terminal.progress=lines")
    assert result.code == 0, result.err
    assert "left out 1 unreadable image file(s)" in result.out
    assert f"skipped {broken}" in (result.run_dir / "dlrun.log").read_text()
    assert result.checkpoint()["facts"]["skipped_files"] == 1


def test_non_finite_weights_are_never_saved(tmp_path):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    batches = [(torch.zeros(2, 2), torch.tensor([0, 1]))]
    parts = Parts.of(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), batches)
    state = TrainingState(best=Monitor("val/acc", "max"), position=Position(global_step=7))
    folder = RunFolder(tmp_path)
    with pytest.raises(DlrunError, match="no longer finite after step 7"):
        CheckpointFiles(folder, {}, parts.data.facts).save((folder.last,), parts, state)
    assert not folder.last.exists()


def test_a_claimed_folder_is_never_handed_out_twice(tmp_path):
    first, second, third = (claim(str(tmp_path / "12-00-00")) for _ in range(3))
    assert [first, second, third] == [
        str(tmp_path / name) for name in ("12-00-00", "12-00-00_2", "12-00-00_3")
    ]
    assert all((tmp_path / name).is_dir() for name in ("12-00-00", "12-00-00_2", "12-00-00_3"))


def test_two_runs_given_the_same_fresh_folder_name_get_two_folders(dlrun, tmp_path):
    # the default hydra.run.dir, with a time stamp that does not move
    fresh = f"hydra.run.dir=${{dlrun.run_dir:null,'{tmp_path / 'same-second'}'}}"
    for _ in range(2):
        assert dlrun(fresh, *ONE_EPOCH).code == 0
    assert (tmp_path / "same-second" / "metrics.json").is_file()
    assert (tmp_path / "same-second_2" / "metrics.json").is_file()


def test_two_sweeps_given_the_same_folder_name_get_two_folders(dlrun, tmp_path):
    sweep_dir = f"hydra.sweep.dir=${{dlrun.fresh_dir:'{tmp_path / 'sweep'}'}}"
    for _ in range(2):
        assert dlrun("-m", sweep_dir, "optimizer.lr=0.01", *ONE_EPOCH).code == 0
    assert (tmp_path / "sweep" / "sweep_summary.csv").is_file()
    assert (tmp_path / "sweep_2" / "sweep_summary.csv").is_file()


def test_a_sweep_folder_that_holds_a_sweep_is_refused(dlrun, tmp_path):
    assert dlrun("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "optimizer.lr=0.01", *ONE_EPOCH).code == 0
    result = dlrun("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "optimizer.lr=0.02", *ONE_EPOCH)
    assert result.code == 2 and "already holds a sweep" in result.err


def test_a_resumed_run_records_its_config_beside_the_original(dlrun, tmp_path):
    first = dlrun(*ONE_EPOCH)
    original = (first.run_dir / ".hydra" / "overrides.yaml").read_text()
    resumed = dlrun(
        *ONE_EPOCH,
        "trainer.epochs=2",
        "trainer.resume_force=true",
        f"trainer.resume={first.run_dir / 'checkpoints' / 'last.pt'}",
        run_dir=first.run_dir,
    )
    assert resumed.code == 0, resumed.err
    assert (first.run_dir / ".hydra" / "overrides.yaml").read_text() == original
    records = list((first.run_dir / ".hydra").glob("resumed-*/overrides.yaml"))
    assert len(records) == 1 and "trainer.epochs=2" in records[0].read_text()


def test_the_full_traceback_is_there_when_asked_for(dlrun, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(Exception, match="model/transformer"):
        dlrun("model=transformer")


def test_a_diverging_loss_gets_one_warning_naming_the_epoch_and_the_learning_rate(dlrun, tmp_path):
    result = dlrun(
        "optimizer=sgd",
        "optimizer.lr=5",
        "trainer.epochs=5",
        "trainer.batch_size=64",
        "terminal.progress=lines",
    )
    assert result.code == 0, result.err
    said = " ".join((result.out + result.err).split())  # as read, whatever the terminal's width
    assert said.count("the run is diverging") == 1
    assert "epoch 2: training loss" in said and "the learning rate (5): try optimizer.lr=0.5" in said

    calm = dlrun("trainer.epochs=5", "terminal.progress=lines")
    assert "the run is diverging" not in calm.out + calm.err


def test_an_auto_resume_of_a_finished_run_does_nothing(dlrun, tmp_path):
    folder = tmp_path / "run"
    assert dlrun("trainer.epochs=2", f"hydra.run.dir={folder}").code == 0
    before = (folder / "metrics.json").read_bytes()
    again = dlrun("trainer.epochs=2", f"hydra.run.dir={folder}", "trainer.resume=auto")
    assert again.code == 0, again.err
    assert "finished already" in again.out and (folder / "metrics.json").read_bytes() == before


def test_an_auto_resume_of_an_empty_folder_starts_fresh(dlrun, tmp_path):
    folder = tmp_path / "run"
    result = dlrun("trainer.epochs=2", f"hydra.run.dir={folder}", "trainer.resume=auto")
    assert result.code == 0, result.err
    assert "resumed from" not in result.out and (folder / "metrics.json").is_file()
