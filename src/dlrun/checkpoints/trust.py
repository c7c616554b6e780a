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

    def check(self, nodes: dict[str, Any], source: Path) -> None:
        """Refuse `source` (a checkpoint) if any `_target_` in `nodes` ({key: config}) is not allowed."""
        for key, target in targets(nodes):
            if not self.allows(target):
                top = target.split(".")[0]
                raise CheckpointError(
                    f"{source} names {key}={target}, code you have not allowed, so nothing was imported; "
                    f"if you trust it, run from its project folder, or add allow=[{top}]"
                )


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
