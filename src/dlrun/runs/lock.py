"""Who writes a run folder: a fresh one is claimed atomically; one that holds a run is never
written into again unless that run is being resumed; and one process writes a folder at a time.

The one writer holds a lock on the folder from before anything is written there until it exits:
`flock` on `<folder>/.dlrun.lock`, which names the holder (process, host, start, command). The
kernel (or the shared filesystem's lock manager) releases the lock when the holder dies however
it dies, so a lock left by a killed process is found free and taken over, with a warning naming
it. Torch-free: the checks run before Hydra writes its files.
"""

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from dlrun.errors import ConfigError, DlrunError
from dlrun.runs.commands import pasteable
from dlrun.runs.folder import LOCK, RunFolder

log = logging.getLogger("dlrun")


class FolderInUse(DlrunError):
    """Another live process writes the run folder."""


# the folders this process holds: folder -> the open lock file (closing it releases the lock)
_held: dict[Path, int] = {}
_owner = os.getpid()  # a forked child inherits _held but is not its owner


def lock_folder(folder: Path) -> bool:
    """Make this process the one writer of `folder`; True if it was not already. A folder another
    live process holds is refused, naming that process."""
    folder = Path(folder).expanduser().resolve()
    if _owner == os.getpid() and folder in _held:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(descriptor)
        os.close(descriptor)
        raise FolderInUse(
            f"{folder} is being written by {_describe(holder)}; wait for it to finish or stop it "
            "(a second writer would overwrite its checkpoints), or choose another folder"
        ) from None
    previous = _read(descriptor)
    if previous:  # its holder died without releasing it (killed, out of memory, node lost)
        log.warning("took over %s from %s, which is no longer running", folder, _describe(previous))
        print(
            f"warning: took over {folder} from {_describe(previous)}, which is no longer running",
            file=sys.stderr,
        )
    _write(
        descriptor,
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        },
    )
    _held[folder] = descriptor
    return True


def release_lock(folder: Path) -> None:
    descriptor = _held.pop(Path(folder).expanduser().resolve(), None)
    if descriptor is not None:
        os.ftruncate(descriptor, 0)  # empty: released in order, nothing to take over
        fcntl.flock(descriptor, fcntl.LOCK_UN)  # also for the copies forked workers still hold
        os.close(descriptor)


def release_locks() -> None:
    """Release every folder this process holds (a forked child only lets go of its copies)."""
    if _owner != os.getpid():
        for descriptor in _held.values():
            os.close(descriptor)  # the parent's lock stays, held by the parent
        _held.clear()
        return
    for folder in list(_held):
        release_lock(folder)


def forget_inherited_locks() -> None:
    """In a forked child: the parent's folders are the parent's (closing our copies keeps them
    locked by the parent), and this process starts with none."""
    global _owner
    for descriptor in _held.values():
        os.close(descriptor)
    _held.clear()
    _owner = os.getpid()


def _read(descriptor: int) -> dict:
    os.lseek(descriptor, 0, os.SEEK_SET)
    raw = os.read(descriptor, 4096)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?", "command": raw[:80].decode(errors="replace")}


def _write(descriptor: int, holder: dict) -> None:
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, json.dumps(holder).encode())


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"dlrun process {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"


def claim(path: str) -> str:
    """`path`, or `path_2`, `path_3`, ...: the first that did not exist, created here and now, so
    that two runs started at the same moment never share a folder."""
    candidate, number = Path(path), 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = Path(f"{path}_{number}")

def check_free(args: list[str]) -> None:
    """An explicit hydra.run.dir / hydra.sweep.dir: refused when it already holds a run (resuming,
    trainer.resume, is the one way back into a run) or when another process writes it, and
    locked, all before Hydra writes its .hydra/ files there."""
    given = _overrides(args)
    # under torchrun, rank 0 is the one writer of the shared folder; the other ranks write scratch
    lock = lock_folder if os.environ.get("RANK", "0") == "0" else lambda folder: False
    resuming = given.get("trainer.resume") not in (None, "null")
    if "hydra.run.dir" in given and "${" not in given["hydra.run.dir"]:
        folder = Path(given["hydra.run.dir"]).expanduser()
        found = RunFolder(folder).trained()
        if found and not resuming:
            raise ConfigError(
                f"hydra.run.dir={folder} already holds a run ({found}); resume it with "
                f"{pasteable('trainer.resume', RunFolder(folder).last)}, or choose a new hydra.run.dir"
            )
        lock(folder)
    if "hydra.sweep.dir" in given and "${" not in given["hydra.sweep.dir"]:
        folder = Path(given["hydra.sweep.dir"]).expanduser()
        if (folder / "multirun.yaml").is_file() and given.get("trainer.resume") != "auto":
            raise ConfigError(
                f"hydra.sweep.dir={folder} already holds a sweep (multirun.yaml); choose a new "
                "hydra.sweep.dir, or add trainer.resume=auto to finish its unfinished jobs"
            )
        lock(folder)


def _overrides(args: list[str]) -> dict[str, str]:
    """{key: value as typed} of plain key=value command-line overrides."""
    given = {}
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and not arg.startswith("-"):
            given[key] = value.strip("'\"")
    return given
