"""dlrun-export: the exported file, run by onnxruntime (or torch.export / TorchScript) with inputs
prepared from its JSON alone (no dlrun code), gives the classes dlrun-predict gives; what cannot
be exported, or exports wrongly, is refused in one line and leaves no file."""

import json
import sys
import unicodedata

import numpy as np
import onnxruntime
import pytest
import torch

from dlrun import cli
from tests import datasets
from tests.helpers import FEW_STEPS, image_model

WINE_ROWS = [
    [13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050],
    [12.37, 0.94, 1.36, 10.6, 88, 1.98, 0.57, 0.28, 0.42, 1.95, 1.05, 1.82, 520],
    [12.86, 1.35, 2.32, 18, 122, 1.51, 1.25, 0.21, 0.94, 4.1, 0.76, 1.29, 630],
]


def exported(dlrun, checkpoint, *settings: str) -> dict:
    """Export `checkpoint`; the JSON written beside the file."""
    result = dlrun(f"ckpt={checkpoint}", *settings, program=cli.export_main)
    assert result.code == 0, result.err
    shown = " ".join(result.out.split())
    assert "largest difference from the PyTorch model" in shown
    written = shown.split("how to prepare its inputs: ", 1)[1].split()[0]
    return json.loads(open(written).read()) | {"json": written}


def predicted(dlrun, checkpoint, inputs: str) -> list[str]:
    result = dlrun(
        f"ckpt={checkpoint}", f"inputs={inputs}", "format=json", "topk=1", program=cli.predict_main
    )
    assert result.code == 0, result.err
    return [item["predictions"][0]["class"] for item in json.loads(result.out)]


def onnx_classes(described: dict, batch: np.ndarray) -> list[str]:
    folder = described["json"].rsplit("/", 1)[0]
    session = onnxruntime.InferenceSession(
        f"{folder}/{described['file']}", providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {described["input"]["name"]: batch})
    return [described["class_names"][index] for index in logits.argmax(axis=1)]


def test_a_table_model_in_onnx_answers_as_dlrun_predict(dlrun):
    run = dlrun("trainer.epochs=5")
    best = run.run_dir / "checkpoints" / "best.pt"
    described = exported(dlrun, best)
    assert described["format"] == "onnx" and described["input"]["shape"] == ["batch", 13]
    preparation = described["preparation"]
    rows = (np.array(WINE_ROWS, dtype=np.float32) - preparation["mean"]) / preparation["std"]
    ours = predicted(dlrun, best, json.dumps(WINE_ROWS).replace(" ", ""))
    assert onnx_classes(described, rows.astype(np.float32)) == ours
    assert onnx_classes(described, rows[:1].astype(np.float32)) == ours[:1]  # any batch size


def fold(name: str, vocab: str) -> str:
    decomposed = unicodedata.normalize("NFD", name)
    return "".join(char for char in decomposed if char in vocab)


def test_a_names_model_in_onnx_answers_as_dlrun_predict(dlrun, data_root):
    run = dlrun("experiment=names_char_rnn", f"dataset.root={data_root}", "trainer.epochs=3")
    best = run.run_dir / "checkpoints" / "best.pt"
    described = exported(dlrun, best)
    assert described["input"] == {"name": "input", "shape": ["batch", "length"], "dtype": "int64"}
    vocab, length = described["preparation"]["vocab"], described["preparation"]["length"]
    names = ["Jones", "Satō", "Dubois", "Abramovich-Konstantinopolski"]  # the last longer than any
    folded = [fold(name, vocab) for name in names]
    tokens = np.zeros((len(names), max(length, *map(len, folded))), dtype=np.int64)
    for row, name in enumerate(folded):
        tokens[row, : len(name)] = [vocab.index(char) + 1 for char in name]
    assert onnx_classes(described, tokens) == predicted(dlrun, best, "[" + ",".join(names) + "]")


def test_an_image_model_in_onnx_answers_as_dlrun_predict(dlrun, tmp_path):
    from PIL import Image

    root, best = image_model(dlrun, tmp_path)
    described = exported(dlrun, best)
    assert described["input"]["shape"] == ["batch", 3, 16, 16]
    preparation = described["preparation"]
    assert preparation["transforms"] == []
    files = sorted((root / "val" / "bees").glob("*.png"))[:3]
    pixels = np.stack([np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) for file in files])
    mean, std = np.array(preparation["mean"]), np.array(preparation["std"])
    batch = ((pixels / 255 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    assert onnx_classes(described, batch) == predicted(dlrun, best, "[" + ",".join(map(str, files)) + "]")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # torch 2.14 says so; it still loads
@pytest.mark.parametrize("export_format", ["torch_export", "torchscript"])
def test_torch_export_and_torchscript_files_answer_as_dlrun_predict(dlrun, export_format):
    run = dlrun("trainer.epochs=5")
    best = run.run_dir / "checkpoints" / "best.pt"
    described = exported(dlrun, best, f"format={export_format}")
    path = best.parent / described["file"]
    assert path.suffix == (".pt2" if export_format == "torch_export" else ".pt")
    model = torch.export.load(path).module() if export_format == "torch_export" else torch.jit.load(path)
    preparation = described["preparation"]
    rows = (torch.tensor(WINE_ROWS) - torch.tensor(preparation["mean"])) / torch.tensor(preparation["std"])
    classes = [described["class_names"][index] for index in model(rows).argmax(dim=1)]
    assert classes == predicted(dlrun, best, json.dumps(WINE_ROWS).replace(" ", ""))


BRANCHY = """
    from torch import nn


    class Branchy(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.a = nn.Linear(in_shape[0], num_classes)
            self.b = nn.Linear(in_shape[0], num_classes)

        def forward(self, x):
            if x.sum() > 0:  # a branch on the data: line 12
                return self.a(x)
            return self.b(x)
"""


@pytest.mark.parametrize(
    "export_format, said",
    [
        ("onnx", "cannot export branchy_x.Branchy as onnx: GuardOnDataDependentSymNode"),
        ("torch_export", "cannot export branchy_x.Branchy as torch_export: GuardOnDataDependentSymNode"),
        ("torchscript", "branchy_x.py:12 branches on the value of a tensor, and a trace keeps only"),
    ],
)
def test_a_model_that_branches_on_its_data_is_refused_naming_the_line(
    dlrun, tmp_path, monkeypatch, export_format, said
):
    import textwrap

    from tests.helpers import project

    project(
        tmp_path / "proj",
        monkeypatch,
        {
            "branchy_x.py": textwrap.dedent(BRANCHY),
            "configs/model/branchy.yaml": "_target_: branchy_x.Branchy\n",
        },
    )
    run = dlrun("model=branchy", *FEW_STEPS)
    assert run.code == 0, run.err
    refused = dlrun(
        f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}", f"format={export_format}", program=cli.export_main
    )
    assert refused.code == 1
    lines = refused.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun-export: error: ") and said in lines[0], refused.err
    if export_format != "torchscript":
        assert "(branchy_x.py:12, in forward)" in lines[0] and "torch.where" in lines[0]
    assert sorted(path.name for path in (run.run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_an_export_beyond_the_tolerance_is_not_kept(dlrun):
    run = dlrun(*FEW_STEPS)
    best = run.run_dir / "checkpoints" / "best.pt"
    refused = dlrun(f"ckpt={best}", "tolerance=1e-15", program=cli.export_main)
    assert refused.code == 1
    assert "the onnx export of dlrun.models.mlp.MLP differs from the PyTorch model by up to" in refused.err
    assert "not written" in refused.err
    assert sorted(path.name for path in best.parent.iterdir()) == ["best.pt", "last.pt"]


def test_without_the_runs_data_the_export_is_checked_on_made_up_inputs_and_says_so(dlrun, tmp_path):
    table = datasets.write_csv(tmp_path / "table.csv")
    run = dlrun("dataset=csv", f"dataset.path={table}", *FEW_STEPS)
    table.unlink()
    described = exported(dlrun, run.run_dir / "checkpoints" / "best.pt")
    assert described["checked"]["on"] == "8 made-up inputs"
    result = dlrun(
        f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}", "format=torchscript", program=cli.export_main
    )
    assert (
        result.err.startswith("warning: the run's data cannot be read (") and "dataset.root=..." in result.err
    )


def test_a_bidirectional_names_model_says_why_it_cannot_be_exported(dlrun, data_root):
    run = dlrun(
        "experiment=names_char_rnn", f"dataset.root={data_root}", "model.bidirectional=true", *FEW_STEPS
    )
    refused = dlrun(f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}", program=cli.export_main)
    assert refused.code == 1
    assert "train with model.bidirectional=false to export" in refused.err


def test_without_the_onnx_extra_the_line_says_what_to_install(dlrun, monkeypatch):
    best = dlrun(*FEW_STEPS).run_dir / "checkpoints" / "best.pt"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = dlrun(f"ckpt={best}", program=cli.export_main)
    assert result.code == 1
    assert 'dlrun-export: error: format=onnx needs onnxruntime: pip install "dlrun[onnx]"' in result.err
    assert sorted(path.name for path in best.parent.iterdir()) == ["best.pt", "last.pt"]
