"""The catalogue of bad inputs: what a user types or feeds dlrun by mistake, and what the one
error line must name. tests/test_bad_input.py runs every case in-process;
benchmarks/reliability_report.py runs them as real commands and counts the outcomes.

A case's `setup(folder, run)` writes what it needs under `folder` (running dlrun through `run`
where it needs an earlier run) and returns the command line and the text the error must name.
A case of code 0 is suspect rather than wrong: the command goes on, and a `warning:` names it.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests import datasets

ONE_EPOCH = ["trainer.epochs=1", "terminal.progress=off"]
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Case:
    name: str
    setup: Callable  # (folder, run) -> (args, text the error line must name)
    code: int = 1  # 2: a config error, 1: data, numerics, checkpoints, 0: goes on with a warning
    program: str = "dlrun"
    environment: dict = field(default_factory=dict)  # run as a process with these variables set


def csv_with(folder: Path, lines: list[str]) -> Path:
    path = folder / "table.csv"
    path.write_text("\n".join(["kind,a,b,c", "x,0.1,0.2,0.3", "y,0.4,0.5,0.6"] + lines) + "\n")
    return path


def csv_case(lines: list[str], names: str) -> Callable:
    def setup(folder, run):
        path = csv_with(folder, lines)
        return ["dataset=csv", f"dataset.path={path}", *ONE_EPOCH], names.format(path=path)

    return setup


def config_case(args: list[str], names: str) -> Callable:
    return lambda folder, run: (list(args), names)


def images(folder: Path) -> Path:
    return datasets.write_image_folder(folder / "images", per_class=4, size=16)


IMAGE_ARGS = [
    "dataset=imagefolder",
    "model=cnn",
    "dataset.num_workers=0",
    "dataset.train_transforms=[]",
    "dataset.val_transforms=[]",
    *ONE_EPOCH,
]


def image_case(damage: Callable[[Path], Path], extra: tuple[str, ...] = ()) -> Callable:
    def setup(folder, run):
        root = images(folder)
        named = damage(root)
        return [f"dataset.root={root}", *IMAGE_ARGS, *extra], str(named)

    return setup


def empty_class(root: Path) -> Path:
    for image in (root / "train" / "bees").iterdir():
        image.unlink()
    return root / "train" / "bees"


def broken_image(root: Path) -> Path:
    path = root / "train" / "ants" / "001.png"
    path.write_bytes(path.read_bytes()[:40])  # cut short
    return path


def no_classes(root: Path) -> Path:
    for image in (root / "train").glob("*/*"):
        image.unlink()
    for folder in (root / "train").iterdir():
        folder.rmdir()
    return root / "train"


def mnist_labels_out_of_range(folder, run):
    root = datasets.write_mnist(folder / "data")
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8 + 5] = 12  # sample 5 (after the 8-byte header): class 12 of 10
    labels.write_bytes(bytes(raw))
    return ["dataset=mnist", f"dataset.root={root}", "dataset.download=false", *ONE_EPOCH], "sample 5"


def names_not_utf8(folder, run):
    root = datasets.write_names(folder / "data")
    (root / "names" / "Greek.txt").write_bytes(b"Papadopoulos\nNikolaou\nAnto" + b"\xffnis\n")
    return [
        "experiment=names_char_rnn",
        f"dataset.root={root}",
        *ONE_EPOCH,
    ], f"{root / 'names' / 'Greek.txt'}:3:5"


def csv_empty(folder, run):
    path = folder / "empty.csv"
    path.write_text("")
    return ["dataset=csv", f"dataset.path={path}", *ONE_EPOCH], f"{path} is empty"


def csv_not_utf8(folder, run):
    path = csv_with(folder, [])
    path.write_bytes(path.read_bytes().replace(b"y,0.4", b"y,\xe9.4"))
    return ["dataset=csv", f"dataset.path={path}", *ONE_EPOCH], f"{path}:3:3"


def finished_run(folder: Path, run) -> Path:
    """A wine run of one epoch in folder/run (metrics.json, checkpoints)."""
    run_dir = folder / "run"
    run(*ONE_EPOCH, f"hydra.run.dir={run_dir}")
    return run_dir


def rerun_into_a_finished_run(folder, run):
    run_dir = finished_run(folder, run)
    return [*ONE_EPOCH, f"hydra.run.dir={run_dir}"], "already holds a run"


def resume_args(run_dir: Path, *settings: str) -> list[str]:
    """Resume the run in `run_dir` from its last.pt, with `settings` changed."""
    return [
        *ONE_EPOCH,
        *settings,
        f"hydra.run.dir={run_dir}",
        f"trainer.resume={run_dir / 'checkpoints' / 'last.pt'}",
    ]


def resume_with_another_model(folder, run):
    run_dir = finished_run(folder, run)
    return resume_args(run_dir, "trainer.epochs=2", "model.hidden_sizes=[8]"), "model.hidden_sizes"


def resume_from_a_damaged_checkpoint(folder, run):
    run_dir = finished_run(folder, run)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    return [*ONE_EPOCH, "trainer.epochs=2", f"hydra.run.dir={run_dir}", f"trainer.resume={checkpoint}"], str(
        checkpoint
    )


def eval_a_missing_checkpoint(folder, run):
    return [f"ckpt={folder / 'nope.pt'}"], str(folder / "nope.pt")


def predict_a_missing_image(folder, run):
    run_dir = folder / "run"
    run(f"dataset.root={images(folder)}", *IMAGE_ARGS, f"hydra.run.dir={run_dir}")
    return [f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", f"inputs=[{folder / 'ant.jpg'}]"], str(
        folder / "ant.jpg"
    )


def trained(folder: Path, run, *settings: str) -> Path:
    """The best.pt of a run of `settings` in folder/run."""
    run_dir = folder / "run"
    run(*settings, *ONE_EPOCH, f"hydra.run.dir={run_dir}")
    return run_dir / "checkpoints" / "best.pt"


def names_model(folder: Path, run) -> Path:
    root = datasets.write_names(folder / "data")
    return trained(folder, run, "experiment=names_char_rnn", f"dataset.root={root}")


def predict_case(model: Callable, inputs: str, names: str) -> Callable:
    """dlrun-predict with `inputs` on the best.pt that `model(folder, run)` trains."""
    return lambda folder, run: ([f"ckpt={model(folder, run)}", inputs], names)


def table_model(folder: Path, run) -> Path:
    return trained(folder, run)


def image_model(folder: Path, run) -> Path:
    return trained(folder, run, f"dataset.root={images(folder)}", *IMAGE_ARGS)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one empty row of data: Pillow judges
    an image's size by its header, before it decodes anything."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def predict_a_decompression_bomb(folder, run):
    run_dir = folder / "run"
    run(f"dataset.root={images(folder)}", *IMAGE_ARGS, f"hydra.run.dir={run_dir}")
    bomb = folder / "huge.png"
    bomb.write_bytes(png_claiming(20_000, 20_000))  # 400 million pixels in 70 bytes
    return [f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", f"inputs=[{bomb}]"], (
        f"{bomb} is an image of 400,000,000 pixels, over Pillow's limit of 178,956,970"
    )


def a_config_file_that_is_not_yaml(folder, run):
    bad = folder / "configs" / "model" / "broken.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("_target_: torch.nn.Linear\nin_features: [1, 2\n")
    return [
        f"--config-dir={folder / 'configs'}",
        "model=broken",
    ], f"{bad}, line 3, column 1 is not valid YAML"


def resume_from_a_folder_named_last_pt(folder, run):
    named = folder / "run" / "checkpoints" / "last.pt"
    named.mkdir(parents=True)  # a folder, not the file: nothing the message suggests may be it
    return [
        *ONE_EPOCH,
        f"trainer.resume={named}",
    ], "is a folder, not a checkpoint file; give a checkpoint file"


def a_csv_separated_by_semicolons(folder, run):
    path = folder / "semicolons.csv"
    path.write_text("a;b;label\n" + "".join(f"{i};{i + 1};{i % 2}\n" for i in range(20)))
    return [
        "dataset=csv",
        f"dataset.path={path}",
        *ONE_EPOCH,
    ], "looks separated by ';': add dataset.delimiter=\";\""


def a_table_of_one_class(folder, run):
    path = folder / "one_class.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i + 1},same\n" for i in range(20)))
    args = ["dataset=csv", f"dataset.path={path}", "dataset.label_column=label", *ONE_EPOCH]
    return args, "holds one class ('same') in all 20 rows: a classifier needs two or more"


def a_label_of_a_different_value_in_every_row(folder, run):
    path = folder / "ids.csv"
    path.write_text("a,b,id\n" + "".join(f"{i},{i % 3},{i}\n" for i in range(30)))
    args = ["dataset=csv", f"dataset.path={path}", "dataset.label_column=id", *ONE_EPOCH]
    return args, "each of the 30 classes has a single row, so no split can both train and validate"


def a_label_column_of_prices(folder, run):
    path = folder / "prices.csv"  # 40 prices over 178 rows: a number to predict, not 40 classes
    path.write_text("a,b,price\n" + "".join(f"{i},{i % 7},{100 + (i % 40) * 1.5}\n" for i in range(178)))
    args = ["dataset=csv", f"dataset.path={path}", "dataset.label_column=price", *ONE_EPOCH]
    return args, "holds 40 different values in 178 rows: a number to predict rather than classes?"


def class_folder_linked_to_nothing(root: Path) -> Path:
    (root / "train" / "wasps").symlink_to(root / "unmounted")
    return root / "train" / "wasps"


def images_beside_the_class_folders(root: Path) -> Path:
    image = sorted((root / "train" / "ants").iterdir())[0]
    image.rename(root / "train" / image.name)
    return root / "train" / image.name


def poisoned(folder, run) -> Path:
    """A finished run whose best.pt and last.pt hold a NaN in their first layer's weights (a run
    that diverged; or a file someone edited)."""
    import torch

    run_dir = finished_run(folder, run)
    for name in ("best.pt", "last.pt"):
        path = run_dir / "checkpoints" / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        first = next(iter(state["model"]))
        state["model"][first].view(-1)[0] = float("nan")
        torch.save(state, path)
    return run_dir


def eval_a_poisoned_checkpoint(folder, run):
    path = poisoned(folder, run) / "checkpoints" / "best.pt"
    return [f"ckpt={path}"], f"{path} holds weights that are not finite"


def predict_from_a_poisoned_checkpoint(folder, run):
    path = poisoned(folder, run) / "checkpoints" / "best.pt"
    row = ",".join(["13.2"] * 13)
    return [f"ckpt={path}", f"inputs=[[{row}]]"], f"{path} holds weights that are not finite"


def resume_a_poisoned_checkpoint(folder, run):
    run_dir = poisoned(folder, run)
    path = run_dir / "checkpoints" / "last.pt"
    return resume_args(run_dir, "trainer.epochs=2", "trainer.resume_force=true"), f"{path} holds weights"


def force_a_longer_onecycle(folder, run):
    """OneCycleLR plans its whole schedule over the run's steps: it cannot be stretched."""
    run_dir = folder / "run"
    run(*ONE_EPOCH, "scheduler=onecycle", f"hydra.run.dir={run_dir}")
    changed = ("scheduler=onecycle", "trainer.epochs=3", "trainer.resume_force=true")
    return resume_args(run_dir, *changed), "scheduler=onecycle plans its schedule over the run's length"


def resume_while_the_run_is_live(folder, run):
    """Another process (the run itself, still training) holds the run folder's lock."""
    import subprocess
    import sys

    run_dir = finished_run(folder, run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from dlrun.runs.lock import lock_folder; "
            f"lock_folder(Path({str(run_dir)!r})); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    LIVE_HOLDERS.append(holder)
    return resume_args(
        run_dir, "trainer.epochs=2"
    ), f"{run_dir} is being written by dlrun process {holder.pid}"


# processes holding a lock for a case; the runner stops them once the case is done
LIVE_HOLDERS: list = []


def overflowing_features(folder, run):
    # finite numbers whose products overflow float32: the loss becomes inf in the first step
    path = csv_with(folder, ["x,3e38,3e38,3e38"] * 3 + ["y,0.1,0.1,0.1"] * 3)
    return [
        "dataset=csv",
        f"dataset.path={path}",
        "dataset.standardize=false",
        "trainer.batch_size=64",
        *ONE_EPOCH,
    ], "step 1 (epoch 1, batch 1 of 1)"


CASES = [
    # config: checked before any data is read, without torch
    Case("unknown key", config_case(["trainer.epochz=3"], "epochz"), 2),
    Case("unknown option", config_case(["model=transformer"], "lenet"), 2),
    Case("unknown group", config_case(["modle=mlp"], "modle"), 2),
    Case("misspelt key added with +", config_case(["+trainer.epochz=3"], "did you mean epochs?"), 2),
    Case("wrong type", config_case(["trainer.epochs=many"], "trainer.epochs"), 2),
    Case("bad override syntax", config_case(["trainer.epochs=[1,"], "trainer.epochs"), 2),
    Case("lr <= 0", config_case(["optimizer.lr=0"], "optimizer.lr"), 2),
    Case("batch_size < 1", config_case(["trainer.batch_size=0"], "trainer.batch_size"), 2),
    Case("epochs < 1", config_case(["trainer.epochs=0"], "trainer.epochs"), 2),
    Case(
        "negative workers",
        config_case(
            ["dataset=imagefolder", "dataset.root=x", "dataset.num_workers=-1"], "dataset.num_workers"
        ),
        2,
    ),
    Case("not a device", config_case(["trainer.device=tpu"], "trainer.device"), 2),
    Case(
        "a GPU that is not there",
        config_case(["trainer.device=cuda:7", *ONE_EPOCH], "trainer.device=cuda:7"),
        2,
    ),
    Case(
        "fractions leave no training data",
        config_case(["dataset.val_fraction=0.5", "dataset.test_fraction=0.5"], "dataset.val_fraction"),
        2,
    ),
    Case("required path unset", config_case(["dataset=csv"], "dataset.path"), 2),
    Case("required root unset", config_case(["dataset=imagefolder"], "dataset.root"), 2),
    Case("unknown policy", config_case(["trainer.on_nonfinite=ignore"], "stop, skip"), 2),
    Case("momentum >= 1", config_case(["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum"), 2),
    Case(
        "a misspelt option after the overrides",
        config_case(
            ["trainer.epochs=1", "--multrun"], "--multrun: dlrun has no such option; did you mean --multirun"
        ),
        2,
    ),
    Case("a setting typed as an option", config_case(["--trainer.epochs=3"], "write trainer.epochs=3"), 2),
    Case(
        "an option value not among its choices",
        config_case(["--cfg", "everything"], "argument --cfg/-c: invalid choice: 'everything'"),
        2,
    ),
    Case(
        "a resolver without its argument",
        config_case(["hydra.run.dir=runs/${now:}"], "the resolver now needs its argument ('pattern')"),
        2,
    ),
    Case(
        "a resolver that does not exist",
        config_case(["hydra.run.dir=runs/${nwo:%H}"], "no resolver named 'nwo'"),
        2,
    ),
    Case("betas outside [0, 1)", config_case(["optimizer.betas=[0.9,1.2]"], "optimizer.betas"), 2),
    # data
    Case(
        "no MNIST files offline",
        lambda folder, run: (
            ["dataset=mnist", f"dataset.root={folder}", "dataset.download=false", *ONE_EPOCH],
            str(folder / "MNIST" / "raw"),
        ),
    ),
    Case(
        "no names folder",
        lambda folder, run: (
            ["experiment=names_char_rnn", f"dataset.root={folder}", *ONE_EPOCH],
            str(folder / "names"),
        ),
    ),
    Case(
        "no train/ in an image folder",
        lambda folder, run: ([f"dataset.root={folder}", *IMAGE_ARGS], str(folder)),
    ),
    Case(
        "CSV file missing",
        lambda folder, run: (
            ["dataset=csv", f"dataset.path={folder / 'nope.csv'}", *ONE_EPOCH],
            str(folder / "nope.csv"),
        ),
    ),
    Case("CSV empty", csv_empty),
    Case("CSV ragged row", csv_case(["z,0.7,0.8"], "{path}:4:")),
    Case("CSV word among numbers", csv_case(["z,0.7,high,0.9"], "{path}:4:3")),
    Case("CSV NaN cell", csv_case(["z,0.7,0.8,nan"], "{path}:4:4")),
    Case("CSV inf cell", csv_case(["z,inf,0.8,0.9"], "{path}:4:2")),
    Case("CSV empty label", csv_case([",0.7,0.8,0.9"], "{path}:4:1")),
    Case(
        "CSV label column missing",
        lambda folder, run: (
            [
                "dataset=csv",
                f"dataset.path={csv_with(folder, [])}",
                "dataset.label_column=quality",
                *ONE_EPOCH,
            ],
            "quality",
        ),
    ),
    Case("CSV not UTF-8", csv_not_utf8),
    Case("names file not UTF-8", names_not_utf8),
    Case("image folder with an empty class", image_case(empty_class)),
    Case("image that does not decode", image_case(broken_image)),
    Case("image folder without classes", image_case(no_classes)),
    Case("labels out of range", mnist_labels_out_of_range),
    # numerics
    Case("loss becomes inf", overflowing_features),
    # runs and checkpoints: nothing already written may change
    Case("rerun into a finished run", rerun_into_a_finished_run, 2),
    Case("resume with another model", resume_with_another_model),
    Case("resume from a damaged checkpoint", resume_from_a_damaged_checkpoint),
    Case("eval a missing checkpoint", eval_a_missing_checkpoint, 1, "dlrun-eval"),
    Case("eval a poisoned checkpoint", eval_a_poisoned_checkpoint, 1, "dlrun-eval"),
    Case("predict from a poisoned checkpoint", predict_from_a_poisoned_checkpoint, 1, "dlrun-predict"),
    Case("resume a poisoned checkpoint", resume_a_poisoned_checkpoint),
    Case("force a longer onecycle run", force_a_longer_onecycle),
    Case("resume while the run is live", resume_while_the_run_is_live),
    Case("predict a missing image", predict_a_missing_image, 1, "dlrun-predict"),
    Case(
        "predict digits with a names model",
        predict_case(names_model, "inputs=[12345]", "'12345' has no character this model was trained on"),
        2,
        "dlrun-predict",
    ),
    Case(
        "predict a row of numbers with a names model",
        predict_case(names_model, "inputs=[[1,2,3]]", "[1, 2, 3] is not a name"),
        2,
        "dlrun-predict",
    ),
    Case(
        "predict a name with a digit in it",
        predict_case(
            names_model, "inputs=[Jones3]", "'Jones3' has characters the model never saw in training (3)"
        ),
        0,
        "dlrun-predict",
    ),
    Case(
        "predict a name with a table model",
        predict_case(table_model, "inputs=[Jones]", "'Jones' is not a row of numbers"),
        2,
        "dlrun-predict",
    ),
    Case(
        "predict a name with an image model",
        predict_case(image_model, "inputs=[Jones]", "'Jones' is not an image file"),
        2,
        "dlrun-predict",
    ),
    Case("predict a decompression bomb", predict_a_decompression_bomb, 1, "dlrun-predict"),
    Case("a config file that is not YAML", a_config_file_that_is_not_yaml, 2),
    Case("resume from a folder named last.pt", resume_from_a_folder_named_last_pt),
    Case("a CSV separated by semicolons", a_csv_separated_by_semicolons),
    Case("a table of one class", a_table_of_one_class),
    Case("a label of a different value in every row", a_label_of_a_different_value_in_every_row),
    Case(
        "compile without a C++ compiler",
        config_case(["trainer.compile=true", *ONE_EPOCH], "needs a working C++ compiler"),
        environment={"CXX": "/nonexistent/g++"},
    ),
    Case("a label column of prices", a_label_column_of_prices, 0),
    Case("a class folder linked to nothing", image_case(class_folder_linked_to_nothing), 0),
    Case("images beside the class folders", image_case(images_beside_the_class_folders), 0),
]


def said_clearly(case: Case, code: int, out: str, err: str, names: str) -> bool:
    """A refusal: the case's exit code and one `<program>: error:` line naming `names`. A suspect
    input: exit 0 and a `warning:` naming it (a long warning may be folded by the terminal). Never
    a traceback."""
    if TRACEBACK in out + err or code != case.code:
        return False
    if case.code == 0:
        said = " ".join((out + err).split())
        return said.find(names) > said.find("warning: ") >= 0
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith(f"{case.program}: error: ") and names in lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def changed_files(before: dict[str, str], folder: Path, logs: dict[str, bytes]) -> list[str]:
    """Files of `before` that are gone or different now; a log (in `logs`, its old bytes) may
    only have grown: what it said before must still be there."""
    changed = []
    for name, digest in before.items():
        path = folder / name
        if not path.is_file():
            changed.append(name)
        elif name in logs:
            if not path.read_bytes().startswith(logs[name]):
                changed.append(name)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            changed.append(name)
    return changed


def log_contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*.log")}
