"""The user's own model, data, loss, optimizer and transforms, from their own project folder, and
the rule that a checkpoint never makes dlrun import code the user did not allow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch

from dlrun import cli
from dlrun.checkpoints.format import read_checkpoint, write_checkpoint
from dlrun.checkpoints.trust import Trust
from tests import datasets
from tests.helpers import FEW_STEPS, SERVE, free_port, project, serving

NETS = """
    import math
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, in_shape, num_classes, class_names, hidden=16):
            super().__init__()
            self.class_names = class_names  # a fact from the data, asked for by name
            self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.layers(x)

    class WrongWidth(TinyNet):
        def forward(self, x):
            return super().forward(x)[:, :1]

    class NotAModel:
        def __init__(self, in_shape):
            pass

    def helper(**settings):
        return 3
"""
BLOBS = """
    import torch
    from torch.utils.data import Dataset

    READS = []  # the tests look here to see whether the data was read

    class Blobs(Dataset):
        def __init__(self, count=300, seed=0, transform=None):
            READS.append(count)
            generator = torch.Generator().manual_seed(seed)
            self.labels = torch.arange(count) % 3
            self.points = torch.randn(count, 2, generator=generator) * 0.3 + self.labels[:, None].float()
            self.transform = transform
            self.classes = ["low", "middle", "high"]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, index):
            point = self.points[index]
            return (self.transform(point) if self.transform else point), int(self.labels[index])

    def three_splits(seed=0):
        return {"train": Blobs(240, seed), "val": Blobs(60, seed + 1), "test": Blobs(60, seed + 2)}

    SCALES = []

    class Scale:
        # a transform of the user's, to chain in a torchvision.transforms.v2 pipeline

        def __init__(self, factor):
            SCALES.append(factor)
            self.factor = factor

        def __call__(self, point):
            return point * self.factor
"""


def models_and_data(root, monkeypatch, tag: str, extra: dict[str, str] = ()) -> Path:
    return project(
        root,
        monkeypatch,
        {
            f"nets_{tag}.py": NETS,
            f"blobs_{tag}.py": BLOBS,
            "configs/model/tiny.yaml": f"_target_: nets_{tag}.TinyNet\nhidden: 32\n",
            "configs/dataset/blobs.yaml": f"_target_: blobs_{tag}.Blobs\ncount: 300\n",
            **dict(extra),
        },
    )


def test_a_project_model_and_dataset_train_by_name(dlrun, tmp_path, monkeypatch):
    models_and_data(tmp_path, monkeypatch, "a")
    result = dlrun("model=tiny", "dataset=blobs", "trainer.epochs=15", "optimizer.lr=0.01")
    assert result.code == 0, result.err
    assert result.metrics["test"]["acc"] >= 0.9
    facts = result.checkpoint()["facts"]
    assert facts["class_names"] == ["low", "middle", "high"] and facts["input_shape"] == [2]
    assert "data: 3 classes, inputs [2], 240 train / 30 val / 30 test, held on cpu" in result.out
    assert result.checkpoint()["config"]["model"]["_target_"] == "nets_a.TinyNet"


def test_a_project_model_on_a_dlrun_dataset(dlrun, tmp_path, monkeypatch, data_root):
    models_and_data(tmp_path, monkeypatch, "b")
    result = dlrun(
        "model=tiny", "dataset=mnist", f"dataset.root={data_root}", "dataset.download=false", *FEW_STEPS
    )
    assert result.code == 0, result.err
    assert result.checkpoint()["facts"]["input_shape"] == [1, 28, 28]


def test_a_factory_giving_three_splits_and_a_transform_pipeline_by_target(dlrun, tmp_path, monkeypatch):
    dataset = """
        _target_: blobs_c.three_splits
        seed: 3
    """
    scaled = """
        _target_: blobs_c.Blobs
        transform:
          _target_: torchvision.transforms.v2.Compose
          transforms:
            - _target_: blobs_c.Scale
              factor: 2.0
    """
    models_and_data(
        tmp_path,
        monkeypatch,
        "c",
        {"configs/dataset/splits.yaml": dataset, "configs/dataset/scaled.yaml": scaled},
    )
    result = dlrun("model=tiny", "dataset=splits", *FEW_STEPS)
    assert result.code == 0, result.err
    assert "240 train / 60 val / 60 test" in result.out

    # a torchvision.transforms.v2 pipeline of nested targets is built and given to the dataset
    result = dlrun("model=tiny", "dataset=scaled", *FEW_STEPS)
    assert result.code == 0, result.err
    assert sys.modules["blobs_c"].SCALES == [2.0] and "held on cpu" in result.out


def test_own_loss_optimizer_and_scheduler_by_target(dlrun, tmp_path, monkeypatch):
    loss = """
        from torch import nn

        class Smoothed(nn.Module):
            def __init__(self, smoothing=0.1):
                super().__init__()
                self.loss = nn.CrossEntropyLoss(label_smoothing=smoothing)

            def forward(self, outputs, labels):
                return self.loss(outputs, labels)
    """
    models_and_data(
        tmp_path,
        monkeypatch,
        "d",
        {
            "losses_d.py": loss,
            "configs/loss/smooth.yaml": "_target_: losses_d.Smoothed\nsmoothing: 0.2\n",
            "configs/optimizer/nadam.yaml": "_target_: torch.optim.NAdam\n_partial_: true\nlr: 0.01\n",
            "configs/scheduler/linear.yaml": "_target_: torch.optim.lr_scheduler.LinearLR\n_partial_: true\n"
            "start_factor: 1.0\nend_factor: 0.1\ntotal_iters: 3\n",
        },
    )
    result = dlrun(
        "model=tiny",
        "dataset=blobs",
        "loss=smooth",
        "optimizer=nadam",
        "scheduler=linear",
        "trainer.epochs=3",
    )
    assert result.code == 0, result.err
    state = result.checkpoint()
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001)  # 0.01 x 0.1 after 3 epochs
    assert "NAdam" in state["config"]["optimizer"]["_target_"] and result.metrics["best_value"] > 0.5


def test_a_torchvision_dataset_class_without_a_preset_trains_by_config_alone(dlrun, tmp_path, monkeypatch):
    """KMNIST: the usual (root, train, transform, download) form; its files made here in their
    real format. train=True gives train (and val, carved), train=False the test split."""
    data = datasets.write_mnist(tmp_path / "data", "KMNIST", train=200, test=60)
    project(
        tmp_path / "proj",
        monkeypatch,
        {
            "configs/dataset/kmnist.yaml": f"_target_: torchvision.datasets.KMNIST\nroot: {data}\n",
        },
    )
    result = dlrun("dataset=kmnist", "model=lenet", "trainer.epochs=1")
    assert result.code == 0, result.err
    facts = result.checkpoint()["facts"]
    assert facts["class_names"][:2] == ["o", "ki"] and facts["input_shape"] == [1, 28, 28]
    assert "180 train / 20 val / 60 test, held on cpu" in result.out


def test_how_a_dataset_reaches_the_device(tmp_path):
    """In memory when small, tensor-shaped and the same on every read; through DataLoader workers
    when a transform draws at random, or when asked."""
    from dlrun.data import LoadOptions
    from dlrun.data.batches import LoaderBatches, TensorBatches
    from dlrun.data.custom import CustomSettings, from_datasets

    class Points(torch.utils.data.Dataset):
        def __init__(self, noisy=False):
            self.noisy = noisy

        def __len__(self):
            return 50

        def __getitem__(self, index):
            point = torch.full((3,), float(index))
            return (point + torch.randn(3) if self.noisy else point), index % 2

    options = LoadOptions("classification", 0, 8, 8, torch.device("cpu"))
    settings = CustomSettings(num_workers=0)
    assert isinstance(from_datasets(Points(), None, None, settings, options, "p").train, TensorBatches)
    assert isinstance(
        from_datasets(Points(noisy=True), None, None, settings, options, "p").train, LoaderBatches
    )
    forced = CustomSettings(num_workers=0, in_memory=False)
    loaded = from_datasets(Points(), None, None, forced, options, "p")
    assert isinstance(loaded.train, LoaderBatches) and loaded.train.num_samples == 42  # 50 - 4 val - 4 test
    x, y = next(iter(loaded.train))
    assert x.shape == (8, 3) and y.dtype == torch.int64


MISTAKES = [
    (
        "model._target_=nets_e.TinyNett",
        "model._target_=nets_e.TinyNett: nets_e has no attribute 'TinyNett'; did you mean TinyNet?",
    ),
    ("model._target_=netz.TinyNet", "there is no module named 'netz'"),
    (
        "model._target_=broken_e.Net",
        "importing broken_e failed with NameError: name 'undefined_name' is not defined",
    ),
    ("model.hiden=3", "model.hiden: nets_e.TinyNet does not take 'hiden'; it accepts: hidden"),
    ("model._target_=nets_e.NotAModel", "nets_e.NotAModel is not a torch.nn.Module"),
    ("model._target_=nets_e.helper", "model._target_=nets_e.helper returned int, not a torch.nn.Module"),
    ("dataset._target_=nets_e.TinyNet", "is not a map-style Dataset"),
    ("optimizer._target_=nets_e.TinyNet", "is not a torch.optim optimizer"),
    (
        "model._target_=nets_e.WrongWidth",
        "gives outputs [2, 1] for inputs [2, 2], but classification needs one score",
    ),
]


@pytest.mark.parametrize("override,message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_in_a_target_is_one_clear_line_before_data_is_read(
    dlrun, tmp_path, monkeypatch, override, message
):
    models_and_data(tmp_path, monkeypatch, "e", {"broken_e.py": "x = 1\nundefined_name\n"})
    if "blobs_e" in sys.modules:
        sys.modules["blobs_e"].READS.clear()
    if override.startswith("model.hiden"):
        override = "+" + override  # a key the YAML does not have: Hydra wants it added
    result = dlrun("model=tiny", "dataset=blobs", override, *FEW_STEPS)
    assert result.code in (1, 2)
    first = result.err.splitlines()[0]
    assert first.startswith("dlrun: error: ") and message in first, result.err
    if "importing" in message:  # the user's own traceback follows, naming their file and line
        assert 'broken_e.py", line 2' in result.err
    else:
        assert len(result.err.strip().splitlines()) == 1
    # the data was not read: classes are checked against their signature first; only the shape of a
    # model's outputs, and what a factory function returns, need the data's facts
    reads = sys.modules["blobs_e"].READS if "blobs_e" in sys.modules else []
    assert reads == [] or "WrongWidth" in override or "helper" in override


def test_a_required_setting_left_unset_is_named(dlrun, tmp_path, monkeypatch):
    needy = """
        from torch import nn

        class Needy(nn.Module):
            def __init__(self, in_shape, num_classes, depth):
                super().__init__()
    """
    models_and_data(
        tmp_path,
        monkeypatch,
        "f",
        {"needy_f.py": needy, "configs/model/needy.yaml": "_target_: needy_f.Needy\n"},
    )
    result = dlrun("model=needy", "dataset=blobs", *FEW_STEPS)
    assert result.code == 2 and "model.depth is required by needy_f.Needy: set model.depth=..." in result.err


# ---------------------------------------------------------------------------------------------
# checkpoints never make dlrun import code the user did not allow

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('imported')\nclass Net:\n    pass\n"


@pytest.fixture
def trained(dlrun, tmp_path, monkeypatch):
    models_and_data(tmp_path / "proj", monkeypatch, "g")
    result = dlrun("model=tiny", "dataset=blobs", "trainer.epochs=20", "optimizer.lr=0.01")
    assert result.code == 0, result.err
    return result


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen", "evil_marker.Net"])
@pytest.mark.parametrize("program", ["eval", "predict", "export", "serve"])
def test_code_a_checkpoint_names_is_refused_unless_allowed(
    dlrun, trained, tmp_path, monkeypatch, target, program
):
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_marker.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, were dlrun to try
    state = read_checkpoint(trained.run_dir / "checkpoints" / "best.pt")
    state["config"]["model"]["_target_"] = target
    write_checkpoint(tmp_path / "hostile.pt", {k: v for k, v in state.items() if k != "format"})
    main, extra = {
        "eval": (cli.eval_main, []),
        "predict": (cli.predict_main, ["inputs=[[0.1,0.2]]"]),
        "export": (cli.export_main, []),
        "serve": (cli.serve_main, [f"port={free_port()}"]),  # refused before it listens
    }[program]
    result = dlrun(f"ckpt={tmp_path / 'hostile.pt'}", *extra, program=main)
    assert result.code == 1 and f"names model._target_={target}, code you have not allowed" in result.err
    assert not marker.exists() and "evil_marker" not in sys.modules


def test_the_project_folder_allows_its_own_modules_and_allow_adds_others(
    dlrun, trained, tmp_path, monkeypatch
):
    best = trained.run_dir / "checkpoints" / "best.pt"
    out = dlrun(f"ckpt={best}", "inputs=[[0.1,0.2],[2.0,2.1]]", "format=json", program=cli.predict_main)
    assert out.code == 0, out.err
    assert [item["predictions"][0]["class"] for item in json.loads(out.out)] == ["low", "high"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # outside the project: its modules are not allowed
    refused = dlrun(f"ckpt={best}", "inputs=[[0.1,0.2]]", program=cli.predict_main)
    assert refused.code == 1 and "allow=[nets_g]" in refused.err
    allowed = dlrun(f"ckpt={best}", "inputs=[[0.1,0.2]]", "allow=[nets_g]", program=cli.predict_main)
    assert allowed.code == 0, allowed.err  # nets_g is still importable in this process


def test_a_model_of_the_users_exports_from_its_project_and_elsewhere_only_when_allowed(
    dlrun, trained, tmp_path, monkeypatch
):
    best = trained.run_dir / "checkpoints" / "best.pt"
    exported = dlrun(f"ckpt={best}", program=cli.export_main)
    assert exported.code == 0, exported.err
    assert "exported nets_g.TinyNet as onnx" in exported.out and best.with_suffix(".onnx").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    output = f"output={elsewhere / 'tiny.onnx'}"
    refused = dlrun(f"ckpt={best}", output, program=cli.export_main)
    assert refused.code == 1 and "allow=[nets_g]" in refused.err
    assert not (elsewhere / "tiny.onnx").exists()
    allowed = dlrun(f"ckpt={best}", output, "allow=[nets_g,blobs_g]", program=cli.export_main)
    assert allowed.code == 0, allowed.err
    assert (elsewhere / "tiny.onnx").is_file() and (elsewhere / "tiny.onnx.json").is_file()


def test_a_model_of_the_users_is_served_from_its_project_and_elsewhere_only_when_allowed(trained, tmp_path):
    best = trained.run_dir / "checkpoints" / "best.pt"
    rows = {"inputs": [[0.1, 0.2], [2.0, 2.1]]}
    with serving(best, cwd=tmp_path / "proj") as (base, _):
        answer = requests.post(f"{base}/predict", json=rows).json()
    assert [item["predictions"][0]["class"] for item in answer["predictions"]] == ["low", "high"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = subprocess.run(
        [SERVE, f"ckpt={best}", f"port={free_port()}"], cwd=elsewhere, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "allow=[nets_g]" in refused.stderr and refused.stdout == ""
    with serving(best, "allow=[nets_g]", cwd=elsewhere) as (base, _):
        assert requests.post(f"{base}/predict", json=rows).status_code == 200


def test_a_resume_never_imports_what_its_checkpoint_names(dlrun, trained, tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "proj" / "evil_resume.py").write_text(EVIL.format(marker=str(marker)))
    last = trained.run_dir / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    state["config"]["model"]["_target_"] = "evil_resume.Net"
    write_checkpoint(last, {k: v for k, v in state.items() if k != "format"})
    result = dlrun(
        "model=tiny", "dataset=blobs", "trainer.epochs=4", f"trainer.resume={last}", run_dir=trained.run_dir
    )
    assert result.code == 1 and "model._target_" in result.err and "resume_force" in result.err
    assert not marker.exists()


def test_an_installed_plugin_is_allowed_through_its_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dlrun.plugins]\nmodels = myplugin.models\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trust = Trust()
    assert trust.allows("myplugin.models.Net") and not trust.allows("myplugin.other.Net")
    assert trust.allows("dlrun.models.mlp.MLP") and not trust.allows("os.system")


def test_dlrun_init_writes_a_project_and_refuses_a_folder_in_use(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dlrun", "init", "proj"])
    cli.main()
    assert (tmp_path / "proj" / "configs" / "model" / "tiny.yaml").is_file()
    monkeypatch.setattr(sys, "argv", ["dlrun", "init", "proj"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
