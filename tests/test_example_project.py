"""examples/shapes, a user's project, run from a fresh copy outside the repository with the
installed commands, as a user runs it; `dlrun init`; and dlrun installed from its wheel."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun.checkpoints.format import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# small and repeatable: the preset's 4000 pictures, bitwise-deterministic kernels, one thread
SHAPES = [
    "experiment=shapes",
    "trainer.deterministic=true",
    "trainer.num_threads=1",
    "terminal.progress=off",
]


def run(folder: Path, program: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / program), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("user") / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", copy, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return copy


@pytest.fixture(scope="module")
def trained(example) -> Path:
    run(example, "dlrun", *SHAPES, "trainer.epochs=2", "hydra.run.dir=runs/two")
    return example / "runs" / "two"


def test_the_example_trains_and_resumes_bitwise(example, trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["acc"] >= 0.8 and metrics["epochs"] == 2
    # the start of the run names the user's code and all its settings (they are the user's)
    started = (trained / "dlrun.log").read_text()
    assert "model (shapenet: nets.ShapeNet): width=16 dropout=0.1" in started
    run(example, "dlrun", *SHAPES, "trainer.epochs=1", "hydra.run.dir=runs/one")
    run(
        example,
        "dlrun",
        *SHAPES,
        "trainer.epochs=2",
        "trainer.resume_force=true",
        "trainer.resume=runs/one/checkpoints/last.pt",
    )
    resumed, straight = (
        read_checkpoint(folder / "checkpoints" / "last.pt") for folder in (example / "runs" / "one", trained)
    )
    assert all(torch.equal(resumed["model"][key], straight["model"][key]) for key in straight["model"])
    assert resumed["position"] == straight["position"]


def test_eval_reproduces_the_test_accuracy(example, trained):
    run(example, "dlrun-eval", f"ckpt={trained / 'checkpoints' / 'best.pt'}", "output=eval.json")
    report = json.loads((example / "eval.json").read_text())
    assert report["acc"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test"]["acc"])


def user_module(example: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", example / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_gives_the_classes_the_trained_model_gives(example, trained):
    from PIL import Image

    shapes, nets = user_module(example, "shapes"), user_module(example, "nets")
    generator = torch.Generator().manual_seed(99)
    pictures = [shapes.draw(kind % 4, generator) for kind in range(8)]
    files = []
    for index, picture in enumerate(pictures):
        files.append(example / f"picture{index}.png")
        Image.fromarray(picture[0].numpy()).save(files[-1])
    out = run(
        example,
        "dlrun-predict",
        f"ckpt={trained / 'checkpoints' / 'best.pt'}",
        "topk=1",
        "format=json",
        f"inputs=[{','.join(str(path) for path in files)}]",
    )
    predicted = [item["predictions"][0]["class"] for item in json.loads(out.stdout)]

    state = read_checkpoint(trained / "checkpoints" / "best.pt")
    settings = {k: v for k, v in state["config"]["model"].items() if k != "_target_"}
    model = nets.ShapeNet(state["facts"]["input_shape"], state["facts"]["num_classes"], **settings).eval()
    model.load_state_dict(state["model"])
    with torch.no_grad():
        own = model(torch.stack(pictures).float() / 255).argmax(1)
    assert predicted == [state["facts"]["class_names"][index] for index in own]


def test_a_two_job_sweep_of_the_example(example):
    out = run(
        example,
        "dlrun",
        "-m",
        *SHAPES,
        "trainer.epochs=1",
        "model.width=8,16",
        "dataset.count=800",
        "hydra.sweep.dir=runs/sweep",
    )
    rows = json.loads((example / "runs" / "sweep" / "sweep_summary.json").read_text())
    assert [row["status"] for row in rows] == ["ok", "ok"] and "sweep: 2 jobs, 0 failed" in out.stdout


def test_a_random_transform_reads_the_data_through_workers(example):
    out = run(
        example,
        "dlrun",
        *SHAPES,
        "experiment=shapes_augmented",
        "trainer.epochs=1",
        "trainer.limit_train_batches=3",
        "dataset.count=800",
    )
    assert "read by 2 DataLoader worker(s)" in out.stdout


def test_dlrun_init_writes_a_project_that_trains_at_once(tmp_path):
    out = run(tmp_path, "dlrun", "init", "my_project")
    assert "next: cd my_project && dlrun experiment=spirals_tiny" in out.stdout
    run(tmp_path / "my_project", "dlrun", "experiment=spirals_tiny", "hydra.run.dir=runs/first")
    metrics = json.loads((tmp_path / "my_project" / "runs" / "first" / "metrics.json").read_text())
    assert metrics["test"]["acc"] >= 0.9


def test_the_installed_wheel_carries_the_configs_and_the_project_template(tmp_path):
    """dlrun from its wheel (not the editable checkout): init, then a run from the new project."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "wheel").glob("dlrun-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def python(folder: Path, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, *args], cwd=folder, capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    where = python(tmp_path, "-c", "import dlrun; print(dlrun.__file__)").stdout
    assert str(tmp_path / "site") in where
    python(tmp_path, "-m", "dlrun", "init", "proj")
    python(
        tmp_path / "proj", "-m", "dlrun", "experiment=spirals_tiny", "trainer.epochs=2", "hydra.run.dir=out"
    )
    assert (tmp_path / "proj" / "out" / "metrics.json").is_file()
