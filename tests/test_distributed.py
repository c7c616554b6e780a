"""torchrun with 2 CPU processes (gloo): sharded batches, one run folder, the single-process result."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from dlrun.checkpoints.format import read_checkpoint
from dlrun.data.batches import EpochBatchSampler, TensorBatches, batch_count
from dlrun.engine import distributed
from dlrun.errors import ConfigError

TORCHRUN = Path(sys.executable).parent / "torchrun"
# deterministic: plain SGD, no dropout; the global batch of 32 is 16 per process
SETTINGS = [
    "dataset=mnist",
    "dataset.download=false",
    "model=mlp",
    "model.hidden_sizes=[32]",
    "optimizer=sgd",
    "optimizer.lr=0.05",
    "optimizer.momentum=0",
    "trainer.batch_size=32",
    "trainer.deterministic=true",
    "dataset.augment.crop_padding=2",
    "trainer.device=cpu",  # gloo on any machine, a GPU machine too
    "dataset.augment.hflip=true",
]


def torchrun(data: Path, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(TORCHRUN),
            "--nproc_per_node=2",
            "--no-python",
            str(Path(sys.executable).parent / "dlrun"),
            *SETTINGS,
            f"dataset.root={data}",
            f"hydra.run.dir={folder}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def scratch_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("dlrun-torchrun-*")}


@pytest.fixture(scope="module")
def two_processes(data_root, tmp_path_factory):
    before = scratch_folders()
    folder = tmp_path_factory.mktemp("ddp") / "run"
    result = torchrun(data_root, folder, "trainer.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result, before


def test_two_processes_train_into_one_run_folder(two_processes):
    folder, result, before = two_processes
    assert "rank 0 of 2 processes" in result.stdout
    assert result.stdout.count("epoch 2/2 |") == 1  # only rank 0 reports
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1 and (folder / "metrics.json").is_file()
    assert scratch_folders() == before  # the other rank's scratch folder is gone


def test_the_result_matches_one_process_with_the_same_global_batch(two_processes, dlrun, data_root):
    folder, _, _ = two_processes
    single = dlrun(*SETTINGS, f"dataset.root={data_root}", "trainer.epochs=2")
    assert single.code == 0, single.err
    one, two = single.checkpoint()["model"], read_checkpoint(folder / "checkpoints" / "last.pt")["model"]
    worst = max((one[key] - two[key]).abs().max().item() for key in one)
    assert worst < 1e-5  # the same arithmetic, summed in a different order
    assert read_checkpoint(folder / "checkpoints" / "last.pt")["metrics"]["val/acc"] == pytest.approx(
        single.checkpoint()["metrics"]["val/acc"], abs=1e-3
    )


def test_resume_under_torchrun(two_processes, data_root, tmp_path):
    folder, _, _ = two_processes
    first = torchrun(data_root, tmp_path / "run", "trainer.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(
        data_root,
        tmp_path / "run",
        "trainer.epochs=2",
        "trainer.resume_force=true",
        f"trainer.resume={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    b = read_checkpoint(folder / "checkpoints" / "last.pt")
    assert a["position"] == b["position"]
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_shards_of_a_global_batch_add_up_to_it():
    inputs, targets = torch.arange(50).float().unsqueeze(1), torch.arange(50)
    whole = TensorBatches(inputs, targets, 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    parts = [
        TensorBatches(
            inputs, targets, 8, shuffle=True, generator=torch.Generator().manual_seed(3), shard=(rank, 2)
        )
        for rank in range(2)
    ]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 7
    for batch, first, second in zip(whole, *parts):
        assert torch.equal(batch[1], torch.cat([first[1], second[1]]))
    # a last batch of 1 sample cannot feed 2 processes: it is left out (49 = 6 x 8 + 1)
    assert batch_count(49, 8, 2) == 6 and batch_count(49, 8, 1) == 7 and batch_count(50, 8, 4) == 6


def test_file_batches_are_sharded_the_same_way():
    sampler = [
        list(EpochBatchSampler(20, 6, torch.Generator().manual_seed(1), (rank, 2))) for rank in range(2)
    ]
    whole = list(EpochBatchSampler(20, 6, torch.Generator().manual_seed(1)))
    assert [a + b for a, b in zip(*sampler)] == whole


def test_more_processes_than_gpus_is_one_line_before_nccl_fails(monkeypatch):
    # seen on a one-GPU machine: NCCL's "invalid usage" deep in the process group's start
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    ranks = distributed.Ranks(rank=1, world_size=2, local_rank=1, local_world_size=2)
    with pytest.raises(ConfigError) as refused:
        distributed.start(torch.device("cuda", 0), ranks)
    assert str(refused.value) == (
        "torchrun started 2 processes on this machine, which has 1 GPU(s): one process per GPU "
        "(--nproc_per_node=1), or train on the CPU with trainer.device=cpu"
    )


def test_accumulated_micro_batches_under_torchrun_match_one_process(data_root, dlrun, tmp_path):
    # a global batch of 32 as 2 micro-batches of 16, each split between the 2 processes; the
    # gradients sync once per optimizer step (no_sync on the first micro-batch)
    folder = tmp_path / "run"
    result = torchrun(
        data_root, folder, "trainer.epochs=1", "trainer.batch_size=16", "trainer.accumulate_grad_batches=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = dlrun(*SETTINGS, f"dataset.root={data_root}", "trainer.epochs=1")
    one, two = single.checkpoint()["model"], read_checkpoint(folder / "checkpoints" / "last.pt")["model"]
    assert max((one[key] - two[key]).abs().max().item() for key in one) < 1e-5
