"""Several processes, one run: `torchrun --nproc_per_node=N --no-python dlrun ...`.

torchrun starts N copies of dlrun and tells each its RANK, LOCAL_RANK and WORLD_SIZE. They join
one process group (NCCL on GPUs, gloo on CPUs), train a DistributedDataParallel model on their
own shard of every global batch, and agree on rank 0's run folder; only rank 0 writes logs,
TensorBoard events and checkpoints.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dlrun.errors import ConfigError
from dlrun.runs.folder import SCRATCH_PREFIX


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine: they share its CPU cores

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size


def from_environment() -> Ranks:
    """What torchrun says about this process (a plain run is rank 0 of 1)."""
    return Ranks(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


def scratch_overrides(rank: int) -> list[str]:
    """Hydra overrides for a torchrun rank above 0: it writes nothing of its own, so its Hydra
    folder is a scratch folder (one per rank of this launch; torchrun's agent is the parent
    process) and the real run folder is rank 0's, shared once the process group is up."""
    scratch = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{os.getppid()}-rank{rank}"
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def remove_scratch(folder: Path) -> None:
    if folder.name.startswith(SCRATCH_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)


def start(device: torch.device, ranks: Ranks) -> None:
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if ranks.local_world_size > gpus:  # NCCL refuses two processes on one GPU, deep inside
            raise ConfigError(
                f"torchrun started {ranks.local_world_size} processes on this machine, which has "
                f"{gpus} GPU(s): one process per GPU (--nproc_per_node={gpus}), or train on the CPU "
                "with trainer.device=cpu"
            )
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30)
    )


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run folder, for every rank (the others were given scratch folders by Hydra)."""
    holder = [str(run_dir)]
    dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def sum_over_ranks(values: torch.Tensor) -> None:
    dist.all_reduce(values, op=dist.ReduceOp.SUM)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on one: all ranks must stop at the same step."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    dist.barrier()


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
