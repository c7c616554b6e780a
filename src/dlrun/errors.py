"""Errors a user can fix, and how any error becomes the one line they read."""

import errno
import re

# a write the machine refused: full disk, over quota, read-only, over the file size limit
DISK_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


class DlrunError(Exception):
    """A problem with the user's input: reported as one line (what, where, how to fix)."""


class ConfigError(DlrunError):
    """A config value or combination that cannot work."""


class DataError(DlrunError):
    """Missing, unreadable or malformed data."""


class CheckpointError(DlrunError):
    """A checkpoint that is missing, damaged, unsafe or does not fit the run."""


class UserCodeError(DlrunError):
    """The user's own code (a module named by `_target_`) failed while dlrun imported or called it:
    one line says what and where, and `details` keeps the user's traceback, which is what they
    need to fix it."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


# Hydra's composition messages are several lines; these parts only repeat what the rest says.
_NOISE = (
    re.compile(r"^Config search path:"),
    re.compile(r"^provider="),
    re.compile(r"^(object|reference)_type="),
    re.compile(r"^Set the environment variable HYDRA_FULL_ERROR"),
)


def one_line(error: BaseException) -> str:
    """Fold an error (and the OmegaConf cause Hydra wraps) into a single readable line."""
    parts = [str(error)]
    override = getattr(error, "override", None)  # Hydra's OverrideParseException
    if override and override not in parts[0]:
        parts[0] = f"cannot parse the override {override!r}: {parts[0]}{_quoted_form(override)}"
    cause = error.__cause__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    lines = []
    for line in "\n".join(parts).splitlines():
        line = line.strip()
        if line and not any(pattern.match(line) for pattern in _NOISE):
            lines.append(line)
    return _join(lines) or type(error).__name__


def _quoted_form(override: str) -> str:
    """For a value that Hydra reads only when quoted (a path with `=`, `,`, spaces, brackets...):
    the override as it parses, ready to paste."""
    from dlrun.config.paths import HYDRA_PLAIN, pasteable

    key, sep, value = override.partition("=")
    if not sep or not value or value[0] in "'\"[" or HYDRA_PLAIN.fullmatch(value):
        return ""
    return f" (if {value} is one value, quote it: {pasteable(key, value)})"


def _join(lines: list[str]) -> str:
    # "Available options in 'model':" is followed by one option per line: list them with commas
    text = ""
    for line in lines:
        if not text:
            text = line
        elif text.endswith(":"):
            text += " " + line
        elif _is_option(line) and _in_option_list(text):
            text += ", " + line
        else:
            text += "; " + line
    return text


def _is_option(line: str) -> bool:
    return re.fullmatch(r"[\w.\-/]+", line) is not None


def _in_option_list(text: str) -> bool:
    tail = text.rsplit(";", 1)[-1]
    return "options" in tail and ":" in tail
