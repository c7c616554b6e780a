"""Benchmark 9: a training epoch on a shared CPU, at 1 and at 2 torch threads.

dlrun's own train_one_epoch trains the mnist_mlp model (784-1000-10, batch 100, Adam) on MNIST
(synthetic when the real files are absent), first with the machine quiet, then with another
process keeping one core busy (what a second job, a browser or a compile does to a laptop).
Thread counts alternate in short chunks; epoch times are the chunks' medians scaled to an epoch.

    python -m benchmarks.shared_cpu [--pairs 8]
"""

import argparse
import subprocess
import sys

import torch

from benchmarks.loop_overhead import mnist_images
from benchmarks.timing import interleaved, median, row
from dlrun.config.schema import Trainer
from dlrun.data.batches import Normalize, TensorBatches
from dlrun.engine.state import Monitor, Outputs, Parts, TrainingState
from dlrun.engine.train import train_one_epoch
from dlrun.machine import cpu_seconds, usable_cpus
from dlrun.models.mlp import MLP

CHUNK = 100  # steps per timed chunk: about a second on 2 cores
BUSY = "while True: pass"


def epoch_at(threads: int, parts: Parts, trainer: Trainer):
    def run() -> None:
        torch.set_num_threads(threads)
        train_one_epoch(parts, TrainingState(best=Monitor("val/acc", "max")), Outputs.quiet(), trainer)

    return run


def measure(pairs: int, parts: Parts, trainer: Trainer, steps: int) -> dict[str, float]:
    times = interleaved({f"{t} thread(s)": epoch_at(t, parts, trainer) for t in (1, 2)}, pairs)
    return {name: median(values) * steps / CHUNK for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    images, labels, source = mnist_images()
    cpu = torch.device("cpu")
    batches = TensorBatches(
        images,
        labels,
        100,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        prepare=Normalize([0.1307], [0.3081], cpu),
    )
    model = MLP([1, 28, 28], 10, [1000])
    parts = Parts.of(
        model, torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss(), batches
    )
    trainer = Trainer(epochs=1, limit_train_batches=CHUNK)
    print(f"mnist_mlp epoch ({len(batches)} steps, {source}), {usable_cpus()} CPUs, {args.pairs} chunks each")
    print(row("machine", "1 thread", "2 threads", "2 / 1"))
    quiet = measure(args.pairs, parts, trainer, len(batches))
    print(
        row(
            "quiet",
            *(f"{quiet[k]:.1f} s" for k in quiet),
            f"{quiet['2 thread(s)'] / quiet['1 thread(s)']:.2f}",
        )
    )
    spinner = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        spinning = cpu_seconds()
        busy = measure(args.pairs, parts, trainer, len(batches))
    finally:
        spinner.kill()
        print(f"(the other process ran {_elsewhere(spinning):.0f} CPU seconds meanwhile)")
    ratio = busy["2 thread(s)"] / busy["1 thread(s)"]
    print(row("one core busy", *(f"{busy[k]:.1f} s" for k in busy), f"{ratio:.2f}"))


def _elsewhere(before) -> float:
    after = cpu_seconds()
    return (after[0] - before[0]) - (after[1] - before[1])


if __name__ == "__main__":
    main()
