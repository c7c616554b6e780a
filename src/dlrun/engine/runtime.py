"""How one job runs on this machine: device, threads, seeds, determinism, numeric precision.

Set at the start of every job, because Hydra's joblib launcher reuses worker processes: anything
left over from the previous job (thread count, seeds, deterministic mode) would leak into it.
"""

import contextlib
import os
import random

import numpy as np
import torch

from dlrun.errors import ConfigError
from dlrun.machine import usable_cpus


def select_device(name: str, slot: int | None = None) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist.

    `slot` spreads processes over the GPUs: a torchrun rank's LOCAL_RANK, or a parallel sweep
    job's number (modulo the GPU count).
    """
    if name in ("auto", "cuda") and slot is not None and torch.cuda.is_available():
        return torch.device("cuda", slot % torch.cuda.device_count())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"trainer.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name} but this machine has no usable CUDA GPU; use trainer.device=auto or cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"trainer.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=auto or cpu")
    return device


def configure_threads(requested: int, parallel_jobs: int = 1) -> int:
    """Use `requested` CPU threads, or this job's share of the CPUs it may use when 0 (its
    affinity and cgroup quota: machine.py).

    Two processes that each use every core run several times slower than one, so parallel
    sweep jobs split the cores between them.
    """
    threads = requested if requested > 0 else max(1, usable_cpus() // max(1, parallel_jobs))
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def set_deterministic(enabled: bool) -> None:
    """Bitwise-repeatable kernels when asked for; the fastest cuDNN kernels otherwise."""
    if enabled:
        # cuBLAS needs a fixed workspace to be deterministic (read when CUDA initializes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


class Precision:
    """Autocast and gradient scaling for `trainer.precision` (32, bf16 or 16)."""

    DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}

    def __init__(self, precision: str, device: torch.device):
        self.name = precision
        self.dtype = self.DTYPES[precision]
        self.device_type = device.type
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()  # fp32: skip even a disabled autocast's bookkeeping
        return torch.autocast(self.device_type, dtype=self.dtype)
