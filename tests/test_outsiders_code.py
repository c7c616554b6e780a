"""Code written by other people, as a user brings it: a class copied unchanged from pytorch/examples,
lazy layers, and user code that fails in each place it can (the first batch, a training step, a
loss, a dataset read by a DataLoader worker). Each test builds a fresh project in a temporary
folder outside the repository."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlrun import cli
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


    class FailsWhenScored(nn.Module):  # trains; its `at`-th batch scored after training raises
        def __init__(self, in_shape, num_classes, at=1):
            super().__init__()
            self.fc = nn.Linear(in_shape[0], num_classes)
            self.at, self.trained, self.scored = at, False, 0

        def forward(self, x):
            if self.training:
                self.trained = True
            elif self.trained:
                self.scored += 1
                if self.scored == self.at:
                    raise ValueError(f"scored batch {self.at} is bad")
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
            "configs/model/fails_scored.yaml": f"_target_: faulty_{tag}.FailsWhenScored\nat: 1\n",
            "configs/loss/picky.yaml": f"_target_: faulty_{tag}.PickyLoss\n",
            "configs/dataset/rows.yaml": f"_target_: faulty_{tag}.Rows\nin_memory: false\nnum_workers: 1\n",
        },
    )


def module_project(tmp_path, monkeypatch, module: str, code: str, configs: dict[str, str]):
    """A fresh project: `module`.py (named per test: an imported module stays cached) and the
    configs/<group>/<option>.yaml files of `configs`, where {module} is its name."""
    files = {f"configs/{name}.yaml": text.replace("{module}", module) for name, text in configs.items()}
    return project(tmp_path / "outsider", monkeypatch, {f"{module}.py": code, **files})


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
        "on a first batch of inputs [2, 13], your model (examples_net_b.Net) raised RuntimeError: Expected",
        f"(examples_net_b.py:{FIRST_CONV}, in forward)",
    )
    assert not result.run_dir.exists()  # refused before it trained: nothing left behind


def test_a_forward_that_fails_at_step_five_keeps_the_line_in_the_run_folder(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "c")
    result = dlrun("model=step_five", "trainer.epochs=1")
    assert result.code == 1
    line = one_line_then_own_frames(
        result,
        "at step 5 (epoch 1), your model (faulty_c.FailsAtStepFive) raised ValueError: the fifth batch",
    )[0]
    reason = line.removeprefix("dlrun: error: ")
    assert (result.run_dir / "error.txt").read_text().startswith(reason)
    assert reason in (result.run_dir / "dlrun.log").read_text()


@pytest.mark.parametrize(
    "at, stage",
    # wine in batches of 64: one validation batch an epoch, then best.pt is scored on test
    [(1, r"validating after epoch 1 \(step 2\)"), (2, "scoring best.pt on test")],
)
def test_a_model_that_fails_while_a_split_is_scored_is_named_with_the_split(
    dlrun, tmp_path, monkeypatch, at, stage
):
    outsider(tmp_path, monkeypatch, f"g{at}")
    result = dlrun("model=fails_scored", f"model.at={at}", "trainer.batch_size=64", "trainer.epochs=1")
    assert result.code == 1
    line = one_line_then_own_frames(result, f"scored batch {at} is bad")[0]
    assert re.fullmatch(
        rf"dlrun: error: {stage}, your model \(faulty_g{at}.FailsWhenScored\) raised ValueError: .+", line
    ), line
    assert (result.run_dir / "error.txt").read_text().startswith(line.removeprefix("dlrun: error: "))


def test_a_model_that_fails_in_the_lr_range_test_is_one_line_naming_it(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "h")
    result = dlrun("model=step_five", program=cli.lr_find_main)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(
        "dlrun-lr-find: error: during the lr range test, your model (faulty_h.FailsAtStepFive) raised "
        "ValueError: the fifth batch is bad (faulty_h.py:"
    ), result.err
    frames = [line for line in lines if line.lstrip().startswith("File ")]
    assert frames and all("outsider" in line for line in frames), result.err  # no dlrun, torch


def test_a_loss_that_raises_is_named_at_its_step(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "d")
    result = dlrun("loss=picky", *FEW_STEPS)
    assert result.code == 1
    one_line_then_own_frames(
        result,
        "at step 1 (epoch 1), your loss (faulty_d.PickyLoss) raised TypeError: PickyLoss wants",
        "in forward)",
    )


def test_a_dataset_that_raises_in_a_dataloader_worker(dlrun, tmp_path, monkeypatch):
    outsider(tmp_path, monkeypatch, "e")
    result = dlrun("dataset=rows", "model=linear", *FEW_STEPS)
    assert result.code == 1
    one_line_then_own_frames(
        result,
        "in a DataLoader worker, your dataset (faulty_e.Rows) raised KeyError: 'row 150 is missing'",
        "in __getitem__)",
    )


SLOW_ROWS = """
    import time

    import torch


    class SlowRows(torch.utils.data.Dataset):
        def __len__(self):
            return 240

        def __getitem__(self, index):
            time.sleep(0.006)  # a file read over a slow network, say: the model waits for it
            return torch.full((4,), float(index % 2)), index % 2
"""


def test_a_dataset_slower_than_the_model_is_said_once_with_what_to_set(dlrun, tmp_path, monkeypatch):
    configs = {"dataset/slow": "_target_: {module}.SlowRows\nin_memory: false\nnum_workers: 0\n"}
    module_project(tmp_path, monkeypatch, "slow_rows", SLOW_ROWS, configs)
    result = dlrun("dataset=slow", "model=linear", "trainer.epochs=2", "trainer.batch_size=16")
    assert result.code == 0, result.err
    said = " ".join(result.out.split())  # the terminal folds long lines
    assert said.count("training waited for batches") == 1  # the first epoch only
    assert "epoch 1: training waited for batches" in said
    assert "set dataset.num_workers=2 (now 0" in said
    held = dlrun("trainer.epochs=2")  # wine, held in memory: never waits
    assert "waited for batches" not in held.out


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


# the shape of timm.create_model and torchvision's model functions: a name, the rest by **kwargs
KWARGS_FACTORIES = """
    from torch import nn


    def create_model(model_name, pretrained=False, **kwargs):
        in_chans, num_classes = kwargs.pop("in_chans", 3), kwargs.pop("num_classes", 1000)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        pooled = (nn.Conv2d(in_chans, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return nn.Sequential(*pooled, nn.Linear(4, num_classes))


    class OwnNames(nn.Module):
        def __init__(self, features, outputs):
            super().__init__()
            self.fc = nn.Linear(features, outputs)

        def forward(self, x):
            return self.fc(x)


    class FiveScores(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 5)

        def forward(self, x):
            return self.fc(x)


    class IgnoresClasses(FiveScores):
        def __init__(self, num_classes):
            super().__init__()
"""


def kwargs_project(tmp_path, monkeypatch, tag: str, model_yaml: str):
    configs = {"model/mine": model_yaml}
    return module_project(tmp_path, monkeypatch, f"factories_{tag}", KWARGS_FACTORIES, configs)


def test_a_kwargs_factory_is_given_num_classes_and_reads_the_channels_as_a_fact(
    dlrun, tmp_path, monkeypatch, data_root
):
    kwargs_project(
        tmp_path,
        monkeypatch,
        "g",
        "_target_: {module}.create_model\nmodel_name: tiny\nin_chans: ${facts.channels}\n",
    )
    result = dlrun("model=mine", "dataset=fashion_mnist", f"dataset.root={data_root}", *FEW_STEPS)
    assert result.code == 0, result.err
    weights = result.checkpoint()["model"]
    assert weights["0.weight"].shape[1] == 1 and weights["4.weight"].shape[0] == 10  # 1 channel, 10 classes
    assert "in_chans: 1" in (result.run_dir / "config.yaml").read_text()


def test_a_channel_mismatch_says_what_to_set(dlrun, tmp_path, monkeypatch, data_root):
    kwargs_project(tmp_path, monkeypatch, "h", "_target_: {module}.create_model\nmodel_name: tiny\n")
    result = dlrun("model=mine", "dataset=fashion_mnist", f"dataset.root={data_root}", *FEW_STEPS)
    assert result.code == 1
    first = result.err.splitlines()[0]  # torch's layers raised it: no frame of the user's to show
    assert first.startswith("dlrun: error: on a first batch of inputs [2, 1, 28, 28], your code raised")
    assert first.endswith(
        "; the model expects 3 input channels and the data has 1: give the model the data's, "
        "e.g. in_chans: ${facts.channels} (timm's name; yours may differ)"
    )
    assert "Error executing job" not in result.err


def test_facts_reach_a_model_under_its_own_names(dlrun, tmp_path, monkeypatch):
    yaml = "_target_: {module}.OwnNames\nfeatures: ${facts.in_shape.0}\noutputs: ${facts.num_classes}\n"
    kwargs_project(tmp_path, monkeypatch, "i", yaml)
    result = dlrun("model=mine", *FEW_STEPS)  # the wine table: 13 features, 3 classes
    assert result.code == 0, result.err
    assert result.checkpoint()["model"]["fc.weight"].shape == (3, 13)


def test_a_misspelt_fact_lists_the_facts(dlrun, tmp_path, monkeypatch):
    kwargs_project(
        tmp_path, monkeypatch, "j", "_target_: {module}.OwnNames\nfeatures: 13\noutputs: ${facts.classes}\n"
    )
    result = dlrun("model=mine", *FEW_STEPS)
    assert result.code == 2
    assert result.err.strip() == (
        "dlrun: error: model.outputs=${facts.classes}: facts has no 'classes'; did you mean "
        "num_classes or class_names? it has: in_shape, channels, num_classes, vocab_size, class_names"
    )


def test_a_dataset_cannot_read_the_facts_it_makes(dlrun, tmp_path, monkeypatch, csv_file):
    kwargs_project(tmp_path, monkeypatch, "k", "_target_: {module}.FiveScores\n")
    result = dlrun("dataset=csv", f"dataset.path={csv_file}", "dataset.val_fraction=${facts.num_classes}")
    assert result.code == 2
    assert result.err.startswith(
        "dlrun: error: dataset.val_fraction: ${facts...} is known only once the data is loaded"
    )


def test_the_shape_hint_names_only_what_dlrun_gave(dlrun, tmp_path, monkeypatch):
    kwargs_project(tmp_path, monkeypatch, "l", "_target_: {module}.FiveScores\n")
    nothing = dlrun("model=mine", *FEW_STEPS)
    assert nothing.code != 0
    assert (
        "(dlrun gave it no sizes, as its signature names none: set them in its config, e.g. " in nothing.err
    )
    kwargs_project(tmp_path, monkeypatch, "m", "_target_: {module}.IgnoresClasses\n")
    ignored = dlrun("model=mine", *FEW_STEPS)
    assert ignored.code != 0 and "make its last layer fit (dlrun gave it num_classes=3)" in ignored.err


TIMM_YAML = "_target_: timm.create_model\nmodel_name: test_resnet\nin_chans: ${facts.channels}\n"


def test_timm_create_model_trains_fashion_mnist_by_config_alone(dlrun, tmp_path, monkeypatch, data_root):
    pytest.importorskip("timm")
    project(
        tmp_path / "outsider",
        monkeypatch,
        {"configs/model/timm.yaml": TIMM_YAML},
    )
    result = dlrun("model=timm", "dataset=fashion_mnist", f"dataset.root={data_root}", *FEW_STEPS)
    assert result.code == 0, result.err
    assert result.checkpoint()["model"]["fc.weight"].shape[0] == 10


TINY_NET = """
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_shape[0], num_classes)

        def forward(self, x):
            return self.fc(x)
"""


def hydra_app_folder(root, tag: str):
    """A folder laid out as for a Hydra app, no pyproject.toml: nets.py beside configs/."""
    (root / "configs" / "model").mkdir(parents=True)
    (root / f"nets_{tag}.py").write_text(textwrap.dedent(TINY_NET))
    (root / "configs" / "model" / "tiny.yaml").write_text(f"_target_: nets_{tag}.Tiny\n")
    return root


def test_config_dir_makes_the_folder_that_holds_it_importable(dlrun, tmp_path, monkeypatch):
    app = hydra_app_folder(tmp_path / "app", "n")
    monkeypatch.chdir(app)
    inside = dlrun("--config-dir", "configs", "model=tiny", *FEW_STEPS)
    assert inside.code == 0, inside.err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sys.modules.pop("nets_n", None)
    outside = dlrun(f"--config-dir={app / 'configs'}", "model=tiny", *FEW_STEPS)
    assert outside.code == 0, outside.err
    assert str(app) in outside.checkpoint()["code_folders"]


def test_eval_from_another_folder_finds_the_code_the_checkpoint_records(dlrun, tmp_path, monkeypatch):
    app = hydra_app_folder(tmp_path / "app", "o")
    monkeypatch.chdir(app)
    trained = dlrun("--config-dir", "configs", "model=tiny", *FEW_STEPS)
    assert trained.code == 0, trained.err
    best = trained.run_dir / "checkpoints" / "best.pt"
    evaluate = [str(Path(sys.executable).parent / "dlrun-eval"), f"ckpt={best}"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": ""}  # a fresh shell: nothing points at the app's folder
    refused = subprocess.run(evaluate, cwd=elsewhere, capture_output=True, text=True, env=env)
    assert refused.returncode != 0
    assert refused.stderr.strip().endswith(
        f"if you trust it, add allow=[nets_o] (its code was found in {app}, which dlrun will look in)"
    )
    allowed = subprocess.run(
        [*evaluate, "allow=[nets_o]"], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "test acc" in allowed.stdout or "acc" in allowed.stdout


# a dataset of small pictures whose transform draws at random on every read
JITTERED = """
    import torch


    class Pictures(torch.utils.data.Dataset):
        def __init__(self, count=120, transform=None):
            generator = torch.Generator().manual_seed(0)
            self.images = torch.rand(count, 1, 8, 8, generator=generator)
            self.labels = torch.arange(count) % 2
            self.transform = transform

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            image = self.images[index]
            return (self.transform(image) if self.transform else image), self.labels[index]


    class Jitter:
        def __call__(self, image):
            return image + 0.1 * torch.randn_like(image)
"""


def jittered_project(tmp_path, monkeypatch, tag: str):
    dataset = "_target_: {module}.Pictures\ntransform:\n  _target_: {module}.Jitter\n"
    return module_project(tmp_path, monkeypatch, f"pictures_{tag}", JITTERED, {"dataset/pictures": dataset})


def test_a_dataset_that_draws_at_random_is_not_carved_into_val_and_test_unasked(dlrun, tmp_path, monkeypatch):
    jittered_project(tmp_path, monkeypatch, "p")
    result = dlrun("dataset=pictures", "model=linear", *FEW_STEPS)
    assert result.code == 2
    assert result.err.startswith(
        "dlrun: error: dataset._target_=pictures_p.Pictures gives a different item each time one is "
        "read (a random transform?), and dlrun carves val and test from it, so they would be "
        "augmented too: set dataset.eval_transform"
    )


def test_val_and_test_are_read_with_the_eval_transform(tmp_path, monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from dlrun.data import LoadOptions
    from dlrun.engine.build import build_data

    root = jittered_project(tmp_path, monkeypatch, "q")
    sys.path.insert(0, str(root))  # as dlrun makes it importable
    node = OmegaConf.create(
        {"_target_": "pictures_q.Pictures", "transform": {"_target_": "pictures_q.Jitter"}}
    )
    options = LoadOptions("classification", 0, 16, None, torch.device("cpu"))

    def two_reads(split):
        return [torch.cat([inputs for inputs, _ in split]) for _ in range(2)]

    node.eval_transform = None
    data = build_data(node, options)
    for split in (data.val, data.test):
        first, second = two_reads(split)
        assert torch.equal(first, second)  # never augmented
    first, second = two_reads(data.train)
    assert not torch.equal(first.sort(0).values, second.sort(0).values)  # training still is


# code written to fail in the ways a second pass found silent or raw
MISTAKES = """
    import numpy as np
    import torch
    from torch import nn


    def fractional_labels():
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(60, 4, generator=generator)
        return torch.utils.data.TensorDataset(inputs, torch.linspace(0, 2.9, 60))


    class NumpyRows(torch.utils.data.Dataset):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.x = rng.normal(size=(80, 4))  # float64, as NumPy makes it
            self.y = (self.x[:, 0] > 0).astype(np.int64)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, index):
            return self.x[index], self.y[index]


    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(4), 0


    def stream():
        return Stream()


    class ListOfLayers(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.blocks = [nn.Linear(in_shape[0], 8), nn.Linear(8, num_classes)]

        def forward(self, x):
            return self.blocks[1](self.blocks[0](x).relu())


    class Normalized(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.norm = nn.BatchNorm1d(in_shape[0])
            self.fc = nn.Linear(in_shape[0], num_classes)

        def forward(self, x):
            return self.fc(self.norm(x))


    class PerSample(nn.Module):
        def forward(self, outputs, targets):
            return nn.functional.cross_entropy(outputs, targets, reduction="none")


    class Detached(nn.Module):
        def forward(self, outputs, targets):
            return torch.tensor(nn.functional.cross_entropy(outputs, targets).item())


    def not_an_optimizer(params, lr=0.1):
        return [torch.optim.SGD(params, lr=lr)]


    class OnTheGpu(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_shape[0], num_classes).cuda()

        def forward(self, x):
            return self.fc(x)
"""


MISTAKE_CONFIGS = {
    "dataset/fractional": "_target_: {module}.fractional_labels\n",
    "dataset/numpy_rows": "_target_: {module}.NumpyRows\n",
    "dataset/stream": "_target_: {module}.stream\n",
    "model/list_of_layers": "_target_: {module}.ListOfLayers\n",
    "model/normalized": "_target_: {module}.Normalized\n",
    "loss/per_sample": "_target_: {module}.PerSample\n",
    "loss/detached": "_target_: {module}.Detached\n",
    "optimizer/listed": "_target_: {module}.not_an_optimizer\n_partial_: true\n",
    "model/on_the_gpu": "_target_: {module}.OnTheGpu\n",
}


def mistakes_project(tmp_path, monkeypatch, tag: str):
    return module_project(tmp_path, monkeypatch, f"mistakes_{tag}", MISTAKES, MISTAKE_CONFIGS)


def test_labels_that_are_not_whole_numbers_are_refused_not_cut(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "r")
    result = dlrun("dataset=fractional", "model=linear", *FEW_STEPS)
    assert result.code != 0
    assert "classification needs whole class numbers (0, 1, 2, ...)" in result.err.splitlines()[0]


def test_float64_arrays_train_as_float32(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "s")
    result = dlrun("dataset=numpy_rows", "model=mlp", *FEW_STEPS)
    assert result.code == 0, result.err
    # dlrun's own key, typed as its advice for ragged data writes it (the YAML does not set it)
    loaded = dlrun("dataset=numpy_rows", "dataset.in_memory=false", "model=mlp", *FEW_STEPS)
    assert loaded.code == 0 and "read by 2 DataLoader worker(s)" in loaded.out, loaded.err


def test_an_iterable_dataset_from_a_factory_is_named(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "t")
    result = dlrun("dataset=stream", *FEW_STEPS)
    assert result.code == 2
    assert "dataset._target_=mistakes_t.stream gave an IterableDataset: dlrun needs a map-style" in result.err


def test_layers_in_a_plain_list_are_named(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "u")
    result = dlrun("model=list_of_layers", *FEW_STEPS)
    assert result.code == 2
    assert result.err.startswith(
        "dlrun: error: model mistakes_u.ListOfLayers: blocks is a plain list of layers, which torch "
        "neither trains nor saves"
    )
    assert "hold them in nn.ModuleList" in result.err


def test_a_last_batch_of_one_sample_is_refused_for_batchnorm_with_a_size_that_works(
    dlrun, tmp_path, monkeypatch
):
    mistakes_project(tmp_path, monkeypatch, "v")
    # the wine table: 106 training rows, so batches of 35 leave 1
    result = dlrun("model=normalized", "trainer.batch_size=35", "trainer.epochs=1")
    assert result.code == 2
    assert "the model's BatchNorm cannot train on one: set trainer.batch_size=" in result.err
    size = int(result.err.strip().rsplit("=", 1)[1])
    assert dlrun("model=normalized", f"trainer.batch_size={size}", "trainer.epochs=1").code == 0


def test_a_loss_per_sample_or_without_a_gradient_is_named(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "w")
    per_sample = dlrun("loss=per_sample", *FEW_STEPS)
    assert per_sample.code != 0
    assert "loss: PerSample gives a tensor of shape [" in per_sample.err
    assert "not one number: reduce it over the batch" in per_sample.err
    detached = dlrun("loss=detached", *FEW_STEPS)
    assert detached.code != 0 and "loss: Detached gives a number with no gradient" in detached.err


def test_an_optimizer_factory_returning_something_else_is_named(dlrun, tmp_path, monkeypatch):
    mistakes_project(tmp_path, monkeypatch, "x")
    result = dlrun("optimizer=listed", *FEW_STEPS)
    assert result.code == 2
    assert "optimizer._target_=mistakes_x.not_an_optimizer returned list, not a torch.optim.Optimizer" in (
        result.err
    )


HYDRA_HABITS = """
    import torch.nn.functional as F


    def focal(outputs, targets, gamma=2.0):
        probability = F.softmax(outputs, dim=1).gather(1, targets[:, None]).squeeze(1)
        return (-((1 - probability) ** gamma) * probability.log()).mean()
"""


HABIT_CONFIGS = {
    "loss/focal": "_target_: {module}.focal\ngamma: 1.5\n",
    "loss/focal_partial": "_target_: {module}.focal\n_partial_: true\n",
    "optimizer/nadam": "_target_: torch.optim.NAdam\nlr: 0.01\n",  # no _partial_
    "scheduler/warm": "_target_: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts\nT_0: 2\n",
}


def habits_project(tmp_path, monkeypatch, tag: str):
    return module_project(tmp_path, monkeypatch, f"habits_{tag}", HYDRA_HABITS, HABIT_CONFIGS)


def test_a_loss_function_and_an_optimizer_train_with_or_without_partial(dlrun, tmp_path, monkeypatch):
    habits_project(tmp_path, monkeypatch, "y")
    for loss in ("focal", "focal_partial"):
        result = dlrun(f"loss={loss}", "optimizer=nadam", *FEW_STEPS)
        assert result.code == 0, result.err


def test_dlrun_keys_of_a_users_option_are_set_without_a_plus(dlrun, tmp_path, monkeypatch):
    habits_project(tmp_path, monkeypatch, "z")
    result = dlrun("scheduler=warm", "scheduler.interval=step", *FEW_STEPS)
    assert result.code == 0, result.err
    assert "interval: step" in (result.run_dir / "config.yaml").read_text()
    mistyped = dlrun("scheduler=warm", "scheduler.intervall=step", *FEW_STEPS)
    assert mistyped.code == 2


def test_hydra_job_chdir_reads_paths_from_where_they_were_typed(dlrun, tmp_path, monkeypatch, csv_file):
    monkeypatch.chdir(csv_file.parent)
    result = dlrun("dataset=csv", f"dataset.path={csv_file.name}", "hydra.job.chdir=true", *FEW_STEPS)
    assert result.code == 0, result.err
    assert f"run folder: {result.run_dir}" in result.out  # absolute: outside the folder typed in
    monkeypatch.chdir(tmp_path)
    inside = dlrun("dataset=csv", f"dataset.path={csv_file}", "hydra.job.chdir=true", *FEW_STEPS)
    assert inside.code == 0 and f"run folder: {inside.run_dir.name}\n" in inside.out


def test_a_sweep_asked_for_its_config_says_what_to_do(dlrun):
    result = dlrun("-m", "--cfg", "job", "optimizer.lr=0.1,0.01")
    assert result.code == 2
    assert result.err.startswith("dlrun: error: --cfg prints one composed config and -m runs a sweep")


GREY_BUGS = """
defaults:
  - imagefolder
  - _self_

train_transforms:
  _target_: torchvision.transforms.v2.Compose
  transforms:
    - _target_: torchvision.transforms.v2.Grayscale
    - _target_: torchvision.transforms.v2.RandomResizedCrop
      size: 24
val_transforms:
  - _target_: torchvision.transforms.v2.Grayscale
  - _target_: torchvision.transforms.v2.Resize
    size: [24, 24]
num_workers: 0
"""


def test_an_image_folder_takes_a_v2_compose_by_target_and_grayscale_follows_through(
    dlrun, tmp_path, monkeypatch
):
    from dlrun import cli
    from tests import datasets

    bugs = datasets.write_image_folder(tmp_path / "bugs", per_class=6)
    project(tmp_path / "outsider", monkeypatch, {"configs/dataset/grey_bugs.yaml": GREY_BUGS})
    run = dlrun("dataset=grey_bugs", f"dataset.root={bugs}", "model=mlp", *FEW_STEPS)
    assert run.code == 0, run.err
    assert "inputs [1, 24, 24]" in run.out  # ImageNet's mean and std made one channel's
    image = sorted((bugs / "val" / "bees").glob("*.png"))[0]
    predicted = dlrun(
        f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}",
        f"inputs=[{image}]",
        "format=json",
        program=cli.predict_main,
    )
    assert predicted.code == 0, predicted.err
    assert json.loads(predicted.out)[0]["predictions"][0]["class"] in ("ants", "bees")


def test_an_image_folder_names_the_transform_form_it_takes(dlrun, tmp_path, monkeypatch):
    from tests import datasets

    bugs = datasets.write_image_folder(tmp_path / "bugs", per_class=4)
    sharpen = "class Sharpen:\n    def __call__(self, image):\n        return image\n"
    project(tmp_path / "outsider", monkeypatch, {"mypackage.py": sharpen})
    result = dlrun(
        "dataset=imagefolder",
        f"dataset.root={bugs}",
        "model=mlp",
        "dataset.train_transforms=[{_target_: mypackage.Sharpen}]",
        *FEW_STEPS,
    )
    assert result.code == 2
    assert result.err.startswith(
        "dlrun: error: dataset.train_transforms: mypackage.Sharpen is not in torchvision.transforms.v2"
    )
    assert "give torchvision.transforms.v2 transforms as {_target_: torchvision.transforms.v2.Compose" in (
        result.err
    )


def test_a_project_option_named_like_a_built_in_wins_and_says_so(dlrun, tmp_path, monkeypatch):
    from dlrun import cli

    project(
        tmp_path / "outsider",
        monkeypatch,
        {
            "nets_aa.py": TINY_NET.replace("Tiny", "Mine"),
            "configs/model/mlp.yaml": "_target_: nets_aa.Mine\n",
        },
    )
    for chosen in (["model=mlp"], []):  # named, and as the default
        result = dlrun(*chosen, *FEW_STEPS)
        assert result.code == 0, result.err
        assert "model=mlp is your project's configs/model/mlp.yaml, not dlrun's own mlp" in result.out
        assert set(result.checkpoint()["model"]) == {"fc.weight", "fc.bias"}
    helped = dlrun("--help", program=cli.main)
    assert "mlp* (yours)" in helped.out
    monkeypatch.chdir(tmp_path)  # outside the project, dlrun's own mlp again
    plain = dlrun("model=mlp", *FEW_STEPS)
    assert plain.code == 0 and "your project's" not in plain.out
    assert "layers.1.weight" in plain.checkpoint()["model"]  # dlrun's MLP


def test_a_project_module_named_like_an_installed_package_is_named(dlrun, tmp_path, monkeypatch):
    root = project(tmp_path / "outsider", monkeypatch, {"yaml.py": "VERSION = 'mine'\n"})
    result = dlrun(*FEW_STEPS)
    assert result.code == 2
    assert result.err.startswith(
        f"dlrun: error: {root / 'yaml.py'} has the name of the installed package yaml"
    )
    assert result.err.rstrip().endswith("which it would hide from dlrun and from your code: rename it")


RAW_TABLE = """
    import torch


    def raw_features():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(300, 3, generator=generator) * torch.tensor([1000.0, 0.01, 5.0]) + 5000.0
        return torch.utils.data.TensorDataset(x, (x[:, 0] > 5000.0).long())
"""


def test_a_users_table_is_standardized_like_dataset_csv(dlrun, tmp_path, monkeypatch):
    project(
        tmp_path / "outsider",
        monkeypatch,
        {"raw_ab.py": RAW_TABLE, "configs/dataset/raw.yaml": "_target_: raw_ab.raw_features\n"},
    )
    result = dlrun("dataset=raw", "model=linear", "trainer.epochs=15", "optimizer.lr=0.05")
    assert result.code == 0, result.err
    facts = result.checkpoint()["facts"]
    assert abs(facts["mean"][0] - 5000) < 200 and abs(facts["std"][0] - 1000) < 200
    assert json.loads((result.run_dir / "metrics.json").read_text())["test"]["acc"] > 0.9
    raw = dlrun("dataset=raw", "dataset.standardize=false", "model=linear", *FEW_STEPS)
    assert raw.code == 0 and raw.checkpoint()["facts"]["mean"] is None


def test_cuda_in_a_model_on_a_machine_without_a_gpu_is_one_line(dlrun, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    mistakes_project(tmp_path, monkeypatch, "ab")
    result = dlrun("model=on_the_gpu", *FEW_STEPS)
    assert result.code == 1
    lines = one_line_then_own_frames(result, "model._target_=mistakes_ab.OnTheGpu raised")
    assert lines[0].endswith("instead of calling .cuda()") and "in __init__" in result.err


def test_a_misspelt_class_lists_the_modules_own_names_first(dlrun, tmp_path, monkeypatch):
    imports = "from typing import Any, Callable, Optional\nfrom torch import nn, Tensor\n"
    imports += "from torch.utils.data import Dataset, DataLoader, Subset, TensorDataset\n"
    code = imports + "\n\nclass Zebra(nn.Module):\n    pass\n"
    module_project(tmp_path, monkeypatch, "zoo_ac", code, {"model/horse": "_target_: {module}.Horse\n"})
    result = dlrun("model=horse", *FEW_STEPS)
    assert result.code == 2
    assert result.err.strip().endswith(
        "zoo_ac has no attribute 'Horse'; it has: Zebra, Any, Callable, DataLoader, Dataset, Optional, "
        "Subset, Tensor, TensorDataset"
    )
