"""Benchmark 1: dlrun's training epoch against a bare PyTorch loop, same tensors, same work.

Each side trains its own copy of the same model with the same optimizer and batch size,
alternating epochs. dlrun runs its own train_one_epoch as a run does: the images held as uint8
and normalized per batch, loss and accuracy summed on the device, the NaN/inf watch, scalars to
its TensorBoard logger and a progress line every 50 steps. Two bare loops do nothing but the
step: one over the same uint8 tensors (normalized per batch the same way: the loop's own
overhead), one over pre-normalized float32 copies (4x the memory: what keeping uint8 costs).

Timing: the two sides alternate in chunks of about two seconds (many back-to-back pairs), and
the ratio is the median of the pairs' ratios, which a noisy machine's slow drift cannot bias.
Epoch times are the chunks' medians scaled to a full epoch.

On a GPU (`--device cuda`) the tensors and models live on the device, as a run keeps them, and each
chunk ends with a synchronize so that the time counts the work, not its queueing.

    python benchmarks/loop_overhead.py [--pairs 15] [--threads 2] [--device cpu|cuda]
"""

import argparse
import copy
import io
import tempfile

import torch
import torch.nn.functional as F
from rich.console import Console

from benchmarks.timing import REAL_DATA, interleaved, median, paired_ratio, row
from dlrun.config.schema import Trainer
from dlrun.data.batches import Normalize, TensorBatches
from dlrun.engine.state import Monitor, Outputs, Parts, TrainingState
from dlrun.engine.train import train_one_epoch
from dlrun.models.convnet import ConvNet
from dlrun.models.lenet import LeNet5
from dlrun.models.mlp import MLP
from dlrun.reporting.sinks import Sinks
from dlrun.reporting.tensorboard import TensorBoardSink
from dlrun.reporting.terminal import Report
from dlrun.runs.folder import RunFolder

DEVICE = torch.device("cpu")  # --device sets it


def mnist_images() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from torchvision.datasets import MNIST

        data = MNIST(str(REAL_DATA), train=True, download=False)
        return data.data.unsqueeze(1), data.targets, "MNIST"
    except Exception:  # no real data here: the same shapes, random content
        return (
            torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8),
            torch.randint(0, 10, (60000,)),
            "synthetic MNIST",
        )


def cifar_shaped() -> tuple[torch.Tensor, torch.Tensor, str]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (50000,), generator=generator), "synthetic CIFAR-10"


def bare_epoch(model, optimizer, inputs, targets, batch_size, generator, prepare=None, limit=None):
    model.train()
    order = torch.randperm(len(inputs), generator=generator)
    end = len(inputs) if limit is None else min(len(inputs), limit * batch_size)
    for start in range(0, end, batch_size):
        rows = order[start : start + batch_size]
        x = inputs[rows] if prepare is None else prepare(inputs[rows])
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), targets[rows])
        loss.backward()
        optimizer.step()


def synchronized(step):
    """The step, then a wait for the device's queue to empty (nothing to wait for on the CPU)."""

    def timed():
        step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)

    return timed


def compare(name, model, make_optimizer, images, labels, mean, std, batch_size, pairs, chunk):
    images, labels = images.to(DEVICE), labels.to(DEVICE)
    shape = (1, -1, 1, 1)
    floats = (images.float() / 255 - torch.tensor(mean, device=DEVICE).view(shape)) / torch.tensor(
        std, device=DEVICE
    ).view(shape)
    normalize = Normalize(mean, std, DEVICE)
    bare_model, float_model, dlrun_model = (copy.deepcopy(model).to(DEVICE) for _ in range(3))
    bare_opt, float_opt, dlrun_opt = (
        make_optimizer(bare_model),
        make_optimizer(float_model),
        make_optimizer(dlrun_model),
    )
    batches = TensorBatches(
        images,
        labels,
        batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        prepare=normalize,
    )
    bare_generator, float_generator = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    logger = TensorBoardSink(RunFolder(tempfile.mkdtemp(prefix="dlrun-bench-")))
    logger.start(None)
    report = Report("lines", console=Console(file=io.StringIO()))
    out = Outputs.quiet(terminal=report, sinks=Sinks([logger]))
    parts = Parts.of(dlrun_model, dlrun_opt, torch.nn.CrossEntropyLoss(), batches, device=DEVICE)
    trainer = Trainer(epochs=1, limit_train_batches=chunk)  # log_every_n_steps: 50, as a run

    def dlrun_epoch():
        train_one_epoch(parts, TrainingState(best=Monitor("val/acc", "max")), out, trainer)

    times = interleaved(
        {
            "dlrun": synchronized(dlrun_epoch),
            "bare": synchronized(
                lambda: bare_epoch(
                    bare_model, bare_opt, images, labels, batch_size, bare_generator, normalize, chunk
                )
            ),
            "float": synchronized(
                lambda: bare_epoch(
                    float_model, float_opt, floats, labels, batch_size, float_generator, None, chunk
                )
            ),
        },
        pairs,
    )
    logger.close()
    scale = len(batches) / chunk  # chunks -> one full epoch
    ratio = paired_ratio(times["dlrun"], times["bare"])
    print(
        row(
            name,
            *(f"{median(times[k]) * scale:.2f} s" for k in ("dlrun", "bare", "float")),
            f"{ratio:.3f}",
            f"{paired_ratio(times['dlrun'], times['float']):.3f}",
        ),
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mnist, mnist_labels, source = mnist_images()
    cifar, cifar_labels, cifar_source = cifar_shaped()
    print(
        f"epoch time from {args.pairs} alternating chunks per side, {args.threads} CPU threads, "
        f"{DEVICE.type}; "
        f"data: {source}, {cifar_source}"
    )
    print(
        "ratios: median of dlrun/bare over back-to-back chunk pairs "
        "(bare: same uint8 tensors; float: pre-normalized)"
    )
    print(row("model (batch, optimizer)", "dlrun", "bare", "float", "vs bare", "vs float"))
    adam = lambda lr: lambda m: torch.optim.Adam(m.parameters(), lr=lr)  # noqa: E731
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)  # noqa: E731
    grey, colour = ([0.1307], [0.3081]), ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    compare(
        "MLP 784-1000-10 (100, Adam)",
        MLP([1, 28, 28], 10, [1000]),
        adam(1e-3),
        mnist,
        mnist_labels,
        *grey,
        100,
        args.pairs,
        chunk=150,
    )
    compare(
        "LeNet-5 (64, Adam)",
        LeNet5([1, 28, 28], 10),
        adam(5e-4),
        mnist,
        mnist_labels,
        *grey,
        64,
        args.pairs,
        chunk=150,
    )
    compare(
        "CIFAR ConvNet (4, SGD)",
        ConvNet([3, 32, 32], 10),
        sgd,
        cifar,
        cifar_labels,
        *colour,
        4,
        args.pairs,
        chunk=1000,
    )
    compare(
        "CIFAR ConvNet (64, SGD)",
        ConvNet([3, 32, 32], 10),
        sgd,
        cifar,
        cifar_labels,
        *colour,
        64,
        args.pairs,
        chunk=200,
    )


if __name__ == "__main__":
    main()
