"""Paths a user can paste back, and type as they are.

Hydra's override grammar reads `a,b` as a sweep and refuses `~`, `=`, quotes, brackets and
non-ASCII letters in a value unless it is quoted; a shell splits words on spaces. So:

- every override dlrun prints with a path in it (a resume command, an error's fix) is quoted for
  Hydra and then for the shell (`pasteable`), and paths printed alone are quoted for the shell;
- an override of a setting that holds a path (dataset.root, trainer.resume, ...) is quoted for
  Hydra before Hydra reads it, so `dataset.root=~/photos` or a sweep job's folder works as typed.
"""

import re
import shlex

# what Hydra reads as a plain string value (tested against its parser in tests/test_faults.py)
HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./+:@%-]+")
PATH_KEYS = (
    "dataset.root",
    "dataset.path",
    "trainer.resume",
    "hydra.run.dir",
    "hydra.sweep.dir",
    "model.weights_path",
    "ckpt",
    "output",
)


def hydra_value(text: str) -> str:
    """`text` as Hydra reads it back as this string: plain, or single-quoted."""
    if HYDRA_PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pasteable(key: str, value) -> str:
    """`key=value` for a shell command line: quoted for Hydra, then for the shell."""
    text = f"{key}={hydra_value(str(value))}"
    if "'" in text and not re.search(r'[$`"\\!]', text):
        return f'"{text}"'  # reads better than shlex's '"'"' for Hydra's single quotes
    return shlex.quote(text)


def quote_override(arg: str) -> str:
    """An override as typed (Hydra's quoting kept), quoted for the shell."""
    return shlex.quote(arg)


def shell_path(path) -> str:
    """A path for a shell command line."""
    return shlex.quote(str(path))


def quote_path_overrides(args: list[str]) -> list[str]:
    """Path settings as users type them, quoted for Hydra; everything else as it was (in a sweep,
    a `,` in a path setting still separates the values swept over)."""
    sweep = any(arg in ("-m", "--multirun") for arg in args)
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        plain_key = key.lstrip("+~")
        needs = value and value[0] not in "'\"$" and not HYDRA_PLAIN.fullmatch(value)
        needs = needs and not (sweep and "," in value)
        quoted.append(f"{key}={hydra_value(value)}" if sep and plain_key in PATH_KEYS and needs else arg)
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
