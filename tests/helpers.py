"""Helpers the test modules share (test modules never import each other)."""

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Optional

import requests
from hydra import compose, initialize_config_dir
from tensorboard.plugins.hparams import plugin_data_pb2

from dlrun import cli

# a run of a few steps: enough to write every file a run writes
FEW_STEPS = [
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
]
# image folders of tiny pictures: the default transforms crop 224 pixels
SMALL_IMAGES = [
    "dataset.train_transforms=[{name: RandomResizedCrop, size: 32}, RandomHorizontalFlip]",
    "dataset.val_transforms=[{name: Resize, size: 36}, {name: CenterCrop, size: 32}]",
    "dataset.num_workers=0",
]
CONFIG_DIR = Path(cli.config_dir())


def image_model(dlrun, tmp_path: Path) -> tuple[Path, Path]:
    """(an image folder of 16x16 PNGs at tmp_path/bugs, the best.pt of a CNN's few steps on it,
    read without transforms: a served or exported model reads the files as they are)."""
    from tests import datasets

    root = datasets.write_image_folder(tmp_path / "bugs", per_class=6, size=16)
    run = dlrun(
        "dataset=imagefolder",
        f"dataset.root={root}",
        "model=cnn",
        "dataset.num_workers=0",
        "dataset.train_transforms=[]",
        "dataset.val_transforms=[]",
        *FEW_STEPS,
    )
    assert run.code == 0, run.err
    return root, run.run_dir / "checkpoints" / "best.pt"


def small_mlp_on(data_root, dataset: str = "mnist") -> list[str]:
    """An image dataset from the tiny copy the tests write, through an MLP with 32 hidden units."""
    return [
        f"dataset={dataset}",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "model=mlp",
        "model.hidden_sizes=[32]",
    ]


def compose_config(*overrides: str, hydra: bool = False):
    """The config dlrun composes for these overrides (with Hydra's own node if `hydra`)."""
    cli._register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def options_of(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def read_events(run_dir: Path):
    """The run's TensorBoard events, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def hparams(run_dir: Path) -> tuple[dict, list[str], str]:
    """(hparam values of the run's session, the final metric tags it logged, its trial name), from
    the run's own event file."""
    events = read_events(run_dir)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {}
    for key, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    final = sorted(tag for tag in events.Tags()["scalars"] if tag.startswith("whole_run/"))
    return values, final, start.session_start_info.group_name


@contextlib.contextmanager
def tensorboard_server(command: list[str], cwd: Path, env: Optional[dict] = None):
    """A real `tensorboard` on a free port of 127.0.0.1, answering its HTTP API: yields a function
    that GETs (or POSTs JSON to) a path and returns the decoded JSON."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ask(path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        # TensorBoard refuses a POST without this header (its guard against cross-site requests)
        headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"tensorboard exited: {server.stderr.read()}"
            try:
                if ask("/data/runs"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "tensorboard listed no runs in 120 s"
            time.sleep(0.5)
        yield ask
    finally:
        server.terminate()
        server.wait(timeout=30)


class Hostile:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def project(root: Path, monkeypatch, files: dict[str, str]) -> Path:
    """A project folder ([tool.dlrun]) holding `files`, made the current folder. Module names
    are given per test: a module imported by one test stays cached for the others."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.dlrun]\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()  # files written this instant: a finder's listing may predate them
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the project's folder goes first; undone after
    monkeypatch.setenv("PYTHONPATH", "")
    return root


def continued(dlrun, settings: list[str], stopped_after: int, epochs: int):
    """A run of `stopped_after` epochs, resumed from its last.pt for `epochs` in all."""
    first = dlrun(*settings, f"trainer.epochs={stopped_after}")
    return dlrun(
        *settings,
        f"trainer.epochs={epochs}",
        f"trainer.resume={first.run_dir / 'checkpoints' / 'last.pt'}",
        "trainer.resume_force=true",
        run_dir=first.run_dir,
    )


SERVE = str(Path(sys.executable).parent / "dlrun-serve")  # the one installed beside this Python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(checkpoint: Path, *settings: str, cwd: Path):
    """`dlrun-serve` on a free port, once /health answers: yields its address and the process."""
    port = free_port()
    process = subprocess.Popen(
        [SERVE, f"ckpt={checkpoint}", f"port={port}", *settings],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "dlrun-serve did not answer"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
