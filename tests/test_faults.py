"""Faults of real machines, made real: a second process in the same run folder, a killed
DataLoader worker, a killed or preempted sweep job, stop signals at any moment, a disk that
fills up or turns read-only, special files and symlink cycles in an image folder. Every fault
ends in one line and a non-zero exit (or a warning, for files that are left out), with nothing
already written lost, and the command dlrun prints to carry on works when pasted back."""

import contextlib
import csv
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from dlrun.checkpoints.files import TEMP_MARK
from dlrun.quoting import HYDRA_PLAIN, pasteable
from tests import datasets

BIN = Path(sys.executable).parent
TRACEBACK = "Traceback (most recent call last)"
QUIET = "terminal.progress=off"


def start(args: list[str], cwd: Path, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dlrun"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)  # a hang fails the test here
    assert TRACEBACK not in out + err, err
    return process.returncode, out, err


def run(args: list[str], cwd: Path, timeout: float = 180) -> tuple[int, str, str]:
    return finish(start(args, cwd), timeout)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def holder(folder: Path) -> int:
    """The process that holds the run folder's lock, as its lock file names it."""
    text = (folder / ".dlrun.lock").read_text() if (folder / ".dlrun.lock").is_file() else ""
    return json.loads(text)["pid"] if text.strip() else 0


def error_line(err: str, program: str = "dlrun") -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), err
    return lines[0]


def loads(checkpoint: Path) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())
    return state


def no_temporaries(folder: Path) -> bool:
    return not list(folder.rglob(f"*{TEMP_MARK}*"))


def pasted(command: str) -> list[str]:
    """A command dlrun printed, as the shell splits it, run with this environment's dlrun."""
    words = shlex.split(command)
    assert words[0] == "dlrun"
    return words[1:]


# --- one writer per run folder -------------------------------------------------------------


def test_a_second_process_is_refused_while_the_run_trains(tmp_path):
    folder = tmp_path / "run"
    first = start(["trainer.epochs=3000", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    last = folder / "checkpoints" / "last.pt"
    wait_for(lambda: last.is_file() and holder(folder) == first.pid, first)
    record = {path.name: path.read_bytes() for path in (folder / ".hydra").iterdir()}
    writing = folder / "checkpoints" / f".last.pt{TEMP_MARK}being-written"
    writing.write_bytes(b"the live run's half-written checkpoint")

    code, _, err = run(["trainer.epochs=3000", f"hydra.run.dir={folder}", f"trainer.resume={last}"], tmp_path)
    assert code == 1
    assert f"{folder} is being written by dlrun process {first.pid}" in error_line(err)
    code, _, err = run(["trainer.epochs=3000", f"hydra.run.dir={folder}"], tmp_path)
    assert code == 2 and "already holds a run" in error_line(err)

    assert writing.is_file()  # the second process's start-up cleanup did not touch it
    assert {path.name: path.read_bytes() for path in (folder / ".hydra").iterdir()} == record
    first.send_signal(signal.SIGTERM)
    code, _, err = finish(first)
    assert code == 143 and "resume with: dlrun" in err
    loads(last)


def test_a_lock_left_by_a_killed_run_is_taken_over_and_auto_resumes_it(tmp_path):
    folder = tmp_path / "run"
    settings = ["trainer.epochs=80", QUIET, f"hydra.run.dir={folder}"]
    first = start(settings, tmp_path)
    wait_for(lambda: (folder / "checkpoints" / "last.pt").is_file(), first)
    first.send_signal(signal.SIGKILL)  # as the OOM killer would: no chance to clean up
    first.wait()
    assert holder(folder) == first.pid

    code, out, err = run([*settings, "trainer.resume=auto"], tmp_path)
    assert code == 0, err
    assert f"took over {folder} from dlrun process {first.pid}" in err
    assert "resumed from" in out and json.loads((folder / "metrics.json").read_text())["epochs"] == 80
    assert (folder / ".dlrun.lock").read_text() == ""  # released in order


# --- dying workers -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_a_killed_dataloader_worker_ends_in_one_line_with_the_resume_command(tmp_path, signum):
    root = datasets.write_image_folder(tmp_path / "images", per_class=6, size=16)
    folder = tmp_path / "run"
    process = start(
        [
            "dataset=imagefolder",
            f"dataset.root={root}",
            "model=cnn",
            "dataset.num_workers=2",
            "dataset.train_transforms=[]",
            "dataset.val_transforms=[]",
            "trainer.batch_size=2",
            "trainer.epochs=1000",
            QUIET,
            f"hydra.run.dir={folder}",
        ],
        tmp_path,
    )
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    wait_for(lambda: (folder / "checkpoints" / "last.pt").is_file() and children.read_text().split(), process)
    os.kill(int(children.read_text().split()[0]), signum)
    code, _, err = finish(process)
    line = error_line(err)
    assert code == 1 and "a data-loading process died" in line
    # torch words it by which of its checks saw the worker go first
    assert "killed by signal" in line or "exited unexpectedly" in line
    # SIGKILL is what the kernel's out-of-memory killer sends: memory is the guess unless torch
    # names another signal (it may only have seen the worker vanish: "exited unexpectedly")
    named_another = "killed by signal" in line and "Killed" not in line
    assert ("out of memory?" in line) == (not named_another)
    assert not named_another or signum == signal.SIGTERM
    assert f"{folder / 'checkpoints' / 'last.pt'} is intact" in line and line.endswith("trainer.resume=auto")
    loads(folder / "checkpoints" / "last.pt")
    assert no_temporaries(folder)


def sweep_rows(folder: Path) -> list[dict]:
    return list(csv.DictReader(open(folder / "sweep_summary.csv")))


def sweep_with_a_killed_job(tmp_path: Path, *launcher: str, epochs: str) -> tuple[int, str, str]:
    """A sweep whose job 1 (trainer.epochs=80) is killed with SIGKILL once it has a last.pt and
    job 0 (trainer.epochs=1) has finished."""
    process = start(
        ["-m", *launcher, f"trainer.epochs={epochs}", QUIET, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        tmp_path,
    )
    done, job = tmp_path / "sweep" / "0_epochs-1", tmp_path / "sweep" / "1_epochs-80"
    wait_for(
        lambda: (
            (done / "metrics.json").is_file() and (job / "checkpoints" / "last.pt").is_file() and holder(job)
        ),
        process,
    )
    os.kill(holder(job), signal.SIGKILL)  # as the OOM killer would
    return finish(process)


def test_a_killed_sweep_job_is_recorded_the_others_finish_and_auto_finishes_it(tmp_path):
    sweep, job = tmp_path / "sweep", tmp_path / "sweep" / "1_epochs-80"
    code, out, err = sweep_with_a_killed_job(tmp_path, "hydra/launcher=parallel", epochs="1,80,1")
    line = error_line(err)
    assert code == 1 and "1 of 3 sweep jobs failed (job 1;" in line
    assert "job 1 failed: job 1 was killed by SIGKILL" in out
    assert "resume it with: dlrun" in (job / "error.txt").read_text()
    assert [row["status"] for row in sweep_rows(sweep)] == ["ok", "failed", "ok"]

    command = line.split("run only those with: ", 1)[1]
    code, out, err = run(pasted(command), tmp_path)
    assert code == 0, err
    assert out.count("finished already") == 2 and "resumed from" in out
    assert [row["status"] for row in sweep_rows(sweep)] == ["ok", "ok", "ok"]
    assert json.loads((job / "metrics.json").read_text())["epochs"] == 80
    assert not (job / "error.txt").exists()


def test_a_preempted_sweep_stops_its_jobs_cleanly_and_the_printed_command_finishes_it(tmp_path):
    sweep = tmp_path / "sweep"
    process = start(
        ["-m", "hydra/launcher=parallel", "trainer.epochs=80,81", QUIET, f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )
    jobs = [sweep / "0_epochs-80", sweep / "1_epochs-81"]
    wait_for(lambda: all((job / "checkpoints" / "last.pt").is_file() for job in jobs), process)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends before it takes the node
    code, _, err = finish(process)
    assert code == 143 and err.strip().endswith("dlrun: stopped by SIGTERM")
    command = err.split("finish this sweep with: ", 1)[1].splitlines()[0]
    assert command.endswith("trainer.resume=auto")
    for job in jobs:
        loads(job / "checkpoints" / "last.pt")

    code, out, err = run(pasted(command), tmp_path)
    assert code == 0, err
    assert out.count("resumed from") == 2
    assert [row["status"] for row in sweep_rows(sweep)] == ["ok", "ok"]


def test_a_killed_joblib_worker_gets_one_line_pointing_to_the_parallel_launcher(tmp_path):
    code, _, err = sweep_with_a_killed_job(
        tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", epochs="1,80"
    )
    line = error_line(err)
    assert code == 1 and "a joblib worker process died" in line and "hydra/launcher=parallel" in line
    assert line.endswith("trainer.resume=auto")
    assert [row["status"] for row in sweep_rows(tmp_path / "sweep")] == ["ok", "failed"]


# --- signals -------------------------------------------------------------------------------

MOMENTS = random.Random(14).sample([0.05 * step for step in range(2, 60)], 4)  # start-up to training


@pytest.mark.parametrize("seconds", MOMENTS, ids=[f"{seconds:.2f}s" for seconds in MOMENTS])
def test_a_stop_signal_at_any_moment_ends_with_its_code_and_one_line(tmp_path, seconds):
    signum = signal.SIGINT if int(seconds * 20) % 2 else signal.SIGTERM
    folder = tmp_path / "run"
    process = start(["trainer.epochs=3000", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    time.sleep(seconds)
    process.send_signal(signum)
    code, _, err = finish(process)
    assert code == 128 + signum, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"dlrun: stopped by {signal.Signals(signum).name}"
    if (folder / "checkpoints" / "last.pt").is_file():
        loads(folder / "checkpoints" / "last.pt")
        assert lines[-2].startswith("resume with: dlrun")
    assert no_temporaries(tmp_path)
    assert holder(folder) == 0 if folder.is_dir() else True  # the lock is released


@pytest.mark.parametrize("after", [0.2, 0.27, 0.34, 0.41])
def test_ctrl_c_held_down_while_saving_and_shutting_down_never_prints_a_traceback(tmp_path, after):
    """A signal every 2 ms from mid-epoch until the process is gone: through the save, the last
    line, and Python's shutdown (where torch's atexit hooks used to take a KeyboardInterrupt). A
    signal that lands while the first is still unwinding ends the process, saying the line."""
    folder = tmp_path / "run"
    process = start(["trainer.epochs=3000", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    wait_for(lambda: (folder / "checkpoints" / "last.pt").is_file(), process)
    time.sleep(after)
    with contextlib.suppress(ProcessLookupError):
        while process.poll() is None:
            process.send_signal(signal.SIGINT)
            time.sleep(0.002)
    code, _, err = finish(process)
    assert "Exception ignored" not in err
    # 130 from dlrun; -2 where the signal lands after Python has given SIGINT back to the system
    assert code in (130, -signal.SIGINT), err
    assert [line for line in err.splitlines() if line.strip()][-1] == "dlrun: stopped by SIGINT"
    loads(folder / "checkpoints" / "last.pt")


# --- the machine's limits ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (the tests run as root in CI); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_with_the_path_the_intact_checkpoint_and_the_resume_command(tmp_path, small_disk):
    folder = small_disk / "run"
    process = start(["trainer.epochs=80", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    last = folder / "checkpoints" / "last.pt"
    wait_for(lambda: last.is_file(), process)
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    code, _, err = finish(process)
    assert code == 1, f"exit {code} with the disk full: {err}"
    line = error_line(err)
    assert "(No space left on device)" in line and f"{last} is intact: make room" in line
    loads(last)
    assert no_temporaries(folder)

    filler.unlink()
    code, out, err = run(pasted(line.split("resume with: ", 1)[1]), tmp_path)
    assert code == 0, err
    assert "resumed from" in out and (folder / "metrics.json").is_file()


def test_a_writer_threads_warning_never_lands_inside_the_error_line(monkeypatch):
    """Each line goes to stderr in one write: with print()'s separate newline, TensorBoard's writer
    thread hitting the full disk at the same moment printed `...devicedlrun: error: ...`."""
    import errno
    import threading

    from dlrun import cli
    from dlrun.errors import DataError

    writes = []

    class Stderr:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Stderr())
    full = OSError(errno.ENOSPC, "No space left on device")
    cli._thread_failed(threading.ExceptHookArgs((OSError, full, None, threading.current_thread())))
    with pytest.raises(SystemExit):
        cli._exit_with("dlrun", DataError("could not write run (No space left on device)"))
    assert writes == [
        "warning: MainThread: No space left on device\n",
        "dlrun: error: could not write run (No space left on device)\n",
    ]


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"), EOFError()])
def test_a_connection_a_dying_worker_dropped_is_logged_not_a_traceback(monkeypatch, caplog, error):
    """multiprocessing's resource sharer thread hands what it caught to sys.excepthook: a worker
    killed mid-message leaves an EOFError there (seen once in CI as a traceback above the line)."""
    import threading

    from dlrun import cli

    printed = []
    monkeypatch.setattr(sys, "__excepthook__", lambda *exc_info: printed.append(exc_info))
    thread = threading.Thread(target=lambda: cli._uncaught(type(error), error, None), name="resource-sharer")
    thread.start()
    thread.join()
    assert not printed and "resource-sharer" in caplog.text
    cli._uncaught(type(error), error, None)  # the main thread's own errors are not hidden
    assert len(printed) == 1


def test_resuming_into_a_read_only_folder_is_one_line_and_changes_nothing(tmp_path, small_disk):
    folder = small_disk / "run"
    process = start(["trainer.epochs=3000", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    last = folder / "checkpoints" / "last.pt"
    wait_for(lambda: last.is_file(), process)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    command = err.split("resume with: ", 1)[1].splitlines()[0]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}

    code, _, err = run(pasted(command), tmp_path)
    line = error_line(err)
    assert code == 1 and "Read-only file system" in line and str(folder) in line
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_a_file_size_limit_before_the_first_checkpoint_is_one_line(tmp_path):
    """RLIMIT_FSIZE (a quota, without root): the first checkpoint is already too big."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    process = start(["trainer.epochs=5", QUIET, "hydra.run.dir=run"], tmp_path, preexec_fn=limit)
    code, _, err = finish(process)
    line = error_line(err)
    assert code == 1 and "File too large" in line and "no checkpoint was written yet" in line


# --- files that are not what they claim ----------------------------------------------------


def one_epoch_on(root: Path, cwd: Path) -> tuple[int, str, str]:
    """A CNN's epoch on the image folder `root`, files read as they are, val carved from train/."""
    process = start(
        ["dataset=imagefolder", f"dataset.root={root}", "model=cnn", "dataset.num_workers=0"]
        + ["dataset.train_transforms=[]", "dataset.val_transforms=[]", "dataset.val_fraction=0.2"]
        + ["trainer.epochs=1", QUIET, "hydra.run.dir=run"],
        cwd,
    )
    return finish(process, timeout=120)


def test_special_files_and_symlink_cycles_are_left_out_and_every_image_counted_once(tmp_path):
    root = datasets.write_image_folder(tmp_path / "images", per_class=5, size=16, val=False)
    ants, bees = root / "train" / "ants", root / "train" / "bees"
    (ants / "again.png").symlink_to(sorted(ants.glob("*.png"))[0])  # a second name
    os.mkfifo(ants / "fifo.png")  # opening it would block forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(bees / "socket.jpg"))
    (ants / "bees").symlink_to(bees)  # a link between class folders
    (bees / "loop").symlink_to(bees)  # a cycle
    (bees / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    code, out, err = one_epoch_on(root, tmp_path)
    server.close()
    assert code == 0, err
    assert "data: 2 classes, inputs [3, 16, 16], 8 train / 2 val" in out  # 10 real images
    assert "left out 3 entr(ies) that are not regular files" in err
    assert "2 link(s) to a folder listed already" in err and "1 second name(s)" in err


def test_a_class_folder_linked_to_nothing_and_images_beside_the_classes_are_said(tmp_path):
    root = datasets.write_image_folder(tmp_path / "images", per_class=5, size=16, val=False)
    (root / "train" / "wasps").symlink_to(tmp_path / "unmounted" / "wasps")  # a disk not mounted
    os.replace(sorted((root / "train" / "ants").glob("*.png"))[0], root / "train" / "stray.png")
    code, out, err = one_epoch_on(root, tmp_path)
    assert code == 0, err
    assert "data: 2 classes" in out
    train = root / "train"
    assert (
        f"1 class folder(s) that are links to nothing, so not classes (first: {train / 'wasps'} -> "
        f"{tmp_path / 'unmounted' / 'wasps'})" in err
    )
    assert f"1 image(s) outside the class folders, which have no class (first: {train / 'stray.png'}" in err


# --- paths a user can paste back -----------------------------------------------------------

AWKWARD = [
    "/runs/0_lr=0.1,epochs=2/last.pt",
    "/my data/run 1",
    "/tmp/it's",
    "/ünï/cödé",
    "/a/[1]/b~c",
    "/x/$HOME",
]


@pytest.mark.parametrize("path", AWKWARD)
def test_a_printed_override_reads_back_as_the_same_path_in_a_shell_and_in_hydra(path):
    (typed,) = shlex.split(pasteable("trainer.resume", path))
    assert OverridesParser.create().parse_override(typed).value() == path


def test_what_hydra_reads_as_a_plain_string_is_left_unquoted():
    for text in ["/runs/2026-11-24/12-00-00_wine_mlp", "run_2", "a+b@host:/x%y", "./data/images"]:
        assert HYDRA_PLAIN.fullmatch(text)
        assert OverridesParser.create().parse_override(f"dataset.root={text}").value() == text


def test_a_run_folder_with_awkward_characters_is_typed_as_is_and_its_resume_command_pastes_back(tmp_path):
    folder = tmp_path / "my runs" / "lr=0.1,x (2)"
    process = start(["trainer.epochs=80", QUIET, f"hydra.run.dir={folder}"], tmp_path)
    wait_for(lambda: (folder / "checkpoints" / "last.pt").is_file(), process)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130
    command = err.split("resume with: ", 1)[1].splitlines()[0]
    done = subprocess.run(
        command,
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout and (folder / "metrics.json").is_file()
    shown, relative = " ".join(done.stdout.split()), shlex.quote(str(folder.relative_to(tmp_path)))
    assert f"run folder: {relative} tensorboard: tensorboard --logdir 'my runs'" in shown
    assert f"(this run only: tensorboard --logdir {relative})" in shown
