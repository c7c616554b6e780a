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
from importlib.util import find_spec
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
        """Make its modules importable (first on sys.path, so they win over installed ones). A
        module named like an installed package would hide that package from dlrun and the
        user's own code alike: it is refused, named."""
        for name in sorted(self.modules()):
            installed = _hidden_package(self.source, name)
            if installed:
                own = self.source / f"{name}.py"
                own = own if own.is_file() else self.source / name
                raise ConfigError(
                    f"{own} has the name of the installed package {name} ({installed}), which it "
                    "would hide from dlrun and from your code: rename it"
                )
        importable(self.source)

    def options(self) -> dict[str, set[str]]:
        """The options its configs/ folder gives each group: {"model": {"tiny", ...}}."""
        if not self.configs.is_dir():
            return {}
        found: dict[str, set[str]] = {}
        for path in self.configs.glob("*/*.yaml"):
            found.setdefault(path.parent.name, set()).add(path.stem)
        return found


def _hidden_package(source: Path, name: str) -> str:
    """Where an installed package named like the project's module `name` lives; "" when there
    is none, or it is the project itself, installed."""
    spec = find_spec(name) if name.isidentifier() else None
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or "-packages" not in str(origin):
        return ""
    mine = source / f"{name}.py" if (source / f"{name}.py").is_file() else source / name / "__init__.py"
    if mine.name == origin.name and mine.is_file() and mine.read_bytes() == origin.read_bytes():
        return ""
    return str(origin.parent)


# the folders dlrun made importable in this process: a checkpoint records them, so that
# dlrun-eval and dlrun-predict find the code its run imported from another folder too
CODE_FOLDERS: list[str] = []


def code_folders() -> list[str]:
    return list(CODE_FOLDERS)


def importable(folder: Path, first: bool = True) -> None:
    """Let this process and those it starts (parallel sweep workers) import `folder`'s modules:
    before the installed packages (`first`, as `python app.py` does for its folder), or after."""
    path = str(folder.resolve())
    if path not in sys.path:
        sys.path.insert(0, path) if first else sys.path.append(path)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([path, *paths] if first else [*paths, path])
    if path not in CODE_FOLDERS:
        CODE_FOLDERS.append(path)


def config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """(the --config-dir / -cd folders, the other arguments)."""
    folders, rest, iterator = [], [], iter(args)
    for arg in iterator:
        if arg.startswith(("--config-dir=", "-cd=")):
            folders.append(arg.split("=", 1)[1])
        elif arg in ("--config-dir", "-cd"):
            folders.append(next(iterator, ""))
        else:
            rest.append(arg)
    return [str(Path(folder).expanduser().resolve()) for folder in folders if folder], rest


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
