"""Benchmark 5: what TensorBoard logging costs, as epoch time with it on versus off.

Runs the mnist_mlp preset (real MNIST) through the `dlrun` command, alternating logger=tensorboard
(scalars every 50 steps, graph, input grid, 10 PR curves and the confusion matrix at every
validation, HPARAMS) and logger=none. Compares the median epoch time (training, validation and
logging) of epochs 2.., and the whole run's wall time. Whole runs on a shared 2-core VM drift by
more than the 2 % goal, so a third figure is exact: one more run with TensorBoard on times the
logging calls themselves (every TensorBoardSink method an epoch calls) against its epoch time.

    python benchmarks/logging_cost.py [--repeats 3] [--epochs 4]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import REAL_DATA, median, paired_ratio, row


def run(logger: str, epochs: int, folder: Path) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "experiment=mnist_mlp",
            f"dataset.root={REAL_DATA}",
            f"trainer.epochs={epochs}",
            f"logger={logger}",
            "terminal.progress=off",
            f"hydra.run.dir={folder}",
        ],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    history = json.loads((folder / "metrics.json").read_text())["history"]
    return median([row["seconds"] for row in history[1:]]), wall


# A run of the preset in which each per-epoch call of the TensorBoard logger adds its own time to
# a counter.
TIMED_CALLS = """
import json, sys, time
from dlrun.reporting import tensorboard
spent = {"seconds": 0.0}
for name in ("logged", "epoch_ended", "validated"):
    def timed(self, *args, _call=getattr(tensorboard.TensorBoardSink, name), **kwargs):
        started = time.perf_counter()
        try:
            return _call(self, *args, **kwargs)
        finally:
            spent["seconds"] += time.perf_counter() - started
    setattr(tensorboard.TensorBoardSink, name, timed)
from dlrun import cli
sys.argv = ["dlrun", *sys.argv[1:]]
try:
    cli.main()
except SystemExit:
    pass
print(json.dumps(spent))
"""


def logging_share(epochs: int, folder: Path) -> tuple[float, float]:
    """(seconds of logging calls per epoch, seconds per epoch) inside one run with TensorBoard on."""
    args = ["experiment=mnist_mlp", f"dataset.root={REAL_DATA}", f"trainer.epochs={epochs}"]
    args += ["terminal.progress=off", f"hydra.run.dir={folder}"]
    done = subprocess.run(
        [sys.executable, "-c", TIMED_CALLS, *args], check=True, capture_output=True, text=True
    )
    spent = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    history = json.loads((folder / "metrics.json").read_text())["history"]
    return spent / epochs, median([row["seconds"] for row in history])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"tensorboard": [], "none": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for logger in results:
                results[logger].append(run(logger, args.epochs, Path(scratch) / f"{logger}{repeat}"))
    print(
        f"mnist_mlp, {args.epochs} epochs, {args.repeats} runs each, alternating; cost: median of the "
        "ratios of back-to-back runs"
    )
    print(row("", "logging on", "off", "cost"))
    for index, label in ((0, "epoch time (epochs 2..)"), (1, "whole run, wall")):
        on = [r[index] for r in results["tensorboard"]]
        off = [r[index] for r in results["none"]]
        print(row(label, f"{median(on):.2f} s", f"{median(off):.2f} s", f"{paired_ratio(on, off) - 1:+.1%}"))
    with tempfile.TemporaryDirectory() as scratch:
        calls, epoch = logging_share(args.epochs, Path(scratch) / "timed")
    print(
        f"logging calls inside a run: {calls * 1000:.0f} ms per epoch of {epoch:.2f} s = {calls / epoch:.1%} "
        "(scalars, PR curves, confusion matrix)"
    )


if __name__ == "__main__":
    main()
