"""Checkpoint files: atomic writes, loading that refuses anything but plain tensors, and format
versions: a file of an older dlrun still predicts, evaluates and resumes."""

import json
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

from dlrun import cli
from dlrun.checkpoints import files as checkpoint
from dlrun.checkpoints.files import remove_stale_temporaries
from dlrun.checkpoints.format import VERSION, read_checkpoint, write_checkpoint
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


# -- versions ----------------------------------------------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"
# written by dlrun 0.1 (format version 1, before versions were written): `dlrun model=mlp
# model.hidden_sizes=[8] trainer.epochs=2` on the wine table, and `dlrun dataset=names
# model=char_rnn model.hidden_size=8 loss=nll trainer.epochs=2` on tests/datasets.write_names
V1_WINE, V1_NAMES_NLL = DATA / "v1_wine_mlp.pt", DATA / "v1_names_char_rnn_nll.pt"
WINE_ROW = "[[13.2,1.78,2.14,11.2,100,2.65,2.76,0.26,1.28,4.38,1.05,3.4,1050]]"


def test_a_checkpoint_carries_its_format_version(tmp_path):
    write_checkpoint(tmp_path / "c.pt", {"model": {}})
    assert torch.load(tmp_path / "c.pt", weights_only=True)["version"] == VERSION == 2


def test_a_version_1_checkpoint_is_read_as_this_version():
    """dlrun 0.1 named its own code by catalogue names and wrapped loss=nll models; read now, the
    file names the same code by _target_ and the weights fit the plain model."""
    wine, names = read_checkpoint(V1_WINE), read_checkpoint(V1_NAMES_NLL)
    assert wine["version"] == names["version"] == 2
    assert wine["config"]["model"] == {
        "_target_": "dlrun.models.mlp.MLP",
        "hidden_sizes": [8],
        "activation": "relu",
        "dropout": 0.0,
    }
    assert (
        wine["config"]["dataset"]["_target_"] == "dlrun.data.tabular.load_csv"
        and "loader" not in wine["config"]["dataset"]
    )
    assert names["config"]["loss"] == {"_target_": "dlrun.models.losses.NLLLoss"}
    assert not [key for key in names["model"] if key.startswith("model.")]
    assert wine["config"]["terminal"] == {"progress": "off", "config": "auto"}  # it ran with progress=off
    assert (
        list(wine["config"]["logger"]) == ["tensorboard"]
        and "progress" not in wine["config"]["logger"]["tensorboard"]
    )


def test_a_version_1_config_reads_as_the_same_command_composes_it_now():
    """Resuming compares the saved config with the one composed now: a version 1 file, brought up
    to date, differs in nothing but its data's path (it was written in another checkout)."""
    from omegaconf import OmegaConf

    from dlrun.checkpoints.resume import check_resumable
    from tests.helpers import compose_config

    saved = read_checkpoint(V1_WINE)["config"]
    now = compose_config("model=mlp", "model.hidden_sizes=[8]", "trainer.epochs=2", "trainer.batch_size=8")
    now.dataset.path = saved["dataset"]["path"]
    resolved = OmegaConf.to_container(now, resolve=True)
    resolved["facts"] = saved["facts"]
    check_resumable(saved, OmegaConf.create(resolved), V1_WINE)  # raises if a key differs


def test_version_1_checkpoints_still_predict_as_they_did(dlrun):
    """The probabilities dlrun 0.1 printed for these inputs from these files."""
    wine = dlrun(f"ckpt={V1_WINE}", f"inputs={WINE_ROW}", "format=json", program=cli.predict_main)
    assert wine.code == 0, wine.err
    first = json.loads(wine.out)[0]["predictions"]
    assert [p["class"] for p in first] == ["3", "2", "1"]
    assert [p["probability"] for p in first] == pytest.approx([0.513643, 0.252208, 0.23415], abs=2e-6)
    names = dlrun(f"ckpt={V1_NAMES_NLL}", "inputs=[Smith,Dubois]", "format=json", program=cli.predict_main)
    assert names.code == 0, names.err
    smith, dubois = (row["predictions"] for row in json.loads(names.out))
    assert [p["class"] for p in smith] == ["French", "English", "Japanese"]
    assert [p["probability"] for p in smith] == pytest.approx([0.478917, 0.302477, 0.218607], abs=2e-6)
    assert [p["probability"] for p in dubois] == pytest.approx([0.466614, 0.280687, 0.252699], abs=2e-6)


def test_a_version_1_checkpoint_evaluates_and_resumes(dlrun, tmp_path):
    evaluated = dlrun(f"ckpt={V1_WINE}", f"output={tmp_path / 'report.json'}", program=cli.eval_main)
    assert evaluated.code == 0, evaluated.err
    assert json.loads((tmp_path / "report.json").read_text())["samples"] == 36

    folder = tmp_path / "old_run"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(V1_WINE, folder / "checkpoints" / "last.pt")
    resumed = dlrun(
        "model=mlp",
        "model.hidden_sizes=[8]",
        "trainer.epochs=3",
        f"trainer.resume={folder / 'checkpoints' / 'last.pt'}",
        "trainer.resume_force=true",  # one more epoch, and the data's path of this checkout
        "terminal.progress=off",
        run_dir=folder,
    )
    assert resumed.code == 0, resumed.err
    assert "resumed from" in resumed.out and "at epoch 3, step 28" in resumed.out
    results = json.loads((folder / "metrics.json").read_text())
    assert results["epochs"] == 3 and [row["epoch"] for row in results["history"]] == [1, 2, 3]
    assert read_checkpoint(folder / "checkpoints" / "last.pt")["version"] == VERSION


def test_a_checkpoint_of_an_unknown_version_is_refused_in_one_line(dlrun, tmp_path):
    payload = read_checkpoint(V1_WINE)
    torch.save({**payload, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(
        CheckpointError, match=r"format version 99, which this dlrun does not know .*upgrade dlrun"
    ):
        read_checkpoint(tmp_path / "future.pt")
    result = dlrun(f"ckpt={tmp_path / 'future.pt'}", f"inputs={WINE_ROW}", program=cli.predict_main)
    assert result.code == 1 and result.err.count("\n") == 1 and "version 99" in result.err
