"""Resuming a run: killed with SIGKILL at an epoch boundary or mid-epoch, or stopped by a signal,
a deterministic CPU run resumes to exactly the state an uninterrupted run ends with.

The kill test is shown to be sensitive: a loader that forgets any one piece of the saved state
makes the resumed run end somewhere else.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlrun.checkpoints.format import read_checkpoint
from dlrun.engine import experiment
from dlrun.engine.state import restore
from tests import datasets
from tests.helpers import read_events

EPOCHS = 3
# dropout (torch RNG), augmentation and shuffling (the data generator), Adam (optimizer state),
# a step schedule, and saturating accuracy (so the best-metric and early-stopping state matter)
SETTINGS = [
    "dataset=mnist",
    "dataset.download=false",
    "dataset.augment.crop_padding=2",
    "dataset.augment.hflip=true",
    "model=mlp",
    "model.hidden_sizes=[256]",
    "model.dropout=0.2",
    "optimizer=adam",
    "scheduler=step",
    "scheduler.step_size=1",
    "scheduler.gamma=2",  # a growing rate: the validation loss rises, so the best epoch stays early
    f"trainer.epochs={EPOCHS}",
    "trainer.batch_size=16",
    "trainer.deterministic=true",
    "trainer.num_threads=1",
    "trainer.log_every_n_steps=10",
    "trainer.early_stopping.enabled=true",
    "trainer.early_stopping.patience=100",
    "logger.tensorboard.graph=false",
]
COMPARED = ("model", "optimizer", "scheduler", "position", "monitor", "early_stopping")


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory) -> Path:
    return datasets.write_mnist(tmp_path_factory.mktemp("resume-data"), train=1200, test=100)


@pytest.fixture(scope="module")
def reference(resume_data, tmp_path_factory) -> dict:
    """The final state of the same run, never interrupted (a separate process, like the others)."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    result = subprocess.run(launch(resume_data, folder), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return read_checkpoint(folder / "checkpoints" / "last.pt")


def launch(data: Path, folder: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dlrun",
        *SETTINGS,
        f"dataset.root={data}",
        f"hydra.run.dir={folder}",
        *extra,
    ]


def kill_when(data: Path, folder: Path, ready, *extra: str) -> dict:
    """Start a run, SIGKILL it as soon as its last.pt satisfies `ready`, return that checkpoint."""
    last = folder / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        launch(data, folder, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if last.exists() and last.stat().st_mtime_ns != seen:
                seen = last.stat().st_mtime_ns
                try:
                    state = read_checkpoint(last)
                except Exception:
                    continue  # replaced while we read it: read the next one
                if ready(state["position"]):
                    process.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.002)
    finally:
        process.kill()
        process.wait()
    assert not (folder / "metrics.json").exists(), "the run finished before it could be killed"
    return read_checkpoint(last)


def resume(dlrun, data: Path, folder: Path):
    result = dlrun(
        *SETTINGS,
        f"dataset.root={data}",
        f"trainer.resume={folder / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={folder}",
    )
    assert result.code == 0, result.err
    return result


def same(a: dict, b: dict) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def differing(final: dict, reference: dict) -> list[str]:
    return [key for key in COMPARED if not same(final[key], reference[key])]


def at_epoch_boundary(position) -> bool:
    return position["epoch"] == 1 and position["step_in_epoch"] == 0


def mid_epoch(position) -> bool:
    return position["epoch"] == 1 and position["step_in_epoch"] >= 20


@pytest.fixture(scope="module")
def killed_mid_epoch(resume_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("killed") / "run"
    state = kill_when(resume_data, folder, mid_epoch, "trainer.checkpoint_every_n_steps=5")
    assert state["position"]["step_in_epoch"] > 0  # a mid-epoch checkpoint is what remains
    return folder


def test_killed_at_an_epoch_boundary_resumes_bitwise(dlrun, resume_data, reference, tmp_path):
    folder = tmp_path / "run"
    state = kill_when(resume_data, folder, at_epoch_boundary)
    assert state["position"]["step_in_epoch"] == 0 and state["position"]["epoch"] >= 1
    resume(dlrun, resume_data, folder)
    assert differing(read_checkpoint(folder / "checkpoints" / "last.pt"), reference) == []


def test_killed_mid_epoch_resumes_bitwise(dlrun, resume_data, reference, killed_mid_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    resume(dlrun, resume_data, folder)
    assert differing(read_checkpoint(folder / "checkpoints" / "last.pt"), reference) == []


def test_killed_at_a_random_moment_while_saving_every_step(dlrun, resume_data, reference, tmp_path):
    folder = tmp_path / "run"
    kill_when(
        resume_data,
        folder,
        lambda p: p["global_step"] >= 75 + int.from_bytes(os.urandom(1), "big") % 40,
        "trainer.checkpoint_every_n_steps=1",
    )
    resume(dlrun, resume_data, folder)
    assert differing(read_checkpoint(folder / "checkpoints" / "last.pt"), reference) == []
    assert not list((folder / "checkpoints").glob(".*tmp*"))  # a save cut short is cleaned up


def forgetting(piece: str):
    """engine.state.restore as if `piece` were missing from the checkpoint: that part of the run
    (its parts or its training state) stays as freshly built."""

    def load(parts, state, payload, path):
        fresh = {**parts.state_dicts(), **state.state_dict()}
        payload = dict(payload)
        if piece.startswith("rng."):
            payload["rng"] = {**payload["rng"], piece[4:]: fresh["rng"][piece[4:]]}
        else:
            payload[piece] = fresh[piece]
        restore(parts, state, payload, path)

    return load


# python and numpy RNG states are saved and restored (see test_checkpoint) but nothing in this
# run draws from them, and the AMP scaler is off on a CPU: they cannot change this run's result
@pytest.mark.parametrize(
    "piece",
    [
        "model",
        "optimizer",
        "scheduler",
        "position",
        "data_generator",
        "rng.torch",
        "monitor",
        "early_stopping",
    ],
)
def test_the_kill_test_fails_if_any_piece_of_state_is_not_restored(
    dlrun, resume_data, reference, killed_mid_epoch, tmp_path, monkeypatch, piece
):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    monkeypatch.setattr(experiment, "restore", forgetting(piece))
    resume(dlrun, resume_data, folder)
    assert differing(read_checkpoint(folder / "checkpoints" / "last.pt"), reference) != []


def test_the_resumed_run_continues_the_same_tensorboard_log(dlrun, resume_data, killed_mid_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    resume(dlrun, resume_data, folder)
    events = read_events(folder)
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == sorted(set(steps))  # no step twice: events after the checkpoint were purged
    assert len(events.Scalars("val/acc")) == EPOCHS
    assert (folder / "metrics.json").is_file()


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_saves_flushes_and_exits(dlrun, resume_data, reference, tmp_path, signum, code):
    folder = tmp_path / ("run-in-a-folder-whose-name-takes-the-warning-past-140-columns-" + "x" * 40)
    last = folder / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        launch(resume_data, folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert f"; state saved to {last}\n" in out  # whole on its line, whatever its length: copied as is
    state = read_checkpoint(last)
    assert 0 < state["position"]["global_step"] < EPOCHS * 68
    resume(dlrun, resume_data, folder)
    assert differing(read_checkpoint(last), reference) == []


def test_a_changed_config_is_refused_with_the_differing_keys(dlrun, resume_data, killed_mid_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    result = dlrun(
        *SETTINGS,
        f"dataset.root={resume_data}",
        "model.hidden_sizes=[128]",
        "optimizer.lr=0.01",
        f"trainer.resume={folder / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={folder}",
    )
    assert result.code == 1
    assert (
        "model.hidden_sizes" in result.err and "optimizer.lr" in result.err and "resume_force" in result.err
    )


def test_resume_force_accepts_more_epochs_and_a_new_learning_rate(
    dlrun, resume_data, killed_mid_epoch, tmp_path
):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    result = dlrun(
        *SETTINGS,
        f"dataset.root={resume_data}",
        "trainer.epochs=4",
        "optimizer.lr=0.0005",
        "trainer.resume_force=true",
        f"trainer.resume={folder / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={folder}",
    )
    assert result.code == 0, result.err
    final = read_checkpoint(folder / "checkpoints" / "last.pt")
    assert final["position"]["epoch"] == 4
    assert final["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.0005)


def test_resume_last_from_inside_the_run_folder(resume_data, killed_mid_epoch, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, folder)
    result = subprocess.run(
        [sys.executable, "-m", "dlrun", *SETTINGS, f"dataset.root={resume_data}", "trainer.resume=last"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "metrics.json").is_file() and not (folder / "runs").exists()


def test_resuming_from_a_missing_checkpoint_is_one_line(dlrun, tmp_path):
    result = dlrun(f"trainer.resume={tmp_path / 'nope.pt'}")
    assert result.code == 1 and "checkpoint not found" in result.err
