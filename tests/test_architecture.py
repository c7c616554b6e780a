"""The layers only look down. Imports are read with `ast` (nothing is imported), so an upward
import fails here even inside a function that no other test calls.

    config          <- nothing of dlrun's; never torch (help and config errors stay fast)
    data, models    <- config
    reporting       <- config, data            (given plain values: it never reads the engine)
    checkpoints     <- config, data
    engine          <- all of the above
    commands        <- all of the above
    cli             <- config at import time; the rest only inside its functions
"""

import ast
import shutil
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dlrun"
PACKAGES = ("config", "data", "models", "reporting", "checkpoints", "engine", "commands")
BELOW = {
    "config": set(),
    "data": {"config"},
    "models": {"config"},
    "reporting": {"config", "data"},
    "checkpoints": {"config", "data"},
    "engine": {"config", "data", "models", "reporting", "checkpoints"},
    "commands": {"config", "data", "models", "reporting", "checkpoints", "engine"},
}
NEVER = {"config": {"torch", "torchvision"}}  # third-party modules a package must not import


def imported(path: Path, module_level_only: bool = False) -> list[str]:
    """Dotted names of the modules a file imports (`from dlrun import engine` gives dlrun.engine)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [
                f"{node.module}.{alias.name}" if node.module == "dlrun" else node.module
                for alias in node.names
            ]
    return names


def layer_of(name: str) -> str | None:
    """The dlrun package a dotted module name belongs to; None for top-level modules (errors, ...)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "dlrun" and len(parts) > 1 and parts[1] in PACKAGES else None


def upward_imports(src: Path) -> list[str]:
    """'file: name' for every import that reaches a layer its package may not look at."""
    found = []
    for package in PACKAGES:
        for path in sorted((src / package).rglob("*.py")):
            for name in imported(path):
                target = layer_of(name)
                top = name.split(".")[0]
                if (target not in (None, package) and target not in BELOW[package]) or top in NEVER.get(
                    package, ()
                ):
                    found.append(f"{path.relative_to(src)}: {name}")
    cli_at_import = [
        name
        for name in imported(src / "cli.py", module_level_only=True)
        if layer_of(name) not in (None, "config") or name.split(".")[0] in ("torch", "torchvision")
    ]
    found += [f"cli.py: {name}" for name in cli_at_import]
    return found


def test_no_layer_imports_upward():
    assert upward_imports(SRC) == []


def test_every_package_is_placed_in_a_layer():
    packages = {path.parent.name for path in SRC.glob("*/__init__.py")}
    assert packages == set(PACKAGES)


def test_a_planted_upward_import_is_caught(tmp_path):
    """The check above can fail: each kind of upward import planted in a copy of the tree is found."""
    planted = {
        "config/catalog.py": "from dlrun.engine.fit import fit",
        "config/checks.py": "import torch",
        "data/split.py": "from dlrun import checkpoints",
        "models/mlp.py": "import dlrun.reporting.terminal",
        "reporting/terminal.py": "from dlrun.engine.state import Session",
        "cli.py": "from dlrun.engine.experiment import run_experiment",
    }
    for file, line in planted.items():
        copy = tmp_path / file.replace("/", "_")
        shutil.copytree(SRC, copy)
        target = copy / file
        # inside a function for some of them: lazy imports count too (except in cli.py)
        body = f"\n{line}\n" if file == "cli.py" else f"\n\ndef planted():\n    {line}\n"
        target.write_text(target.read_text() + body)
        assert upward_imports(copy) == [
            f"{file}: {line.split()[-1] if line.startswith('import') else _name(line)}"
        ], file


def _name(line: str) -> str:
    module, name = line.split()[1], line.split()[3]
    return f"{module}.{name}" if module == "dlrun" else module
