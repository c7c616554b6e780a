"""The floor plan, checked on every module: layers only look down, code is imported by name only
in the build module, and the modules the command line needs before a run imports no torch.
Imports are read with `ast` (nothing is imported), so a violation fails here even inside a
function no other test calls.

    quoting, signals, machine, __init__   <- nothing of dlrun's
    errors                            <- quoting
    metrics                           <- errors                        (torch-free: config reads it)
    runs                              <- the above                     (torch-free)
    config                            <- the above                     (torch-free)
    data, models                      <- the above
    checkpoints, reporting            <- the above
    engine                            <- the above
    commands                          <- the above
    cli                               <- the above (config and below at import time; torch-free)
    __main__                          <- cli
    hydra_plugins                     <- runs, config and below        (torch-free: it forks jobs)
"""

import ast
import shutil
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [
    {"quoting", "signals", "machine", "__init__"},
    {"errors"},
    {"metrics"},
    {"runs"},
    {"config"},
    {"data", "models"},
    {"checkpoints", "reporting"},
    {"engine"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
PLUGINS = "hydra_plugins"  # may look at runs, config and below; imports no torch
BUILD = {"dlrun/engine/build.py", "dlrun/engine/targets.py"}  # targets: build's helper, imported by it alone
# imports no torch, even inside a function: what the config checks and --help run on
TORCH_FREE = {"quoting", "signals", "machine", "__init__", "errors", "metrics", "runs", "config", PLUGINS}
# imports no torch when imported (what runs before torch is needed); their functions may
TORCH_FREE_AT_IMPORT = TORCH_FREE | {
    "cli",
    "__main__",
    "checkpoints/trust",
    "checkpoints/__init__",
    "commands/init",
}
HEAVY = ("torch", "torchvision")
NAMED_IMPORTS = ("import_module", "__import__", "instantiate", "get_class", "get_method", "locate")


TEMPLATE = "dlrun/project_template"  # a user's project that `dlrun init` copies: not dlrun's code


def modules(src: Path) -> dict[str, Path]:
    """Every module: 'dlrun/engine/train.py' -> its path (hydra_plugins too)."""
    paths = sorted(src.rglob("*.py"))
    return {
        str(path.relative_to(src)): path
        for path in paths
        if not str(path.relative_to(src)).startswith(TEMPLATE)
    }


def unit_of(relative: str) -> str:
    """The layer unit of a module: its package ('engine'), or its own name ('errors')."""
    parts = Path(relative).with_suffix("").parts
    if parts[0] == PLUGINS:
        return PLUGINS
    return parts[1]


def level_of(unit: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if unit in layer)


def imports(path: Path, module_level_only: bool = False) -> list[tuple[str, str]]:
    """(dotted module, unit it belongs to or '') of every import in a file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"dlrun.{alias.name}" if node.module == "dlrun" else node.module for alias in node.names]
        found += [(name, _unit(name)) for name in names]
    return found


def _unit(dotted: str) -> str:
    parts = dotted.split(".")
    if parts[0] == "dlrun" and len(parts) > 1:
        return "__init__" if parts[1].startswith("__") else parts[1]  # dlrun.__version__
    # dlrun's own plugins; hydra_plugins.hydra_optuna_sweeper and the like are other packages
    return PLUGINS if parts[0] == PLUGINS and parts[1:2] and parts[1].startswith("dlrun_") else ""


def upward_imports(src: Path) -> list[str]:
    """'module: name' for every import that reaches a layer its module may not look at."""
    found = []
    for relative, path in modules(src).items():
        unit = unit_of(relative)
        for name, target in imports(path):
            if not target or target == unit:
                continue
            if unit == PLUGINS:
                allowed = target in ("runs", "config") or level_of(target) < level_of("runs")
            else:
                allowed = target != PLUGINS and level_of(target) < level_of(unit)
            if not allowed:
                found.append(f"{relative}: {name}")
    for relative in ("dlrun/cli.py",):  # at import time, the command line needs config and below
        for name, target in imports(modules(src)[relative], module_level_only=True):
            if target and level_of(target) > level_of("config"):
                found.append(f"{relative}: {name}")
    return found


def code_imported_by_name(src: Path) -> list[str]:
    """'module: call' for each import by name (import_module, instantiate, locate...) or
    'module:attribute' string outside the build module: the one path from a name to code."""
    found = []
    for relative, path in modules(src).items():
        if relative in BUILD:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if called in NAMED_IMPORTS:
                    found.append(f"{relative}: {called}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if ":" in text and " " not in text and text.split(":")[0].startswith("dlrun."):
                    found.append(f"{relative}: {text}")
    return found


def torch_importers(src: Path) -> list[str]:
    """Modules that must not import torch but do, or that import (at import time) a module of
    dlrun's that does."""
    all_modules = modules(src)
    at_import = {relative: _heavy_at_import(relative, all_modules, set()) for relative in all_modules}
    found = []
    for relative, path in all_modules.items():
        key = relative.removeprefix("dlrun/").removesuffix(".py")
        unit = unit_of(relative)
        if unit in TORCH_FREE and any(name.split(".")[0] in HEAVY for name, _ in imports(path)):
            found.append(f"{relative}: imports torch")
        elif (unit in TORCH_FREE_AT_IMPORT or key in TORCH_FREE_AT_IMPORT) and at_import[relative]:
            found.append(f"{relative}: imports torch when imported ({at_import[relative]})")
    return found


def torchvision_at_import(src: Path) -> list[str]:
    """Modules that import torchvision when imported. It costs a second (torch._dynamo, through its
    detection models) that a table or names model never needs: it is imported where images are."""
    return [
        f"{relative}: imports torchvision when imported"
        for relative, path in modules(src).items()
        if any(name.split(".")[0] == "torchvision" for name, _ in imports(path, module_level_only=True))
    ]


def _heavy_at_import(relative: str, all_modules: dict[str, Path], seen: set[str]) -> str:
    """How importing this module imports torch ('' if it does not): torch itself, or a module of
    dlrun's it imports at module level that does."""
    if relative in seen:
        return ""
    seen.add(relative)
    for name, _ in imports(all_modules[relative], module_level_only=True):
        if name.split(".")[0] in HEAVY:
            return name
        for candidate in (name.replace(".", "/") + ".py", name.replace(".", "/") + "/__init__.py"):
            if candidate in all_modules and _heavy_at_import(candidate, all_modules, seen):
                return name
    return ""


def test_no_module_imports_upward():
    assert upward_imports(SRC) == []


def test_every_module_is_placed_in_a_layer():
    units = {unit_of(relative) for relative in modules(SRC)}
    placed = set().union(*LAYERS) | {PLUGINS}
    assert units <= placed, units - placed


def test_code_is_imported_by_name_only_in_the_build_module():
    assert code_imported_by_name(SRC) == []


def test_the_torch_free_modules_import_no_torch():
    assert torch_importers(SRC) == []


def test_torchvision_is_imported_only_where_images_are():
    assert torchvision_at_import(SRC) == []


def test_targets_serves_the_build_module_alone():
    users = [
        relative
        for relative, path in modules(SRC).items()
        if ("dlrun.engine.targets", "engine") in imports(path)
    ]
    assert users == ["dlrun/engine/build.py"]


def test_each_rule_catches_a_planted_violation(tmp_path):
    """The checks above can fail: each kind of violation planted in a copy of the tree is found."""
    planted = {
        "dlrun/config/checks.py": (
            "from dlrun.engine.train import fit",
            upward_imports,
            "dlrun.engine.train",
        ),
        "dlrun/errors.py": ("from dlrun.runs.folder import RunFolder", upward_imports, "dlrun.runs.folder"),
        "dlrun/metrics.py": ("import dlrun.config.schema", upward_imports, "dlrun.config.schema"),
        "dlrun/reporting/terminal.py": (
            "from dlrun.engine.state import Parts",
            upward_imports,
            "dlrun.engine.state",
        ),
        "hydra_plugins/dlrun_launcher/process_launcher.py": (
            "from dlrun.engine import experiment",
            upward_imports,
            "dlrun.engine",
        ),
        "dlrun/cli.py": (
            "from dlrun.engine.experiment import run_experiment",
            upward_imports,
            "dlrun.engine.experiment",
        ),
        "dlrun/data/tabular.py": (
            "x = importlib.import_module('dlrun.models.mlp')",
            code_imported_by_name,
            "import_module",
        ),
        "dlrun/commands/predict.py": (
            "TARGET = 'dlrun.models.mlp:MLP'",
            code_imported_by_name,
            "dlrun.models.mlp:MLP",
        ),
        "dlrun/runs/folder.py": ("import torch", torch_importers, "imports torch"),
        "dlrun/signals.py": ("from dlrun.data import Data", torch_importers, "imports torch when imported"),
        "dlrun/data/names.py": (
            "from torchvision.transforms import v2",
            torchvision_at_import,
            "torchvision",
        ),
    }
    for file, (line, rule, named) in planted.items():
        copy = tmp_path / file.replace("/", "_")
        shutil.copytree(SRC, copy)
        target = copy / file
        # inside a function for most: lazy imports count too (not for cli.py's import-time rule)
        module_level = file in ("dlrun/cli.py", "dlrun/signals.py") or rule in (
            code_imported_by_name,
            torchvision_at_import,
        )
        body = f"\n{line}\n" if module_level else f"\n\ndef planted():\n    {line}\n"
        target.write_text(target.read_text() + body)
        found = rule(copy)
        planted_here = [entry for entry in found if entry.startswith(file) and named in entry]
        # a module that imports torch when imported takes the modules importing it along
        assert len(planted_here) == 1 and (len(found) == 1 or rule is torch_importers), (file, found)
