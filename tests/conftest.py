"""Shared fixtures: tiny real-format datasets and a way to run `dlrun` as a user would.

Runs happen in this process (the CLI entry point with sys.argv set), so torch is imported once
for the whole suite; the few tests about the installed command itself use a subprocess.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import datasets
from tests.helpers import read_events

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    """Under pytest-xdist (the default: -n auto), each worker has a CPU core of its own. A run
    then takes that one core as its share (trainer.num_threads=0), instead of two workers each
    running torch on every core: threads spinning against each other's cores cost more than the
    second core gives (the suite took 5 min 38 s that way, 3 min 44 s pinned)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


def pytest_sessionfinish(session):
    """The session that started the SLURM cluster stops it (in the main process, after the
    workers of pytest-xdist are done)."""
    if not hasattr(session.config, "workerinput"):
        from tests import cluster

        cluster.stop_if_started()


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A one-node SLURM cluster that answers sinfo: started when none does (tests/cluster.py)."""
    from tests import cluster

    reason = cluster.start()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test has its own cache folder (the image check's record): none sees another's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def in_this_process(monkeypatch):
    """Commands called in the test's process give its signal handlers back when they end, instead
    of leaving a handler that ends the process at the next Ctrl-C (as a command of its own does)."""
    from dlrun.signals import STOP

    monkeypatch.setattr(STOP, "own_process", False)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One folder with tiny MNIST, Fashion-MNIST, CIFAR-10 and names data in their real formats."""
    root = tmp_path_factory.mktemp("data")
    datasets.write_mnist(root, "MNIST")
    datasets.write_mnist(root, "FashionMNIST")
    datasets.write_names(root)
    return root


@pytest.fixture(scope="session")
def csv_file(tmp_path_factory) -> Path:
    return datasets.write_csv(tmp_path_factory.mktemp("csv") / "table.csv")


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """CIFAR-10 pickles; torchvision's md5 table is pointed at these files' real md5s."""
    from torchvision import datasets as tv_datasets

    md5 = datasets.write_cifar10(tmp_path)
    monkeypatch.setattr(
        tv_datasets.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(tv_datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(tv_datasets.CIFAR10, "meta", {**tv_datasets.CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path


@dataclass
class RunResult:
    code: int
    run_dir: Path
    out: str
    err: str

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "metrics.json").read_text())

    def events(self):
        return read_events(self.run_dir)

    def checkpoint(self, name: str = "last.pt") -> dict[str, Any]:
        from dlrun.checkpoints.format import read_checkpoint

        return read_checkpoint(self.run_dir / "checkpoints" / name)


@pytest.fixture
def dlrun(tmp_path, capsys, monkeypatch):
    """Run the `dlrun` command in-process: dlrun("model=cnn", ...) -> RunResult."""
    from dlrun import cli, quoting
    from dlrun.config import project

    counter = iter(range(1000))
    # dlrun makes the current folder (and a project's) importable: undone after each test
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(project, "CODE_FOLDERS", [])
    monkeypatch.setattr(quoting, "typed_in", "")

    def run(*overrides: str, run_dir: Path | None = None, program=cli.main) -> RunResult:
        run_dir = run_dir or tmp_path / f"run{next(counter)}"
        argv = [*overrides]
        if program is cli.main and not any(
            arg.startswith(("hydra.run.dir=", "-m", "--multirun")) for arg in argv
        ):
            argv.append(f"hydra.run.dir={run_dir}")
        monkeypatch.setattr(sys, "argv", ["dlrun", *argv])
        try:
            program()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        captured = capsys.readouterr()
        return RunResult(code, run_dir, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA
