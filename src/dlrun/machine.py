"""What this process may use of the machine: its CPUs, and how busy they are.

A process may be pinned to some cores (affinity: taskset, a batch scheduler) and a container may
be allowed fewer CPUs than the host has (a cgroup quota: docker --cpus=2 on a 64-core host).
Torch sizes its thread pool from the host's cores; the threads of a pool larger than the CPUs
really there spin waiting for each other. Torch-free.
"""

import math
import os
import time
from pathlib import Path
from typing import Optional

CGROUPS = Path("/sys/fs/cgroup")
SELF = Path("/proc/self/cgroup")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cpu_quota(root: Path = CGROUPS, membership: Path = SELF) -> Optional[float]:
    """The CPUs the cgroup's quota allows (quota / period; 1.5 for docker --cpus=1.5), or None
    when it sets none or cannot be read. cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # v2: one hierarchy
            found = _read_v2(root / relative / "cpu.max") or _read_v2(root / "cpu.max")
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            found = _read_v1(root / controllers / relative) or _read_v1(root / "cpu" / relative)
        else:
            continue
        if found:
            return found
    return None


def _read_v2(path: Path) -> Optional[float]:
    try:
        quota, period = path.read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _read_v1(folder: Path) -> Optional[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


def cpu_seconds() -> Optional[tuple[float, float]]:
    """(CPU seconds the whole machine has run, those this process has run) since boot and since
    it started; None where the machine's count cannot be read (not Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / ticks, time.process_time()


class SlowSteps:
    """Says once when training steps take several times as long as the run's fastest while other
    processes use the CPUs: torch's threads then spin waiting for each other (an MNIST epoch took
    17.8 s instead of 3.8 s at 2 threads with another process on one of the 2 cores;
    benchmarks/shared_cpu.py)."""

    SLOWER = 3.0  # than the fastest interval so far
    MIN_STEPS = 10  # an interval shorter than this says little
    ELSEWHERE = 0.5  # CPUs other processes used, on average, over the slow interval

    def __init__(self, threads: int, cpus: int, usage=cpu_seconds):
        self.threads, self.cpus, self.usage = threads, cpus, usage
        self.fastest: Optional[float] = None  # seconds per step
        self.last = usage()
        self.said = False

    def interval(self, steps: int, seconds: float) -> Optional[str]:
        """The warning, the first time an interval of `steps` steps in `seconds` is that slow."""
        now, before = self.usage(), self.last
        self.last = now
        if self.said or self.threads < 2 or steps < self.MIN_STEPS or now is None or before is None:
            return None
        per_step = seconds / steps
        if self.fastest is None or per_step < self.fastest:
            self.fastest = per_step
            return None
        elsewhere = ((now[0] - before[0]) - (now[1] - before[1])) / max(seconds, 1e-9)
        ratio = per_step / self.fastest
        if ratio < self.SLOWER or elsewhere < self.ELSEWHERE:
            return None
        self.said = True
        return (
            f"training steps take {ratio:.0f}x as long as this run's fastest while other processes use "
            f"{elsewhere:.1f} of the {self.cpus} CPUs: torch's {self.threads} threads wait for each "
            "other on a shared CPU; trainer.num_threads=1 is often several times faster there"
        )
