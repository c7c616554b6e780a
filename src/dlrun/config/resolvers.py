"""OmegaConf resolvers used by the config tree (registered before Hydra composes)."""

import os
import sys
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from dlrun import metrics
from dlrun.config.schema import BOOKKEEPING, OPTIONS, schema_of
from dlrun.runs.commands import folder_name
from dlrun.runs.folder import RECORD, RunFolder, of_checkpoint
from dlrun.runs.lock import claim, lock_folder


def run_dir(resume: str | None, fresh: str) -> str:
    """The run folder, locked for this process (see runs/lock.py): the resumed run's own folder,
    else a fresh one, claimed."""
    if resume in (None, "auto"):  # auto: resume what is in the folder; a fresh one holds nothing
        folder = claim(fresh)
    elif resume == "last":
        folder = os.getcwd()  # `trainer.resume=last` is typed inside a run folder
    else:
        folder = str(of_checkpoint(resume))
    lock_folder(Path(folder))
    return folder


def record_dir(resume: str | None, output_dir: str, stamp: str) -> str:
    """Where Hydra records the composed config: .hydra, or, when the folder already holds a
    record (a resume), a folder of its own inside it, so that resuming (or failing to) leaves
    the original record as it was."""
    if resume is None or not RunFolder(output_dir).hydra_record.is_file():
        return RECORD
    return f"{RECORD}/resumed-{stamp}"


def package_file(name: str) -> str:
    """Absolute path of a file shipped inside the dlrun package (the embedded wine CSV)."""
    return str(resources.files("dlrun") / name)


def short_overrides(override_dirname: str, limit: int = 60) -> str:
    """`optimizer.lr=0.01,model=mlp` -> `lr-0.01_model-mlp`: a readable sweep job folder name with
    nothing a shell or Hydra reads specially, leaving out bookkeeping settings (device, data
    location, ...), and cut only between whole settings (`_+2`: two more not shown). The swept
    settings come first, so the names (and TensorBoard's trial IDs, cut to a few characters)
    differ where the jobs differ."""
    items = [item for item in _split_top_level(override_dirname) if not _key(item).startswith(BOOKKEEPING)]
    swept = _swept_keys(sys.argv[1:])
    items.sort(key=lambda item: _key(item) not in swept)  # stable: Hydra's order otherwise
    parts = [_part(item) for item in items]
    name = ""
    for index, part in enumerate(parts):
        candidate = f"{name}_{part}" if name else part
        if len(candidate) > limit and name:
            return f"{name}_+{len(parts) - index}"
        name = candidate
    return name or "default"


def _swept_keys(arguments: list[str]) -> set[str]:
    """The settings a sweep command gives several values (`model=mlp,cnn`, `lr=range(1,3)`). Read
    from the command line, as each job's own overrides hold one value; where this process did not
    get the command (a SLURM job) there are none, and names keep Hydra's order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, keys = OverridesParser.create(), set()
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue  # -m, --config-dir=...
        try:
            override = parser.parse_override(argument)
        except HydraException:
            continue  # Hydra itself says what is wrong with it
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def _split_top_level(text: str) -> list[str]:
    # commas inside [..] belong to a list value, not between overrides
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "(": 1, "{": 1, "]": -1, ")": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in items + [current] if item]


def _key(item: str) -> str:
    return item.partition("=")[0].lstrip("+~")


def _part(item: str) -> str:
    """`optimizer.lr=0.01` -> `lr-0.01`, `model.hidden_sizes=[64,32]` -> `hidden_sizes-64-32`."""
    key, _, value = item.partition("=")
    return f"{folder_name(key.rsplit('.', 1)[-1].rsplit('/', 1)[-1])}-{folder_name(_short_number(value))}"


def rounded(override: str) -> str:
    """`optimizer.lr=0.000846800857524` -> `optimizer.lr=0.0008468`: an override as shown on the
    terminal (an Optuna trial's floats carry 16 digits; the run's config.yaml keeps them all)."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{_short_number(value)}" if sep else override


def _short_number(value: str) -> str:
    # an Optuna trial's lr=0.000846800857524 becomes lr=0.0008468
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("-").isdigit() else f"{number:.4g}"


def direction(metric: str, model_target: str = "") -> str:
    """What a sweeper does with `metric`: maximize accuracy, minimize losses and errors. For
    `auto` (the monitored metric), the task of dlrun's model named by `model_target` decides."""
    task = next(
        (
            getattr(schema_of(node), "task", metrics.CLASSIFICATION)
            for node in OPTIONS["model"].values()
            if schema_of(node)._target_ == model_target
        ),
        metrics.CLASSIFICATION,
    )
    return (
        "maximize"
        if metrics.better_of(metrics.monitored(metric, getattr(task, "value", task))) == "max"
        else "minimize"
    )


def register_resolvers() -> None:
    for name, function in {
        "dlrun.run_dir": run_dir,
        "dlrun.fresh_dir": claim,
        "dlrun.record_dir": record_dir,
        "dlrun.package_file": package_file,
        "dlrun.short": short_overrides,
        "dlrun.direction": direction,
    }.items():
        if not OmegaConf.has_resolver(name):
            # cached: a folder is claimed once per composed config, however often Hydra reads it
            OmegaConf.register_new_resolver(name, function, use_cache=True)
