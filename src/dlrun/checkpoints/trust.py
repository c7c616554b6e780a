"""Which code dlrun may import because a checkpoint names it.

A checkpoint records the `_target_`s its run was built from, but a file can come from anyone.
dlrun-eval and dlrun-predict rebuild from a checkpoint only the code the user allows for that
call; anything else is refused in one line before anything is imported. Allowed are:

- dlrun's own modules, and torch's layers and losses and torchvision's transforms, datasets
  and models (which run no code of the file's choosing);
- the modules of the project folder the command runs in (see config/project.py), and the
  installed packages its `[tool.dlrun] allow` list names;
- modules an installed package declares under the `dlrun.plugins` entry point group;
- the modules named on the command line: `allow=[mypackage]`.

A resumed run never imports what its checkpoint names either: it is built from the config the
user composed for that call, and a checkpoint whose config differs is refused.
"""

from collections.abc import Iterator
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Optional

from dlrun.config.project import Project
from dlrun.errors import CheckpointError

BUILT_IN = ("dlrun", "torch.nn", "torchvision.transforms", "torchvision.datasets", "torchvision.models")
PLUGIN_GROUP = "dlrun.plugins"


class Trust:
    def __init__(self, project: Optional[Project] = None, allowed: tuple[str, ...] = ()):
        own = tuple(sorted(project.modules())) + project.allow if project is not None else ()
        self.prefixes = BUILT_IN + own + plugin_modules() + tuple(allowed)

    def allows(self, target: str) -> bool:
        return any(target == prefix or target.startswith(prefix + ".") for prefix in self.prefixes)

    def check(self, nodes: dict[str, Any], source: Path, code_folders: list[str] = ()) -> None:
        """Refuse `source` (a checkpoint) if any `_target_` in `nodes` ({key: config}) is not
        allowed, saying what would allow it from here. `code_folders`: where its run found code."""
        for key, target in targets(nodes):
            if not self.allows(target):
                top = target.split(".")[0]
                raise CheckpointError(
                    f"{source} names {key}={target}, code you have not allowed, so nothing was "
                    f"imported; if you trust it, {_how_to_allow(top, code_folders)}"
                )


def _how_to_allow(top: str, code_folders: list[str]) -> str:
    """What allows module `top` from the folder the user stands in."""
    folder = next((f for f in code_folders if _holds(Path(f), top)), None)
    if folder is not None:
        return f"add allow=[{top}] (its code was found in {folder}, which dlrun will look in)"
    spec = find_spec(top)
    if spec is not None and spec.origin and "site-packages" in spec.origin:
        return f"add allow=[{top}] (the installed package), or list it in [tool.dlrun] allow of your project"
    return f"run from its project folder, or add allow=[{top}]"


def _holds(folder: Path, module: str) -> bool:
    return (folder / f"{module}.py").is_file() or (folder / module / "__init__.py").is_file()


def plugin_modules() -> tuple[str, ...]:
    """Modules that installed packages declare as dlrun plugins (read without importing them)."""
    return tuple(entry.module for entry in entry_points(group=PLUGIN_GROUP))


def targets(tree: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, target) of every `_target_` in a config tree."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                yield path, str(value)
            else:
                yield from targets(value, path)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from targets(value, f"{key}[{index}]")
