"""`trainer.profile=true`: torch.profiler over a few training steps after a warm-up, written as a
trace in the run folder (profile.json: open it in https://ui.perfetto.dev or chrome://tracing),
with the operators that took the most time of their own shown at the end of the window. A
DataLoader's wait for the next batch shows in the trace and the table as enumerate(DataLoader)."""

import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from dlrun.reporting.terminal import Report

WAIT, WARMUP, ACTIVE = 2, 3, 5  # steps: skipped, traced but thrown away, recorded
TOP = 12  # rows of the operators' table


class StepProfiler:
    def __init__(self, path: Path, device: torch.device, terminal: Report):
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.path, self.terminal, self.steps, self.done = path, terminal, 0, False
        self.sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        window = schedule(wait=WAIT, warmup=WARMUP, active=ACTIVE, repeat=1)
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # its own log lines: errors only
        self.profiler = profile(activities=activities, schedule=window, on_trace_ready=self._written)
        with _native_stderr_quiet():
            self.profiler.start()

    def step(self) -> None:
        """After each optimizer step, until the window is recorded."""
        if self.done:
            return
        self.steps += 1
        with _native_stderr_quiet():  # the tracer's start and stop lines ("USDT: profiler_start")
            self.profiler.step()

    def close(self) -> Optional[str]:
        """Stop; a warning when the run ended before the window did."""
        if self.done:
            return None
        with _native_stderr_quiet():
            self.profiler.stop()
        self.done = True
        needed = WAIT + WARMUP + ACTIVE
        return f"trainer.profile records steps {WAIT + WARMUP + 1}-{needed}, and this run took {self.steps}"

    def _written(self, profiler) -> None:
        self.profiler.export_chrome_trace(str(self.path))
        first = WAIT + WARMUP + 1
        self.terminal.line(
            f"profile of steps {first}-{first + ACTIVE - 1}: {self.path} (open it in https://ui.perfetto.dev "
            "or chrome://tracing); the operators by their own time:"
        )
        self.terminal.line(profiler.key_averages().table(sort_by=self.sort, row_limit=TOP))
        self.done = True


@contextlib.contextmanager
def _native_stderr_quiet():
    """Standard error's file descriptor pointed at /dev/null: the profiler's C++ side writes there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
