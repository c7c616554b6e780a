"""The command lines dlrun reads and prints: path settings typed as they are, sweep job folder
names with nothing to quote, and the commands that resume a run or finish a sweep.

An override of a setting that holds a path (dataset.root, trainer.resume, ...) is quoted for
Hydra before Hydra reads it, so `dataset.root=~/photos` or a sweep job's folder works as typed.
"""

import re

from dlrun.quoting import HYDRA_PLAIN, hydra_value, pasteable, quote_override

HYDRA_PATHS = ("hydra.run.dir", "hydra.sweep.dir")


def quote_path_overrides(args: list[str], path_keys: tuple[str, ...]) -> list[str]:
    """Path settings (`path_keys`: the schema's, and Hydra's run and sweep folders) as users type
    them, quoted for Hydra; everything else as it was (in a sweep, a `,` in a path setting still
    separates the values swept over)."""
    path_keys = (*path_keys, *HYDRA_PATHS)
    sweep = any(arg in ("-m", "--multirun") for arg in args)
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        plain_key = key.lstrip("+~")
        needs = value and value[0] not in "'\"$" and not HYDRA_PLAIN.fullmatch(value)
        needs = needs and not (sweep and "," in value)
        quoted.append(f"{key}={hydra_value(value)}" if sep and plain_key in path_keys and needs else arg)
    return quoted


def folder_name(text: str) -> str:
    """A folder name with nothing a shell or Hydra would read specially: brackets and quotes
    around the text go, other such characters become `-` (a leading minus sign stays)."""
    text = re.sub(r"^[\[({'\"]+|[\])}'\"]+$", "", text)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text)


def run_resume_command(overrides, run_dir) -> str:
    """The command that resumes the run in `run_dir`: the settings it was started with, into its
    folder, with trainer.resume=auto (its last.pt if there is one, else from the start)."""
    replaced = ("trainer.resume=", "hydra.run.dir=")
    kept = [quote_override(arg) for arg in overrides if not arg.startswith(replaced)]
    return " ".join(["dlrun", *kept, pasteable("hydra.run.dir", run_dir), "trainer.resume=auto"])


def sweep_resume_command(hydra) -> str:
    """The command that finishes a sweep (Hydra's config node of it): the same settings, into the
    same sweep folder, with trainer.resume=auto (finished jobs are kept, stopped ones resume)."""
    settings = [
        arg
        for arg in [*hydra.overrides.hydra, *hydra.overrides.task]
        if not arg.startswith(("hydra.sweep.dir=", "hydra.mode=", "trainer.resume="))
    ]
    return " ".join(
        ["dlrun", "-m", *map(quote_override, settings), pasteable("hydra.sweep.dir", hydra.sweep.dir)]
        + ["trainer.resume=auto"]
    )
