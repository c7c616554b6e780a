"""Shared by the benchmarks: where the real data is, and how to time alternating candidates."""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run each candidate `repeats` times, alternating, so drift in machine load hits all alike.
    The first call of each is a warm-up and is not timed."""
    for run in candidates.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the ratios of runs made back to back: robust to slow drift in machine load."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def row(*cells, widths=(30, 10, 10, 10, 10, 10)) -> str:
    return "".join(
        str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths))
    )


def dlrun_history(preset: str, epochs: int) -> list[dict]:
    """The per-epoch history (metrics.json) of `dlrun experiment=<preset>` on the real data."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "dlrun", f"experiment={preset}", f"dataset.root={REAL_DATA}"]
            + [f"trainer.epochs={epochs}", "terminal.progress=off", f"hydra.run.dir={folder}/run"],
            check=True,
            capture_output=True,
        )
        return json.loads((Path(folder) / "run" / "metrics.json").read_text())["history"]
