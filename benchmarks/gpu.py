"""Benchmark 6 (for a machine with a GPU): epoch times and throughput on the training device.

MNIST MLP (784-1000-10, batch 100) and LeNet-5 (batch 64) epochs on the real MNIST through
`dlrun` (device-resident uint8 data, the whole run's loop), then the CIFAR-10 ConvNet's training
throughput in images/s on CIFAR-shaped data held on the device, in fp32 and bf16 autocast.
Runs on the CPU too (device auto), which only checks that it works.

    python benchmarks/gpu.py [--epochs 3]
"""

import argparse
import time

import torch

from benchmarks.timing import dlrun_history, median, row
from dlrun.config.schema import Trainer
from dlrun.data.batches import Normalize, TensorBatches
from dlrun.engine.runtime import Precision, select_device
from dlrun.engine.state import Monitor, Outputs, Parts, TrainingState
from dlrun.engine.train import train_one_epoch
from dlrun.models.convnet import ConvNet


def epoch_seconds(preset: str, epochs: int) -> float:
    history = dlrun_history(preset, epochs)
    return median([entry["seconds"] for entry in history[1:]] or [history[0]["seconds"]])


def cifar_throughput(
    device: torch.device, precision: str, batch_size: int = 256, batches: int = 100
) -> float:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (batch_size * batches, 3, 32, 32), dtype=torch.uint8, generator=generator
    ).to(device)
    labels = torch.randint(0, 10, (batch_size * batches,), generator=generator).to(device)
    split = TensorBatches(
        images,
        labels,
        batch_size,
        shuffle=True,
        generator=generator,
        prepare=Normalize([0.5] * 3, [0.25] * 3, device),
    )
    model = ConvNet([3, 32, 32], 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def epoch():
        parts = Parts.of(
            model,
            optimizer,
            torch.nn.CrossEntropyLoss(),
            split,
            precision=Precision(precision, device),
            device=device,
        )
        train_one_epoch(
            parts, TrainingState(best=Monitor("val/acc", "max")), Outputs.quiet(), Trainer(epochs=1)
        )
        if device.type == "cuda":
            torch.cuda.synchronize()

    epoch()  # warm-up: kernels, allocator
    started = time.perf_counter()
    epoch()
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    device = select_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"device: {name}")
    widths = (40, 16)
    print(
        row("MNIST MLP epoch (mnist_mlp)", f"{epoch_seconds('mnist_mlp', args.epochs):.2f} s", widths=widths)
    )
    print(
        row(
            "MNIST LeNet-5 epoch (mnist_lenet)",
            f"{epoch_seconds('mnist_lenet', args.epochs):.2f} s",
            widths=widths,
        )
    )
    for precision in ("32", "bf16"):
        print(
            row(
                f"CIFAR ConvNet, batch 256, precision {precision}",
                f"{cifar_throughput(device, precision):,.0f} img/s",
                widths=widths,
            )
        )


if __name__ == "__main__":
    main()
