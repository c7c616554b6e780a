"""Benchmark 5: what TensorBoard logging costs, as epoch time with it on versus off.

Runs the mnist_mlp preset (real MNIST) through the `dlrun` command, alternating logger=tensorboard
(scalars every 50 steps, graph, input grid, 10 PR curves and the confusion matrix at every
validation, HPARAMS) and logger=none. Compares the median epoch time (training, validation and
logging) of epochs 2.., and the whole run's wall time.

    python benchmarks/logging_cost.py [--repeats 3] [--epochs 4]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import REAL_DATA, median, row


def run(logger: str, epochs: int, folder: Path) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlrun", "experiment=mnist_mlp", f"dataset.root={REAL_DATA}",
                    f"trainer.epochs={epochs}", f"logger={logger}", "logger.progress=off",
                    f"hydra.run.dir={folder}"], check=True, capture_output=True)
    wall = time.perf_counter() - started
    history = json.loads((folder / "metrics.json").read_text())["history"]
    return median([row["seconds"] for row in history[1:]]), wall


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
    epoch = {logger: median([r[0] for r in runs]) for logger, runs in results.items()}
    wall = {logger: median([r[1] for r in runs]) for logger, runs in results.items()}
    print(f"mnist_mlp, {args.epochs} epochs, median of {args.repeats} runs each")
    print(row("", "logging on", "off", "cost"))
    print(row("epoch time (epochs 2..)", f"{epoch['tensorboard']:.2f} s", f"{epoch['none']:.2f} s",
              f"{(epoch['tensorboard'] / epoch['none'] - 1):+.1%}"))
    print(row("whole run, wall", f"{wall['tensorboard']:.2f} s", f"{wall['none']:.2f} s",
              f"{(wall['tensorboard'] / wall['none'] - 1):+.1%}"))


if __name__ == "__main__":
    main()
