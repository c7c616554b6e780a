"""Run folders: a fresh one is claimed atomically, and one that holds a run is never written
into again unless that run is being resumed. Torch-free: the check runs before Hydra writes."""

from pathlib import Path
from typing import Optional

from dlrun.errors import ConfigError


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
    """Refuse an explicit hydra.run.dir / hydra.sweep.dir that already holds a run, before Hydra
    writes its .hydra/ files there; resuming (trainer.resume) is the one way back into a run."""
    given = _overrides(args)
    if "hydra.run.dir" in given and given.get("trainer.resume") in (None, "null"):
        folder = Path(given["hydra.run.dir"]).expanduser()
        found = _run_record(folder)
        if found:
            raise ConfigError(
                f"hydra.run.dir={folder} already holds a run ({found}); resume it with "
                f"trainer.resume={folder / 'checkpoints' / 'last.pt'}, or choose a new hydra.run.dir"
            )
    if (
        "hydra.sweep.dir" in given
        and (Path(given["hydra.sweep.dir"]).expanduser() / "multirun.yaml").is_file()
    ):
        raise ConfigError(
            f"hydra.sweep.dir={given['hydra.sweep.dir']} already holds a sweep (multirun.yaml); "
            "choose a new hydra.sweep.dir"
        )


def _run_record(folder: Path) -> Optional[str]:
    """What shows that `folder` holds a run that trained: its results or a checkpoint."""
    if (folder / "metrics.json").is_file():
        return "metrics.json"
    checkpoints = sorted((folder / "checkpoints").glob("*.pt")) if (folder / "checkpoints").is_dir() else []
    return f"checkpoints/{checkpoints[0].name}" if checkpoints else None


def _overrides(args: list[str]) -> dict[str, str]:
    """{key: value as typed} of plain key=value command-line overrides."""
    given = {}
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and not arg.startswith("-"):
            given[key] = value.strip("'\"")
    return given
