"""A user's project folder: where dlrun finds their own configs and code.

A folder whose pyproject.toml has a `[tool.dlrun]` table is a project; dlrun looks for one in the
folder it starts in and in that folder's parents. Its `configs/` folder joins dlrun's config
search path (configs/model/tiny.yaml becomes `model=tiny`, next to dlrun's own options), and its
folder goes first on sys.path, so `_target_: nets.TinyNet` names the class in its nets.py.

    [tool.dlrun]
    configs = "configs"   # the project's config groups (default)
    source = "."          # the folder its modules live in (default: the project folder)
    allow = ["timm"]      # installed packages its checkpoints may name besides its own modules
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dlrun.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Project:
    root: Path
    configs: Path
    source: Path
    allow: tuple[str, ...] = ()

    def modules(self) -> set[str]:
        """The top-level modules its source folder holds (nets.py -> nets, a package folder)."""
        if not self.source.is_dir():
            return set()
        found = {path.stem for path in self.source.glob("*.py")}
        found |= {path.parent.name for path in self.source.glob("*/__init__.py")}
        return found

    def enter(self) -> None:
        """Make its modules importable (first on sys.path, so they win over installed ones), in
        this process and in the ones it starts (parallel sweep workers)."""
        if str(self.source) not in sys.path:
            sys.path.insert(0, str(self.source))
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(self.source) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(self.source), *filter(None, paths)])


def find_project(start: Optional[Path] = None) -> Optional[Project]:
    """The project holding `start` (default: the current folder), or None."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        settings = _settings(candidate / "pyproject.toml")
        if settings is not None:
            return _project(candidate, settings)
    return None


def _settings(pyproject: Path) -> Optional[dict]:
    if not pyproject.is_file():
        return None
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{pyproject} is not valid TOML ({error}); fix it or remove its [tool.dlrun] table"
        ) from None
    return table.get("tool", {}).get("dlrun")


def _project(root: Path, settings: dict) -> Project:
    known = {"configs", "source", "allow"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{root / 'pyproject.toml'}: [tool.dlrun] has no setting {unknown[0]!r}; "
            f"valid: {', '.join(sorted(known))}"
        )
    allow = settings.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(name, str) for name in allow):
        raise ConfigError(f"{root / 'pyproject.toml'}: [tool.dlrun] allow must be a list of module names")
    return Project(
        root=root,
        configs=(root / settings.get("configs", "configs")).resolve(),
        source=(root / settings.get("source", ".")).resolve(),
        allow=tuple(allow),
    )
