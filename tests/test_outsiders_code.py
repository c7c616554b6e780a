"""Code written by other people, as a user brings it: a class copied unchanged from pytorch/examples,
lazy layers, and user code that fails in each place it can (the first batch, a training step, a
loss, a dataset read by a DataLoader worker). Each test builds a fresh project in a temporary
folder outside the repository."""

import json
import sys
import textwrap

from dlrun.errors import failed_in_user_code
from tests.helpers import FEW_STEPS, project

# pytorch/examples, mnist/main.py, class Net, copied unchanged: no arguments, 28x28 inputs of one
# channel hard-coded, ends in log_softmax
EXAMPLES_NET = """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output
"""

FIRST_CONV = textwrap.dedent(EXAMPLES_NET).splitlines().index("        x = self.conv1(x)") + 1

FAULTY = """
    import torch
    from torch import nn


    class FailsAtStepFive(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_shape[0], num_classes)
            self.steps = 0

        def forward(self, x):
            if self.training:
                self.steps += 1
                if self.steps == 5:
                    raise ValueError("the fifth batch is bad")
            return self.fc(x)


    class Lazy(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.layers = nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_classes))

        def forward(self, x):
            return self.layers(x.flatten(1))


    class PickyLoss(nn.Module):
        def forward(self, outputs, targets):
            raise TypeError("PickyLoss wants a dict of outputs")


    class Rows(torch.utils.data.Dataset):
        def __init__(self, count=200):
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randn(count, 4, generator=generator)
            self.y = (self.x[:, 0] > 0).long()
            self.classes = ["negative", "positive"]

        def __len__(self):
            return len(self.x)

        def __getitem__(self, index):
            if index == 150:
                raise KeyError(f"row {index} is missing")
            return self.x[index], self.y[index]
"""


def outsider(tmp_path, monkeypatch, tag: str):
    return project(
        tmp_path / "outsider",
        monkeypatch,
        {
            f"examples_net_{tag}.py": EXAMPLES_NET,
            f"faulty_{tag}.py": FAULTY,
            "configs/model/examples_net.yaml": f"_target_: examples_net_{tag}.Net\n",
            "configs/model/step_five.yaml": f"_target_: faulty_{tag}.FailsAtStepFive\n",
            "configs/model/lazy.yaml": f"_target_: faulty_{tag}.Lazy\n",
            "configs/loss/picky.yaml": f"_target_: faulty_{tag}.PickyLoss\n",
            "configs/dataset/rows.yaml": f"_target_: faulty_{tag}.Rows\nin_memory: false\nnum_workers: 1\n",
        },
    )


def one_line_then_own_frames(result, *in_line: str) -> list[str]:
    """The error: one `dlrun: error:` line holding `in_line`, then only the user's frames."""
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("dlrun: error: "), result.err
    assert all(part in lines[0] for part in in_line), lines[0]
    frames = [line for line in lines if line.lstrip().startswith("File ")]
    assert frames and all("outsider" in line for line in frames), result.err  # no Hydra, dlrun, torch
    assert "Error executing job" not in result.err
    return lines


def test_the_mnist_net_of_pytorch_examples_trains_unchanged(dlrun, tmp_path, monkeypatch, data_root):
    outsider(tmp_path, monkeypatch, "a")
    result = dlrun("model=examples_net", "dataset=mnist", f"dataset.root={data_root}", "loss=nll", *FEW_STEPS)
    assert result.code == 0, result.err
    assert "model (examples_net: examples_net_a.Net)" in result.out


def test_a_forward_that_cannot_read_the_data_is_one_line_on_the_first_batch(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "b")
    result = dlrun("model=examples_net", *FEW_STEPS)  # a conv net on the wine table
    assert result.code == 1
    one_line_then_own_frames(
        result,
        "on a first batch of inputs [2, 13], your code raised RuntimeError: Expected 3D (unbatched) or 4D",
        f"(examples_net_b.py:{FIRST_CONV}, in forward)",
    )
    assert not result.run_dir.exists()  # refused before it trained: nothing left behind


def test_a_forward_that_fails_at_step_five_keeps_the_line_in_the_run_folder(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "c")
    result = dlrun("model=step_five", "trainer.epochs=1")
    assert result.code == 1
    line = one_line_then_own_frames(
        result, "at step 5 (epoch 1), your code raised ValueError: the fifth batch"
    )[0]
    reason = line.removeprefix("dlrun: error: ")
    assert (result.run_dir / "error.txt").read_text().startswith(reason)
    assert reason in (result.run_dir / "dlrun.log").read_text()


def test_a_loss_that_raises_is_named_at_its_step(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "d")
    result = dlrun("loss=picky", *FEW_STEPS)
    assert result.code == 1
    one_line_then_own_frames(
        result, "at step 1 (epoch 1), your code raised TypeError: PickyLoss wants", "in forward)"
    )


def test_a_dataset_that_raises_in_a_dataloader_worker(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "e")
    result = dlrun("dataset=rows", "model=linear", *FEW_STEPS)
    assert result.code == 1
    one_line_then_own_frames(
        result, "in a DataLoader worker, your code raised KeyError: 'row 150 is missing'", "in __getitem__)"
    )


def test_lazy_layers_train_resume_evaluate_and_predict(dlrun, tmp_path, monkeypatch):
    from dlrun import cli

    outsider(tmp_path, monkeypatch, "f")
    first = dlrun("model=lazy", "trainer.epochs=2", "optimizer.lr=0.01")
    assert first.code == 0, first.err
    assert "trainable parameters" in first.out and first.checkpoint()["model"]["layers.0.weight"].shape == (
        32,
        13,
    )
    longer = dlrun(
        "model=lazy",
        "trainer.epochs=3",
        "optimizer.lr=0.01",
        f"trainer.resume={first.run_dir / 'checkpoints' / 'last.pt'}",
        "trainer.resume_force=true",
        run_dir=first.run_dir,
    )
    assert longer.code == 0, longer.err
    assert "resumed from" in longer.out and "epoch 3/3" in longer.out
    report = tmp_path / "report.json"
    scored = dlrun(
        f"ckpt={first.run_dir / 'checkpoints' / 'best.pt'}", f"output={report}", program=cli.eval_main
    )
    assert scored.code == 0, scored.err
    assert json.loads(report.read_text())["acc"] > 0.5


def test_a_fault_with_no_frame_of_the_users_keeps_its_traceback():
    try:
        json.loads("{")
    except ValueError as error:
        error.__traceback__ = error.__traceback__.tb_next  # only the standard library's frames
        assert failed_in_user_code(error, "at step 1") is None
    try:
        json.loads("{")
    except ValueError as error:  # this file's frame is code of the user's
        failed = failed_in_user_code(error, "at step 1")
        assert failed is not None and str(failed).startswith("at step 1, your code raised JSONDecodeError")
        assert sys.modules[__name__].__file__ in failed.details
