"""Benchmark 10: what augmentation costs, as epoch time of the fashion_mnist_cnn preset (real
Fashion-MNIST) with each setting on versus none.

MixUp / CutMix work on whole batches on the device; a policy (TrivialAugmentWide) and random
erasing run per image on the CPU in the main process. Candidates alternate, so drift in machine
load hits them alike; the figure is the median epoch time (training, validation, logging).

    python benchmarks/augmentation_cost.py [--repeats 2] [--epochs 1]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import REAL_DATA, median, row

CANDIDATES = {
    "none": [],
    "mixup 0.2 + cutmix 1.0": ["dataset.augment.mixup_alpha=0.2", "dataset.augment.cutmix_alpha=1.0"],
    "trivialaugment": ["dataset.augment.auto=trivialaugment"],
    "trivialaugment + erasing 0.25": [
        "dataset.augment.auto=trivialaugment",
        "dataset.augment.random_erasing=0.25",
    ],
}


def epoch_seconds(settings: list[str], epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "dlrun", "experiment=fashion_mnist_cnn", f"dataset.root={REAL_DATA}"]
            + [f"trainer.epochs={epochs}", "logger=none", "terminal.progress=off"]
            + [f"hydra.run.dir={folder}/run", *settings],
            check=True,
            capture_output=True,
        )
        history = json.loads((Path(folder) / "run" / "metrics.json").read_text())["history"]
    return [entry["seconds"] for entry in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(args.repeats):
        for name, settings in CANDIDATES.items():
            seconds[name] += epoch_seconds(settings, args.epochs)
    base = median(seconds["none"])
    print(row("fashion_mnist_cnn, CPU", "epoch s", "x none", widths=(34, 10, 10)))
    for name, times in seconds.items():
        print(row(name, f"{median(times):.1f}", f"{median(times) / base:.2f}", widths=(34, 10, 10)))


if __name__ == "__main__":
    main()
