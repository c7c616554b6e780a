"""How a value is written so that a shell and Hydra read it back as it was.

Hydra's override grammar reads `a,b` as a sweep and refuses `~`, `=`, quotes, brackets and
non-ASCII letters in a value unless it is quoted; a shell splits words on spaces. Every override
dlrun prints with a path in it (a resume command, an error's fix) is quoted for Hydra and then for
the shell, and paths printed alone are quoted for the shell.
"""

import os
import re
import shlex
from pathlib import Path

# what Hydra reads as a plain string value (tested against its parser in tests/test_faults.py)
HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./+:@%-]+")


# where the user typed the command: paths are printed to be pasted there (hydra.job.chdir=true
# moves a job into its run folder; cli.py records Hydra's runtime.cwd here for each job)
typed_in = ""


def from_users_folder(path) -> Path:
    """`path` as it reads from the folder the user typed the command in: relative when inside it."""
    here, absolute = Path(typed_in or os.getcwd()).resolve(), Path(path).resolve()
    try:
        return absolute.relative_to(here)
    except ValueError:
        return absolute


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


def quoted_form(override: str) -> str:
    """For a value that Hydra reads only when quoted (a path with `=`, `,`, spaces, brackets...):
    the override as it parses, ready to paste; "" when quoting would not help."""
    key, sep, value = override.partition("=")
    if not sep or not value or value[0] in "'\"[" or HYDRA_PLAIN.fullmatch(value):
        return ""
    return f" (if {value} is one value, quote it: {pasteable(key, value)})"
