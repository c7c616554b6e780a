"""Checkpoint files: atomic writes, and loading that refuses anything but plain tensors."""

import pickle
import random

import pytest
import torch

from dlrun.checkpoints import files as checkpoint
from dlrun.checkpoints.files import remove_stale_temporaries
from dlrun.checkpoints.format import read_checkpoint, write_checkpoint
from dlrun.errors import CheckpointError
from tests.helpers import Hostile


def test_a_checkpoint_round_trips_with_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    write_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {"a": [1, 2]}})
    loaded = read_checkpoint(path)
    assert loaded["format"] == "dlrun-checkpoint" and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_a_hostile_reduce_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not weaken the explicit argument
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "dlrun-checkpoint", "model": Hostile(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "folder", "missing", "not dlrun"])
def test_damaged_or_wrong_files_get_one_clear_error(tmp_path, damage):
    good = tmp_path / "good.pt"
    write_checkpoint(good, {"model": {"w": torch.randn(1000)}})
    path = tmp_path / "bad.pt"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif damage == "folder":
        path.mkdir()
    elif damage == "not dlrun":
        torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_any_random_bytes_get_one_clear_error(tmp_path):
    """Garbage reaches different readers (zip, legacy pickle) and fails in different ways."""
    path = tmp_path / "noise.pt"
    for seed in range(200):
        noise = random.Random(seed)
        path.write_bytes(noise.randbytes(noise.randint(1, 8192)))
        with pytest.raises(
            CheckpointError, match="not a readable checkpoint|refusing to load|not a dlrun checkpoint"
        ):
            read_checkpoint(path)


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    write_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    before = path.read_bytes()

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError):
        write_checkpoint(path, {"model": {"w": torch.ones(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_temporary_files_are_removed(tmp_path):
    stale = tmp_path / ".last.pt.tmp-12345"
    stale.write_bytes(b"partial")
    keep = tmp_path / "best.pt"
    keep.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and keep.exists()


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """Storages are tagged with the device they were saved from; map_location moves them."""
    path = tmp_path / "gpu.pt"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save({"format": "dlrun-checkpoint", "model": {"w": torch.arange(4.0)}}, path)
    monkeypatch.undo()
    assert b"cuda:0" in path.read_bytes()
    loaded = read_checkpoint(path, map_location="cpu")
    assert loaded["model"]["w"].device.type == "cpu" and loaded["model"]["w"].tolist() == [0, 1, 2, 3]


def test_rng_states_survive_weights_only_loading(tmp_path):
    import random

    import numpy as np

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    states = checkpoint.rng_states()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    write_checkpoint(tmp_path / "r.pt", {"rng": states})
    checkpoint.restore_rng_states(read_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_pickle_error_type_is_what_torch_raises(tmp_path):
    # guards the except clause above: weights-only refusals are UnpicklingErrors
    torch.save(torch.nn.Linear(1, 1), tmp_path / "m.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "m.pt", weights_only=True)
