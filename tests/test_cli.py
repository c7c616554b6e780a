"""The installed commands, run as separate processes exactly as a user types them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def torch_free(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the dlrun entry point and report whether torch was imported by the time it exited."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH',\n"
        "                              file=sys.stderr))\n"
        f"sys.argv = {['dlrun', *argv]!r}\n"
        "from dlrun.cli import main\n"
        "main()\n"
    )
    return run([sys.executable, "-c", code], cwd)


def test_help_lists_the_groups_without_importing_torch(tmp_path):
    result = torch_free(["--help"], tmp_path)
    assert result.returncode == 0
    assert "NO_TORCH" in result.stderr
    for group in ("dataset:", "model:", "optimizer:", "scheduler:", "loss:", "trainer:"):
        assert group in result.stdout
    assert "tensorboard --logdir runs" in result.stdout
    assert "dlrun init DIR" in result.stdout  # the way to a project of one's own
    assert not (tmp_path / "runs").exists()  # help writes nothing


def test_cfg_job_prints_the_config_without_importing_torch(tmp_path):
    result = torch_free(["--cfg", "job", "model=cnn"], tmp_path)
    assert result.returncode == 0 and "NO_TORCH" in result.stderr
    assert "_target_: dlrun.models.convnet.ConvNet" in result.stdout


@pytest.mark.parametrize("argv", [["model=nope"], ["trainer.batch_size=big"], ["model=char_rnn"]])
def test_config_errors_are_answered_without_importing_torch(tmp_path, argv):
    result = torch_free(argv, tmp_path)
    assert result.returncode == 2
    assert "NO_TORCH" in result.stderr
    assert result.stderr.startswith("dlrun: error: ")


def test_the_default_experiment_through_the_console_script(tmp_path):
    """`dlrun` alone, as the quick start types it: the wine MLP, trained long enough to learn."""
    result = run([str(BIN / "dlrun")], tmp_path)
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "runs").glob("*/*_wine_mlp"))
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["monitor"] == "val/acc" and metrics["best_value"] >= 0.9
    assert metrics["test"]["acc"] >= 0.95
    # auto: batches of 8 (not 64) from the 106 training rows, 143 epochs, 2,002 steps (not 20, which
    # left a linear model at 39 %)
    assert (metrics["epochs"], metrics["steps"]) == (143, 2002)
    assert "tensorboard --logdir runs" in result.stdout
    assert re.search(r"^epoch (\d+)/\1 ", result.stdout, re.M)  # the last epoch's row


def test_python_dash_m_is_the_same_command(tmp_path):
    result = run([sys.executable, "-m", "dlrun", "trainer.epochs=1", "hydra.run.dir=out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_two_runs_started_together_get_their_own_folders(tmp_path):
    procs = [
        subprocess.Popen(
            [str(BIN / "dlrun"), "trainer.epochs=1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    assert len(list((tmp_path / "runs").glob("*/*_wine_mlp"))) == 2
