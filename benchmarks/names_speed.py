"""Benchmark 3: the batched char-RNN against the classic one-name-at-a-time loop.

Classic: the PyTorch char-RNN tutorial's model (i2h / i2o linear layers over one-hot letters,
128 hidden, log-softmax, NLL), one random language then one random name of it per step, plain
SGD at lr 0.005, 100k steps. It is scored on dlrun's validation split of the same data (and
trained only on dlrun's training split). Then the names_char_rnn preset runs through `dlrun`,
and the time it needs to reach the classic loop's accuracy is read from its per-epoch history.

    python benchmarks/names_speed.py [--steps 100000]
"""

import argparse
import random
import time

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.timing import REAL_DATA, dlrun_history
from dlrun.data import LoadOptions
from dlrun.data.names import load_names


class TutorialRNN(nn.Module):
    """The tutorial's hand-written recurrent cell."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, letter, hidden):
        combined = torch.cat((letter, hidden), 1)
        return self.softmax(self.i2o(combined)), self.i2h(combined)


def one_hot(tokens: torch.Tensor, size: int) -> torch.Tensor:
    ids = tokens[tokens != 0]
    return nn.functional.one_hot(ids, size).float().unsqueeze(1)  # [letters, 1, vocab]


def classify(rnn, tokens, size):
    hidden = torch.zeros(1, rnn.hidden_size)
    for letter in one_hot(tokens, size):
        output, hidden = rnn(letter, hidden)
    return output


def classic(splits, steps: int, lr: float = 0.005) -> tuple[float, float]:
    (train_x, train_y), (val_x, val_y) = splits.train, splits.val
    size = splits.facts.vocab_size
    rnn = TutorialRNN(size, 128, splits.facts.num_classes)
    criterion = nn.NLLLoss()
    by_class = [torch.nonzero(train_y == c).flatten().tolist() for c in range(splits.facts.num_classes)]
    rng = random.Random(0)
    started = time.perf_counter()
    for _ in range(steps):
        language = rng.randrange(len(by_class))
        row = rng.choice(by_class[language])
        rnn.zero_grad()
        loss = criterion(classify(rnn, train_x[row], size), torch.tensor([language]))
        loss.backward()
        for parameter in rnn.parameters():
            parameter.data.add_(parameter.grad.data, alpha=-lr)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        correct = sum(int(classify(rnn, x, size).argmax(1).item() == y) for x, y in zip(val_x, val_y))
    return correct / len(val_y), seconds


def batched(target: float, epochs: int) -> tuple[float, float, float]:
    """(seconds of dlrun training until val accuracy >= target, the accuracy then, best val acc)."""
    history = dlrun_history("names_char_rnn", epochs)
    elapsed = 0.0
    for row in history:
        elapsed += row["seconds"]
        if row["val/acc"] >= target:
            return elapsed, row["val/acc"], max(r["val/acc"] for r in history)
    return float("inf"), history[-1]["val/acc"], max(r["val/acc"] for r in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = OmegaConf.create({"root": str(REAL_DATA), "val_fraction": 0.1, "test_fraction": 0.1})
    splits = load_names(cfg, LoadOptions("classification", 42, 32, 128, torch.device("cpu")))
    accuracy, classic_seconds = classic(splits, args.steps)
    print(
        f"classic loop: {args.steps:,} steps in {classic_seconds:.1f} s, val accuracy {accuracy:.1%}",
        flush=True,
    )
    seconds, reached, best = batched(accuracy, args.epochs)
    print(
        f"dlrun names_char_rnn: reached {reached:.1%} after {seconds:.1f} s of training "
        f"(best {best:.1%} in {args.epochs} epochs)"
    )
    print(f"speed-up to the same accuracy: {classic_seconds / seconds:.0f}x")


if __name__ == "__main__":
    main()
