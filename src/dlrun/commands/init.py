"""`dlrun init DIR`: a small working project to start from (a model, a dataset, their configs, an
experiment preset), which trains at once on data it generates. Imports no torch."""

import shutil
from pathlib import Path

from dlrun.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parents[1] / "project_template"


def write_project(folder: str) -> list[Path]:
    """Copy the template into `folder` (new or empty); returns the files written."""
    target = Path(folder).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty; give dlrun init a new folder")
    shutil.copytree(TEMPLATE, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return sorted(path.relative_to(target) for path in target.rglob("*") if path.is_file())
