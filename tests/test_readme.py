"""The README's shell commands, run as written.

Every command of a ```bash block in README.md runs as a user would type it, in a workspace that a
block shares with the blocks its test worker ran before it: so a block must make what it reads
itself (the runs it compares, the checkpoint it evaluates). The only changes are these, made
here where they can be seen:

- the data folder, `./data` of the workspace (dlrun's default `dataset.root`), is a folder of tiny
  datasets in the real on-disk formats, and so is `../shared/data` where a command names it;
- a `dlrun` command that trains gets SHORT_RUN appended (the last value of a setting wins), and
  an Optuna search a smaller number of trials;
- `tensorboard` gets a free port on 127.0.0.1: the test waits until its HTTP API lists the runs,
  then stops it;
- the set-up steps (`python3 -m venv`, `. .venv/bin/activate`, `pip install`) and `pytest` are
  what .ci/run runs: checked to be there, not run again from inside the tests;
- a command marked `(not run here: REASON)` is composed with `--cfg job` when it is a `dlrun`
  command, and otherwise not run.

The workspace holds what the commands read: `~/photos` (HOME points at the workspace), `iris.csv`,
`ant.jpg` and `bee.jpg`, and ResNet-18 weights where torchvision's cache keeps ImageNet's. A
newcomer has none of these right after the first Quick-start command, nor the extras that command
does not install: NEEDS lists what each needs, and a command that uses one must say so in its
comment.
"""

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from tests import datasets
from tests.helpers import tensorboard_server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
SHORT_RUN = "trainer.epochs=1 trainer.limit_train_batches=3 trainer.limit_val_batches=2"
FEWER_TRIALS = "hydra.sweeper.n_trials=2"
REAL_DATA = "../shared/data"
SETUP = re.compile(r"python3 -m venv \S+|\. \S+/bin/activate|pip install .+")
NOT_RUN = re.compile(r"\(not run here: [^)]+\)")
# what a command may need that the first Quick-start command does not give: (what the command
# holds, what its comment must say); MNIST-like data is downloaded at first use when online
NEEDS = [
    (r"~/photos", r"needs.*~/photos"),
    (r"\biris\.csv", r"needs.*iris\.csv"),
    (r"\b(ant|bee)\.jpg", r"needs.*ant\.jpg"),
    (r"ckpt=runs/(names|photos)\b", r"needs.*runs/(names|photos)"),
    (r"dataset.root=~/data", r"needs.*~/data"),
    (r"names_char_rnn|dataset=names\b", r"needs.*names data"),
    (r"hymenoptera", r"needs.*hymenoptera"),
    (r"(dataset|experiment)=(mnist|fashion_mnist|cifar10)", r"downloads|needs"),
    (r"hparams_search=|hydra/launcher=(joblib|slurm)", r"needs the sweep extra"),
    (r"mlflow", r"needs the mlflow extra"),
    (r"model=timm", r"needs timm"),
    (r"dlrun-export(?!.*format=(torch_export|torchscript))", r"needs the onnx extra"),
    (r"dlrun-serve", r"needs the serve extra"),
    (r"\.\./shared/data", r"needs"),
]


@dataclass
class Command:
    text: str  # as written, continuation lines joined, without its comment
    not_run: Optional[str]  # the README's reason, when it is marked
    comment: str = ""  # its own comment, and the comment lines just above it


def bash_blocks(text: str) -> list[tuple[str, list[Command]]]:
    """(the heading above it, its commands) for every ```bash block."""
    blocks, heading = [], ""
    for part in re.split(r"(```bash\n.*?```)", text, flags=re.S):
        if not part.startswith("```bash"):
            headings = re.findall(r"^#+ (.+)$", part, re.M)
            heading = headings[-1] if headings else heading
            continue
        commands, mark, above = [], None, ""
        for line in part[len("```bash\n") : -3].replace("\\\n", " ").splitlines():
            comment = re.search(r"(^|\s)#(\s|$)", line)
            command = line[: comment.start()] if comment else line
            said = line[comment.end() :] if comment else ""
            marked = NOT_RUN.search(line)
            if not command.strip():
                mark = marked.group(0) if marked else mark
                above = f"{above} {said}" if said else ""
                continue
            not_run = (marked.group(0) if marked else None) or mark
            commands.append(Command(" ".join(command.split()), not_run, f"{above} {said}".strip()))
            mark, above = None, ""
        blocks.append((heading, commands))
    return blocks


def prepared(command: Command, data_root: Path) -> Optional[str]:
    """The command line the test runs for a README command (None: nothing left to run)."""
    parts = []
    for part in command.text.split(" && "):
        if SETUP.fullmatch(part) or part == "pytest":
            continue  # .ci/run installs and runs the tests: test_ci_runs_the_readmes_set_up
        words = part.split()
        if command.not_run:
            if words[0] == "dlrun":
                parts.append(" ".join(["dlrun", "--cfg", "job", *words[1:]]))
            continue
        part = part.replace(REAL_DATA, shlex.quote(str(data_root)))
        trains = (
            words[0] == "dlrun" and not {"--help", "--cfg", "init"} & set(words) or words[0] == "torchrun"
        )
        if trains:
            part += f" {SHORT_RUN}" + (f" {FEWER_TRIALS}" if "hparams_search=" in part else "")
        parts.append(part)
    return " && ".join(parts) or None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_root) -> Path:
    """A user's folder: the data the README's commands name, and a home with ~/photos."""
    import torch
    from PIL import Image
    from torchvision.models import ResNet18_Weights, resnet18

    folder = tmp_path_factory.mktemp("user")
    datasets.write_image_folder(folder / "photos", per_class=6)
    for name in ("ant.jpg", "bee.jpg"):
        picture = next((folder / "photos" / "val" / f"{name[:3]}s").glob("*.png"))
        Image.open(picture).convert("RGB").save(folder / name, "JPEG")
    datasets.write_iris_like(folder / "iris.csv")
    (folder / "data").symlink_to(data_root, target_is_directory=True)  # ./data and ~/data
    cache = folder / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cache.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), cache)  # stands in for ImageNet's weights (offline here)
    return folder


def environment(workspace: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DLRUN_", "HYDRA_"))}
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "HOME": str(workspace),
        "TORCH_HOME": str(workspace / "torch"),
        "COLUMNS": "120",
    }


def run_line(line: str, workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", line],
        cwd=workspace,
        env=environment(workspace),
        capture_output=True,
        text=True,
        timeout=300,
    )


def serve_tensorboard(line: str, workspace: Path) -> None:
    """Start `tensorboard` as written, on a free local port; its API must list the runs."""
    with tensorboard_server(
        ["bash", "-c", f'exec {line} "$@"', "tensorboard"], workspace, environment(workspace)
    ) as ask:
        assert ask("/data/runs")


BLOCKS = bash_blocks(README.read_text())


def test_the_readme_has_the_commands_this_test_runs():
    commands = [command.text for _, block in BLOCKS for command in block]
    assert len(BLOCKS) >= 8 and "dlrun" in commands and "tensorboard --logdir runs" in commands
    assert not [text for text in commands if "<" in text or "..." in text], "placeholders cannot run"


def unsaid_needs(command: Command) -> list[str]:
    """What the command needs (NEEDS) and its comment does not say."""
    if command.not_run:
        return []  # it says why it is not run
    return [
        says for uses, says in NEEDS if re.search(uses, command.text) and not re.search(says, command.comment)
    ]


@pytest.mark.parametrize(
    "command", [command for _, block in BLOCKS for command in block], ids=lambda c: c.text
)
def test_a_command_says_what_it_needs_beyond_the_first_install(command):
    """Right after the first Quick-start command a newcomer has the wine data and dlrun without
    extras: a command that needs more says what in its comment."""
    assert not unsaid_needs(command), f"{command.text!r}: its comment must say {unsaid_needs(command)}"


def test_the_needs_check_catches_a_command_that_does_not_say():
    silent, said, above = bash_blocks(
        "## X\n```bash\ndlrun dataset=csv dataset.path=iris.csv   # a table\n"
        "dlrun dataset=csv dataset.path=iris.csv   # needs iris.csv\n"
        "# needs the sweep extra\ndlrun hparams_search=wine_optuna\n```\n"
    )[0][1]
    assert silent.comment == "a table" and unsaid_needs(silent) == [r"needs.*iris\.csv"]
    assert unsaid_needs(said) == [] and unsaid_needs(above) == []


def test_ci_runs_the_readmes_set_up_and_test_command():
    quick_start = [command.text for command in BLOCKS[0][1]]
    tests = next(text for text in quick_start if text.endswith("&& pytest"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.removesuffix(" && pytest") in ci and re.search(r"^pytest$", ci, re.M)


@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=[f"{i}-{heading}" for i, (heading, _) in enumerate(BLOCKS)]
)
def test_every_readme_command_works_as_written(index, workspace, data_root):
    for command in BLOCKS[index][1]:
        line = prepared(command, data_root)
        if line is None:
            continue
        if line.startswith("tensorboard"):
            serve_tensorboard(line, workspace)
            continue
        result = run_line(line, workspace)
        assert result.returncode == 0, (
            f"README: {command.text}\nran: {line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
