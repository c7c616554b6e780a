"""The loop's speed settings: precision, compile, channels_last, threads, and no per-step syncs."""

import os

import pytest
import torch
from torch import nn

from dlrun.config.schema import Trainer
from dlrun.data.batches import TensorBatches
from dlrun.engine import runtime, train
from dlrun.engine.state import Monitor, Outputs, Parts, TrainingState
from tests.helpers import FEW_STEPS, small_mlp_on


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_trains_on_the_cpu(dlrun, data_root, precision):
    result = dlrun(
        "dataset=mnist",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "model=lenet",
        f"trainer.precision={precision}",
        "trainer.grad_clip=5.0",
        "trainer.epochs=2",
    )
    assert result.code == 0, result.err
    assert result.metrics["best_value"] > 0.3
    scaler = result.checkpoint()["scaler"]
    assert ("scale" in scaler) == (precision == "16")  # only fp16 scales the loss


def test_channels_last_trains_a_convnet(dlrun, data_root):
    result = dlrun(
        "dataset=mnist",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "model=cnn",
        "trainer.channels_last=true",
        *FEW_STEPS,
    )
    assert result.code == 0, result.err


@pytest.mark.slow
def test_torch_compile_trains(dlrun, data_root):
    result = dlrun(
        *small_mlp_on(data_root),
        "trainer.compile=true",
        *FEW_STEPS,
    )
    assert result.code == 0, result.err
    assert not any(key.startswith("_orig_mod") for key in result.checkpoint()["model"])


def test_the_configured_thread_count_is_used(dlrun):
    before = torch.get_num_threads()
    try:
        assert dlrun("trainer.num_threads=1", *FEW_STEPS).code == 0
        assert torch.get_num_threads() == 1
        assert dlrun(*FEW_STEPS).code == 0
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_parallel_jobs_share_the_cores():
    before = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
        assert runtime.configure_threads(0, parallel_jobs=2) == max(1, cores // 2)
        assert runtime.configure_threads(3, parallel_jobs=2) == 3
    finally:
        torch.set_num_threads(before)


def test_deterministic_mode_and_cudnn_benchmark():
    try:
        runtime.set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        runtime.set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        runtime.set_deterministic(False)


def test_the_loop_reads_values_from_the_device_once_per_logging_interval(monkeypatch):
    """Every .item()/.tolist()/bool() on a device tensor is a host-device sync on a GPU; the
    LossWatch's reads are of its own host copy, made without waiting (one per step)."""
    watches = []

    class RecordedWatch(train.LossWatch):
        def __init__(self, device):
            super().__init__(device)
            watches.append(self)

    monkeypatch.setattr(train, "LossWatch", RecordedWatch)
    inputs, targets = torch.randn(400, 8), torch.randint(0, 3, (400,))
    batches = TensorBatches(inputs, targets, 10, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    # SGD: Adam reads its step counters with .item(), host-side tensors that cost no device sync
    parts = Parts.of(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), batches)
    state = TrainingState(best=Monitor("val/acc", "max"))
    reads, host_reads = [], []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            on_host = any(self is watch.host for watch in watches)
            (host_reads if on_host else reads).append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    train.train_one_epoch(parts, state, Outputs.quiet(), Trainer(epochs=1, log_every_n_steps=10))
    assert len(reads) == 4  # 40 steps, one read per 10
    assert len(host_reads) == 40  # each step's loss, looked at once


def test_processes_are_spread_over_the_gpus(monkeypatch):
    """A torchrun rank or a parallel sweep job takes GPU (slot modulo count) when there are GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert runtime.select_device("auto", slot=6) == torch.device("cuda", 2)
    assert runtime.select_device("cuda", slot=1) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.select_device("auto", slot=3) == torch.device("cpu") or torch.backends.mps.is_available()


def cgroup(tmp_path, membership: str, files: dict[str, str]):
    """A cgroup tree as /sys/fs/cgroup holds it, and /proc/self/cgroup's lines naming this process's."""
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "self").write_text(membership)
    return tmp_path / "fs", tmp_path / "self"


def test_the_cpu_quota_of_a_container_is_read_from_cgroup_v2_and_v1(tmp_path):
    from dlrun.machine import cpu_quota

    v2 = cgroup(tmp_path / "v2", "0::/job/7\n", {"job/7/cpu.max": "150000 100000\n"})
    assert cpu_quota(*v2) == 1.5  # docker --cpus=1.5
    unlimited = cgroup(tmp_path / "max", "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpu_quota(*unlimited) is None
    v1 = cgroup(
        tmp_path / "v1",
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpu_quota(*v1) == 2.0
    no_quota = cgroup(
        tmp_path / "none",
        "3:cpu,cpuacct:/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert cpu_quota(*no_quota) is None
    assert cpu_quota(tmp_path / "nowhere", tmp_path / "missing") is None


def test_a_run_pinned_to_one_core_takes_one_thread(tmp_path):
    """The default (trainer.num_threads=0) is the CPUs this process may use, not the host's."""
    import subprocess
    import sys

    code = "from dlrun.engine.runtime import configure_threads; print(configure_threads(0))"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == "1"


def test_steps_that_collapse_on_a_shared_cpu_are_said_once_with_the_setting_that_helps():
    from dlrun.machine import SlowSteps

    used = [(0.0, 0.0)]  # CPU seconds of the whole machine, of this process
    watch = SlowSteps(threads=2, cpus=2, usage=lambda: used[0])

    def interval(steps, seconds, ours, others):
        machine, own = used[0]
        used[0] = (machine + ours + others, own + ours)
        return watch.interval(steps, seconds)

    assert interval(50, 0.5, ours=1.0, others=0.0) is None  # 10 ms a step: the fastest so far
    assert interval(50, 2.0, ours=4.0, others=0.1) is None  # 4x slower, the machine otherwise idle
    assert interval(5, 5.0, ours=9.0, others=5.0) is None  # too few steps to say anything
    warning = interval(50, 3.0, ours=4.0, others=3.0)  # 6x slower, another process on one CPU
    assert "6x as long as this run's fastest" in warning and "use 1.0 of the 2 CPUs" in warning
    assert "trainer.num_threads=1" in warning
    assert interval(50, 3.0, ours=4.0, others=3.0) is None  # once
    one_thread = SlowSteps(threads=1, cpus=2, usage=lambda: used[0])
    assert one_thread.interval(50, 0.5) is None and one_thread.interval(50, 9.0) is None  # no advice


def test_the_machines_cpu_time_is_read_where_linux_keeps_it():
    from dlrun.machine import cpu_seconds

    machine, own = cpu_seconds()
    assert machine > own > 0
