"""Benchmark 2: dlrun's data path against the classic tutorial's, same model, same epoch.

Classic: torchvision.datasets.MNIST with ToTensor + Normalize, a shuffling DataLoader (one PIL
image converted per sample, in the main process as the tutorials do). dlrun: the whole split as
one uint8 tensor, batches sliced from a seeded permutation and normalized per batch. Both train a
copy of the same model with the same optimizer and batch size for one epoch on the real MNIST.

    python benchmarks/data_path.py [--repeats 2] [--workers 0]
"""

import argparse
import copy

import torch
import torch.nn.functional as F

from benchmarks.timing import REAL_DATA, interleaved, median, paired_ratio, row
from dlrun.config.schema import Trainer
from dlrun.data.batches import Normalize, TensorBatches
from dlrun.engine.state import Monitor, Outputs, Parts, TrainingState
from dlrun.engine.train import train_one_epoch
from dlrun.models.lenet import LeNet5
from dlrun.models.mlp import MLP

CPU = torch.device("cpu")


def classic_loader(batch_size: int, workers: int):
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(str(REAL_DATA), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def classic_epoch(model, optimizer, loader):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()


def compare(name, model, lr, batch_size, repeats, workers):
    from torchvision.datasets import MNIST

    raw = MNIST(str(REAL_DATA), train=True, download=False)
    batches = TensorBatches(
        raw.data.unsqueeze(1),
        raw.targets,
        batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        prepare=Normalize([0.1307], [0.3081], CPU),
    )
    loader = classic_loader(batch_size, workers)
    dlrun_model, classic_model = copy.deepcopy(model), copy.deepcopy(model)
    dlrun_opt = torch.optim.Adam(dlrun_model.parameters(), lr=lr)
    classic_opt = torch.optim.Adam(classic_model.parameters(), lr=lr)
    parts = Parts.of(dlrun_model, dlrun_opt, torch.nn.CrossEntropyLoss(), batches)

    def fresh_state() -> TrainingState:
        return TrainingState(best=Monitor("val/acc", "max"))

    times = interleaved(
        {
            "dlrun": lambda: train_one_epoch(parts, fresh_state(), Outputs.quiet(), Trainer(epochs=1)),
            "classic": lambda: classic_epoch(classic_model, classic_opt, loader),
        },
        repeats,
    )
    speedup = 1 / paired_ratio(times["dlrun"], times["classic"])
    print(
        row(name, f"{median(times['dlrun']):.2f} s", f"{median(times['classic']):.2f} s", f"{speedup:.1f}x"),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the classic path")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"one epoch of the 60,000 MNIST training images, median of {args.repeats}; "
        f"{torch.get_num_threads()} CPU threads; "
        f"classic DataLoader workers: {args.workers}"
    )
    print(row("model (batch, optimizer)", "dlrun", "classic", "speed-up"))
    compare(
        "MLP 784-1000-10 (100, Adam)", MLP([1, 28, 28], 10, [1000]), 1e-3, 100, args.repeats, args.workers
    )
    compare("LeNet-5 (64, Adam)", LeNet5([1, 28, 28], 10), 5e-4, 64, args.repeats, args.workers)


if __name__ == "__main__":
    main()
