"""dlrun-eval and dlrun-predict: everything they need comes from the checkpoint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun import cli
from dlrun.checkpoints.format import read_checkpoint, write_checkpoint
from tests import datasets
from tests.helpers import FEW_STEPS, SERVE, SMALL_IMAGES, Hostile, free_port, small_mlp_on

WINE_ROW = "[13.2,1.78,2.14,11.2,100,2.65,2.76,0.26,1.28,4.38,1.05,3.4,1050]"  # a class-1 wine


@pytest.fixture
def mnist_run(dlrun, data_root):
    result = dlrun(
        *small_mlp_on(data_root),
        "trainer.epochs=2",
    )
    assert result.code == 0, result.err
    return result


def test_eval_reproduces_the_runs_test_accuracy_and_writes_json(dlrun, mnist_run):
    best = mnist_run.run_dir / "checkpoints" / "best.pt"
    result = dlrun(f"ckpt={best}", program=cli.eval_main)
    assert result.code == 0, result.err
    report = json.loads(best.with_suffix(".test.json").read_text())
    assert report["acc"] == pytest.approx(mnist_run.metrics["test"]["acc"])
    assert report["samples"] == 80 and len(report["per_class_acc"]) == 10
    matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, matrix)) == 80
    assert "confusion matrix" in result.out


def test_eval_on_val_with_a_moved_data_folder_and_an_output_path(dlrun, mnist_run, data_root, tmp_path):
    moved = tmp_path / "moved"
    datasets.write_mnist(moved)
    output = tmp_path / "val.json"
    result = dlrun(
        f"ckpt={mnist_run.run_dir / 'checkpoints' / 'last.pt'}",
        "split=val",
        f"dataset.root={moved}",
        f"output={output}",
        program=cli.eval_main,
    )
    assert result.code == 0, result.err
    assert json.loads(output.read_text())["split"] == "val"


def test_a_folder_named_with_brackets_is_printed_as_it_is(dlrun, tmp_path):
    """rich reads `[bold]` as a style; in a path of the user's it is part of the name."""
    run = dlrun("trainer.epochs=1", run_dir=tmp_path / "[bold]x")
    best = run.run_dir / "checkpoints" / "best.pt"
    assert best.is_file() and "[bold]x" in run.out
    evaluated = dlrun(f"ckpt={best}", program=cli.eval_main)
    assert evaluated.code == 0, evaluated.err
    assert f"checkpoint: {best}\n" in evaluated.out
    assert f"written to {best.with_suffix('.test.json')}\n" in evaluated.out


def test_eval_refuses_a_setting_the_dataset_does_not_have(dlrun, mnist_run):
    result = dlrun(
        f"ckpt={mnist_run.run_dir / 'checkpoints' / 'last.pt'}", "dataset.colour=blue", program=cli.eval_main
    )
    assert result.code == 2 and "dataset.colour" in result.err


def test_eval_without_ckpt_prints_usage(dlrun):
    result = dlrun(program=cli.eval_main)
    assert result.code == 2 and "usage: dlrun-eval" in result.out


@pytest.mark.parametrize(
    "program,schema",
    [(cli.eval_main, "EvalConfig"), (cli.predict_main, "PredictConfig"), (cli.export_main, "ExportConfig")],
)
def test_the_usage_is_the_programs_schema(dlrun, program, schema):
    """Every argument of the schema, its values, its default and what it is for; nothing written
    twice by hand."""
    from dataclasses import fields

    from dlrun.config import schema as schemas

    text = dlrun("--help", program=program).out
    usage = text.split("\n\n")[0]
    for field in fields(getattr(schemas, schema)):
        assert field.name in usage and field.metadata["help"] in text, field.name
    if program is cli.eval_main:
        assert "ckpt=PATH [split=test|val] [output=PATH]" in usage and "[dataset.KEY=VALUE]" in usage
    elif program is cli.export_main:
        assert "ckpt=PATH [format=onnx|torch_export|torchscript] [output=PATH]" in usage
    else:
        assert "ckpt=PATH inputs=[...] [topk=3] [format=table|json]" in usage


@pytest.mark.parametrize(
    "typed,named",
    [
        ("split=train", "split=train is not valid; valid: val, test"),
        ("batch_size=0", "batch_size=0 is out of range"),
    ],
)
def test_an_argument_outside_its_schema_is_one_line(dlrun, typed, named):
    result = dlrun("ckpt=x.pt", typed, program=cli.eval_main)
    assert result.code == 2 and named in result.err


def predictions(result) -> list:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_predict_names_gives_top_languages(dlrun, data_root):
    run = dlrun("experiment=names_char_rnn", f"dataset.root={data_root}", "trainer.epochs=3")
    assert run.code == 0, run.err
    result = dlrun(
        f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}",
        "inputs=[Jones,Satō]",
        "topk=2",
        "format=json",
        program=cli.predict_main,
    )
    out = predictions(result)
    assert [item["input"] for item in out] == ["Jones", "Satō"]
    for item in out:
        assert len(item["predictions"]) == 2
        assert {p["class"] for p in item["predictions"]} <= {"English", "French", "Japanese"}
        assert item["predictions"][0]["probability"] >= item["predictions"][1]["probability"]


def test_predict_a_table_row(dlrun):
    run = dlrun("trainer.epochs=5")
    out = predictions(
        dlrun(
            f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}",
            f"inputs=[{WINE_ROW}]",
            "format=json",
            program=cli.predict_main,
        )
    )
    assert out[0]["predictions"][0]["class"] == "1"


def test_predict_for_a_table_model_does_not_import_torchvision(dlrun, tmp_path):
    """torchvision costs a second to import (3.1 s -> 1.7 s for this command): a table or names
    model never needs it."""
    best = dlrun("trainer.epochs=1").run_dir / "checkpoints" / "best.pt"
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torchvision' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['dlrun-predict', 'ckpt={best}', 'inputs=[{WINE_ROW}]']\n"
        "from dlrun.cli import predict_main\n"
        "predict_main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "False" and "predictions" in done.stdout


def test_predict_and_serve_refuse_an_autoencoder_which_has_no_classes(dlrun, data_root, tmp_path):
    run = dlrun(
        "experiment=mnist_autoencoder", f"dataset.root={data_root}", "dataset.download=false", *FEW_STEPS
    )
    assert run.code == 0, run.err
    best = run.run_dir / "checkpoints" / "best.pt"
    said = f"{best} is an autoencoder: it reconstructs, it does not classify; use dlrun-eval"
    predicted = dlrun(f"ckpt={best}", "inputs=[digit.png]", program=cli.predict_main)
    assert predicted.code == 2 and said in predicted.err
    # a real process, with a time limit: were it not refused, it would serve until stopped
    served = subprocess.run(
        [SERVE, f"ckpt={best}", f"port={free_port()}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert served.returncode == 2 and said in served.stderr and "serving" not in served.stdout


def test_predict_a_row_of_the_wrong_width_says_so(dlrun):
    run = dlrun(*FEW_STEPS)
    result = dlrun(
        f"ckpt={run.run_dir / 'checkpoints' / 'last.pt'}", "inputs=[[1,2,3]]", program=cli.predict_main
    )
    assert result.code == 2 and "needs 13 numbers" in result.err


def test_a_name_given_to_a_table_model_is_refused_with_a_row_that_works(dlrun):
    run = dlrun(*FEW_STEPS)
    ckpt = f"ckpt={run.run_dir / 'checkpoints' / 'last.pt'}"
    refused = dlrun(ckpt, "inputs=[Jones]", program=cli.predict_main)
    assert refused.code == 2 and "inputs: 'Jones' is not a row of numbers" in refused.err
    example = re.search(r"as in (inputs=\S+) \(the training mean\)", refused.err).group(1)
    assert dlrun(ckpt, example, program=cli.predict_main).code == 0


def image_folder_run(dlrun, tmp_path, *settings: str):
    """A few steps on a small image folder written to tmp_path/bugs."""
    datasets.write_image_folder(tmp_path / "bugs", per_class=6)
    return dlrun(
        "dataset=imagefolder", f"dataset.root={tmp_path / 'bugs'}", *settings, *SMALL_IMAGES, *FEW_STEPS
    )


def test_predict_image_files_for_an_image_folder_model(dlrun, tmp_path):
    run = image_folder_run(
        dlrun, tmp_path, "model=resnet18", "model.pretrained=false", "model.freeze_backbone=true"
    )
    assert run.code == 0, run.err
    # valid, but surely not meant: said once, with the fix, and the run goes on
    assert run.out.count("warning: model.freeze_backbone=true with model.pretrained=false trains only") == 1
    images = sorted((tmp_path / "bugs" / "val" / "bees").glob("*.png"))[:2]
    out = predictions(
        dlrun(
            f"ckpt={run.run_dir / 'checkpoints' / 'last.pt'}",
            f"inputs=[{images[0]},{images[1]}]",
            "topk=1",
            "format=json",
            program=cli.predict_main,
        )
    )
    assert len(out) == 2 and out[0]["predictions"][0]["class"] in ("ants", "bees")


def test_predict_a_digit_image_for_an_mnist_model(dlrun, mnist_run, tmp_path):
    from PIL import Image

    image, label = datasets.pattern_images(1, 10, 56, 1, 7)  # twice MNIST's size: it gets resized
    Image.fromarray(image[0, :, :, 0]).save(tmp_path / "digit.png")
    out = predictions(
        dlrun(
            f"ckpt={mnist_run.run_dir / 'checkpoints' / 'best.pt'}",
            f"inputs=[{tmp_path / 'digit.png'}]",
            "format=json",
            program=cli.predict_main,
        )
    )
    assert len(out[0]["predictions"]) == 3


def test_predict_a_missing_image_file(dlrun, mnist_run, tmp_path):
    result = dlrun(
        f"ckpt={mnist_run.run_dir / 'checkpoints' / 'best.pt'}",
        f"inputs=[{tmp_path / 'no.png'}]",
        program=cli.predict_main,
    )
    assert result.code == 1 and "image file not found" in result.err


def test_a_very_large_image_is_read_with_a_warning_and_a_larger_one_refused(
    dlrun, mnist_run, tmp_path, monkeypatch
):
    from PIL import Image

    Image.new("L", (30, 30)).save(tmp_path / "large.png")  # 900 pixels
    Image.new("L", (60, 60)).save(tmp_path / "huge.png")  # 3,600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above it, refuses above twice it
    best = mnist_run.run_dir / "checkpoints" / "best.pt"
    large = dlrun(f"ckpt={best}", f"inputs=[{tmp_path / 'large.png'}]", program=cli.predict_main)
    assert large.code == 0, large.err
    assert large.err.strip() == "" and "Traceback" not in large.out
    Image.new("L", (40, 40)).save(tmp_path / "large.png")  # 1,600 pixels
    large = dlrun(f"ckpt={best}", f"inputs=[{tmp_path / 'large.png'}]", program=cli.predict_main)
    assert large.code == 0, large.err
    assert large.err == f"warning: {tmp_path / 'large.png'} is an image of 1,600 pixels: read anyway\n"
    huge = dlrun(f"ckpt={best}", f"inputs=[{tmp_path / 'huge.png'}]", program=cli.predict_main)
    assert huge.code == 1
    assert f"{tmp_path / 'huge.png'} is an image of 3,600 pixels, over Pillow's limit of 2,000" in huge.err
    assert "scale it down first: the model reads 28x28 pixels" in huge.err


@pytest.mark.parametrize("program", [cli.eval_main, cli.predict_main])
def test_a_hostile_checkpoint_is_refused_without_running_anything(dlrun, tmp_path, monkeypatch, program):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    torch.save({"format": "dlrun-checkpoint", "model": Hostile(marker), "config": {}}, tmp_path / "evil.pt")
    extra = ["inputs=[x]"] if program is cli.predict_main else []
    result = dlrun(f"ckpt={tmp_path / 'evil.pt'}", *extra, program=program)
    assert result.code == 1 and "refusing to load" in result.err and result.err.count("\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("program", [cli.eval_main, cli.predict_main])
def test_a_truncated_checkpoint_is_refused(dlrun, mnist_run, tmp_path, program):
    best = (mnist_run.run_dir / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(best[: len(best) // 3])
    extra = ["inputs=[x]"] if program is cli.predict_main else []
    result = dlrun(f"ckpt={tmp_path / 'cut.pt'}", *extra, program=program)
    assert result.code == 1 and "truncated or corrupt" in result.err


def test_code_named_in_a_checkpoint_config_is_never_instantiated(dlrun, mnist_run, tmp_path):
    state = read_checkpoint(mnist_run.run_dir / "checkpoints" / "best.pt")
    state["config"]["model"]["_target_"] = "os.system"
    write_checkpoint(tmp_path / "renamed.pt", {k: v for k, v in state.items() if k != "format"})
    result = dlrun(f"ckpt={tmp_path / 'renamed.pt'}", program=cli.eval_main)
    assert result.code == 1 and "names model._target_=os.system, code you have not allowed" in result.err

    # a file of the format before versions named dlrun's models by catalogue name: an unknown
    # name is not code either
    old = {k: v for k, v in state.items() if k not in ("format", "version")}
    old["config"]["model"] = {"arch": "os:system"}
    torch.save({"format": "dlrun-checkpoint", **old}, tmp_path / "old.pt")
    result = dlrun(f"ckpt={tmp_path / 'old.pt'}", program=cli.eval_main)
    assert result.code != 0 and "does not describe a model dlrun can rebuild" in result.err
    assert result.err.count("\n") == 1

    state = read_checkpoint(mnist_run.run_dir / "checkpoints" / "best.pt")
    state["config"]["loss"] = {"_target_": "os.system", "command": "touch pwned"}
    write_checkpoint(tmp_path / "targeted.pt", {k: v for k, v in state.items() if k != "format"})
    result = dlrun(f"ckpt={tmp_path / 'targeted.pt'}", program=cli.eval_main)
    assert result.code == 1 and "names loss._target_=os.system, code you have not allowed" in result.err


def test_each_kind_of_data_prepares_a_raw_input_as_its_training_did(csv_file, data_root):
    """dlrun-predict asks each kind of data (data/kinds.py) to prepare a raw input: a row of the
    table's own numbers, or a name, comes out as the loader's own sample."""
    from dlrun.data import LoadOptions
    from dlrun.data.kinds import PREPARE, prepare_inputs
    from dlrun.data.names import load_names
    from dlrun.data.tabular import load_csv

    cpu = torch.device("cpu")
    options = LoadOptions("classification", 0, 8, 8, cpu)
    table = load_csv(str(csv_file), options=options)
    rows, facts = table.val[0][:4], table.facts
    raw = (rows * torch.tensor(facts.std) + torch.tensor(facts.mean)).tolist()  # the numbers in the file
    assert torch.allclose(prepare_inputs(raw, facts, cpu), rows, atol=1e-5)

    names = load_names(str(data_root), options=options)
    tokens, vocab = names.val[0][:3], names.facts.vocab
    raw_names = ["".join(vocab[token - 1] for token in row if token) for row in tokens.tolist()]
    assert torch.equal(prepare_inputs(raw_names, names.facts, cpu), tokens)
    assert set(PREPARE) == {"image", "table", "text", "tensor"}  # every kind a loader gives


def test_predict_takes_a_folder_and_a_pattern_of_images(dlrun, tmp_path):
    run = image_folder_run(dlrun, tmp_path, "model=mlp")
    assert run.code == 0, run.err
    folder = tmp_path / "bugs" / "val" / "bees"
    checkpoint = f"ckpt={run.run_dir / 'checkpoints' / 'best.pt'}"
    files = sorted(str(path) for path in folder.glob("*.png"))
    in_folder = predictions(dlrun(checkpoint, f"inputs={folder}", "format=json", program=cli.predict_main))
    assert [item["input"] for item in in_folder] == files
    matched = predictions(
        dlrun(checkpoint, f"inputs=['{folder}/00*.png']", "format=json", program=cli.predict_main)
    )
    assert [item["input"] for item in matched] == [f for f in files if Path(f).name.startswith("00")]
    nothing = dlrun(checkpoint, f"inputs=['{folder}/*.jpg']", program=cli.predict_main)
    assert nothing.code == 2 and f"inputs: no file matches {folder}/*.jpg" in nothing.err


def test_the_model_summary_shows_layers_shapes_and_the_frozen_backbone(dlrun, tmp_path):
    from tests.helpers import read_events

    run = image_folder_run(
        dlrun,
        tmp_path,
        "model=resnet18",
        "model.pretrained=false",
        "model.freeze_backbone=true",
        "terminal.summary=true",
    )
    assert run.code == 0, run.err
    assert "1,026 trainable parameters of 11,177,538 (11,176,512 frozen)" in run.out  # the device line
    table = run.out[run.out.index("layer") :]
    assert "conv1" in table and "Conv2d" in table and "[2, 64, 16, 16]" in table  # 32 px in, stride 2
    assert "fc" in table and "[2, 2]" in table
    text = (
        read_events(run.run_dir).Tensors("model/summary/text_summary")[0].tensor_proto.string_val[0].decode()
    )
    assert "| conv1 | Conv2d | [2, 64, 16, 16] | 9,408 | 0 |" in text and "(11,176,512 frozen)" in text
