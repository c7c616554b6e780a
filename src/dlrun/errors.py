"""Errors a user can fix, and how any error becomes the one line they read."""

import errno
import re
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Optional

from dlrun.quoting import quoted_form

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


class WrongReturn(DlrunError):
    """The user's code returned what dlrun cannot use; the run's line puts the stage in front
    (engine/experiment.py, users_code)."""


# Hydra's composition messages are several lines; these parts only repeat what the rest says.
_NOISE = (
    re.compile(r"^Config search path:"),
    re.compile(r"^provider="),
    re.compile(r"^(object|reference)_type="),
    re.compile(r"^Set the environment variable HYDRA_FULL_ERROR"),
)


def one_line(error: BaseException) -> str:
    """Fold an error (and the OmegaConf cause Hydra wraps) into a single readable line."""
    advice = _better_advice(error)
    if advice:
        return advice
    parts = [str(error)]
    override = getattr(error, "override", None)  # Hydra's OverrideParseException
    if override and override not in parts[0]:
        parts[0] = f"cannot parse the override {override!r}: {parts[0]}{quoted_form(override)}"
    cause = error.__cause__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    lines = []
    for line in "\n".join(parts).splitlines():
        line = line.strip()
        if line and not any(pattern.match(line) for pattern in _NOISE):
            lines.append(line)
    return _join(lines) or type(error).__name__


# config groups that Hydra plugins provide: the extra that installs them
PLUGINS = {
    "hydra/sweeper/optuna": "the Optuna sweeper",
    "hydra/sweeper/dlrun_optuna": "the Optuna sweeper",
    "hydra/launcher/dlrun_slurm": "the SLURM launcher",
    "hydra/launcher/joblib": "the joblib launcher",
    "hydra/launcher/submitit_slurm": "the SLURM launcher",
    "hydra/launcher/submitit_local": "the submitit launcher",
}
INSTALL_SWEEP = 'pip install "dlrun[sweep]" (or, in a checkout, pip install -e ".[sweep]")'


# settings that moved: their name now
MOVED = {
    "logger.progress": "terminal.progress",
    "logger.config": "terminal.config",
    **{
        f"logger.{name}": f"logger.tensorboard.{name}"
        for name in (
            "graph",
            "images",
            "pr_curves",
            "confusion_matrix",
            "reconstructions",
            "hparams",
            "config_text",
            "histograms",
        )
    },
}


def _better_advice(error: BaseException) -> str:
    """Hydra's advice where it misleads ("use +key" for a misspelt key, "override experiment:" for
    a `+` too many) or stays silent (a misspelt option, a plugin not installed, a setting that
    moved); "" elsewhere."""
    missing = getattr(error, "missing_cfg_file", None)  # Hydra's MissingConfigException
    if missing in PLUGINS:
        return f"{PLUGINS[missing]} ({missing}) is not installed: {INSTALL_SWEEP}"
    if missing and "/" in missing and getattr(error, "options", None):
        group, _, name = missing.rpartition("/")
        what = f"no {group} option {name!r} ({missing}.yaml is in no config folder)"
        return unknown_name(f"{group}={name}", what, name, error.options, "options")
    repeated = re.match(
        r"Multiple values for (\S+)\. To override a value use 'override \S+: (\S+)'", str(error)
    )
    if repeated:
        group, name = repeated.groups()
        return f"{group} is already in the defaults list: write {group}={name}, without the +"
    cause = error.__cause__ or error  # Hydra wraps OmegaConf's error; dlrun-eval meets it bare
    moved = MOVED.get(str(getattr(cause, "full_key", "")))
    if moved:
        return f"{cause.full_key} is now {moved}: write {moved}=..."
    node, key = getattr(cause, "parent_node", None), getattr(cause, "key", None)
    pointed = re.match(r"Interpolation key '([\w.]+)\.(\w+)' not found", str(cause))
    if pointed and hasattr(node, "_get_root"):  # `${facts.chanels}`: list what facts has
        holder = node._get_root()
        for part in pointed.group(1).split("."):
            holder = holder.get(part) if hasattr(holder, "get") else None
        if hasattr(holder, "keys"):
            typed = f"{getattr(cause, 'full_key', '')}=${{{pointed.group(1)}.{pointed.group(2)}}}"
            what = f"{pointed.group(1)} has no {pointed.group(2)!r}"
            return unknown_name(typed, what, pointed.group(2), [str(k) for k in holder.keys()], "it has")
    resolver = _resolver_advice(cause)
    if resolver:
        return resolver
    if type(cause).__name__ in ("ConfigKeyError", "ConfigAttributeError") and hasattr(node, "keys") and key:
        where = getattr(cause, "full_key", key).rpartition(".")[0]
        names = [str(name) for name in node.keys() if not str(name).startswith("_") and str(name) != "hydra"]
        scope = f"in {where}" if where else "at the top level"
        return unknown_name(cause.full_key, f"no setting {key!r} {scope}", str(key), names, "settings")
    return ""


# what a resolver's argument looks like, for the line that says it is missing
RESOLVER_EXAMPLES = {
    "now": "${now:%Y-%m-%d}",
    "oc.env": "${oc.env:HOME}",
    "hydra": "${hydra:job.name}",
    "oc.select": "${oc.select:trainer.epochs,10}",
    "oc.decode": "${oc.decode:${oc.env:EPOCHS}}",
}


def _resolver_advice(error: BaseException) -> str:
    """`${now:}` (a resolver without its argument) and `${nwo:%H}` (no such resolver): OmegaConf
    names the Python function (`setup_globals.<locals>.<lambda>() missing 1 required positional
    argument`), not what was typed; say it with the typed value and an example that works."""
    text, full_key = str(error), getattr(error, "full_key", "")
    raw = _raw_value(error)
    typed = f"{full_key}={raw}" if raw is not None else full_key
    missing = re.search(
        r"TypeError raised while resolving interpolation: .*? missing \d+ required "
        r"positional arguments?: ([^\n]+)",
        text,
    )
    named = re.search(r"\$\{\s*([\w.]+)\s*:", typed)
    if missing and named:
        name = named.group(1)
        example = RESOLVER_EXAMPLES.get(name, f"${{{name}:...}}")
        return f"{typed}: the resolver {name} needs its argument ({missing.group(1)}), as in {example}"
    unknown = re.match(r"Unsupported interpolation type ([\w.]+)", text)
    if unknown:
        from omegaconf.basecontainer import BaseContainer

        known = sorted(name for name in BaseContainer._resolvers if not name.startswith("dlrun."))
        what = f"no resolver named {unknown.group(1)!r} (a dot, as in ${{trainer.epochs}}, reads a setting)"
        return unknown_name(typed, what, unknown.group(1), known, "resolvers")
    return ""


def _raw_value(error: BaseException):
    """The value as typed (`${now:}`), not resolved, of the node an OmegaConf error is about: its
    child node, or (where Hydra reads `hydra.run.dir` from the root) the dotted key's node."""
    node = getattr(error, "child_node", None)
    if node is None and getattr(error, "parent_node", None) is not None and getattr(error, "key", None):
        node = error.parent_node
        for part in str(error.key).split("."):
            try:
                node = node._get_node(part) if hasattr(node, "_get_node") else None
            except Exception:  # a key the config does not have: nothing typed to show
                return None
    return node._value() if hasattr(node, "_value") else None


def unknown_name(typed: str, what: str, name: str, choices, kind: str) -> str:
    """`typed: what; did you mean <the closest>? kind: <all choices>`."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{typed}: {what}; {guess}{kind}: {', '.join(choices)}"


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


# where code that is not the user's lives: the standard library and the installed packages, but
# for those the config names (a fault with no frame of the user's keeps its traceback)
DLRUN = str(Path(__file__).resolve().parent)
STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
LIBRARIES = tuple(str(Path(p).resolve()) for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
MACHINERY = {"torch", "torchvision", "hydra", "omegaconf", "dlrun"}  # named by configs, run by dlrun
# a DataLoader worker's error reaches the main process with the worker's traceback as text
WORKER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def failed_in_user_code(
    error: BaseException,
    stage: str,
    theirs: bool = False,
    named: frozenset[str] = frozenset(),
    targets: tuple[tuple[str, str], ...] = (),
) -> Optional[UserCodeError]:
    """`error` as one line when the user's own code raised it (`stage`: "on the first batch",
    "at step 12 of epoch 1"), naming where, with the user's frames only as details; None when no
    frame of the user's took part (a fault of dlrun's keeps its whole traceback). `named`: the
    installed packages the config names (timm), whose frames count as the user's. `theirs`:
    only the user's model ran (torch layers a factory put together have no frame of the user's).
    `targets`: the config's (key, `_target_`) pairs, to say whose code it was (`your loss
    (losses.PickyLoss)`)."""
    every = traceback.extract_tb(error.__traceback__)
    outside = [frame for frame in every if not frame.filename.startswith(DLRUN)]
    frames = [frame for frame in every if is_users(frame.filename, named)] or (outside[-1:] if theirs else [])
    text = str(error)
    if "Original Traceback" in text:  # raised in a DataLoader worker
        frames = [
            traceback.FrameSummary(name, int(line), function)
            for name, line, function in WORKER_FRAME.findall(text)
            if is_users(name, named)
        ]
        text = text.rstrip().splitlines()[-1].partition(": ")[2] or text.rstrip().splitlines()[-1]
        stage += ", in a DataLoader worker"
    if not frames:
        return None
    last = frames[-1]
    where = f"{Path(last.filename).name}:{last.lineno}, in {last.name}"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    details = "".join(traceback.format_list(frames)) + f"{type(error).__name__}: {first_line}"
    who = _owner(frames, targets) or "code"
    return UserCodeError(
        f"{stage}, your {who} raised {type(error).__name__}: {first_line} ({where}){what_to_set(text)}",
        details="Traceback of your code (most recent call last):\n" + details,
    )


def _owner(frames: list, targets: tuple[tuple[str, str], ...]) -> str:
    """`model (nets.Net)`: the setting whose `_target_` lives in the file of the deepest frame of
    the user's that one target alone owns; "" when none does."""
    for frame in reversed(frames):
        owners = [
            (key.removesuffix("._target_"), target)
            for key, target in targets
            if _module_file(target.rpartition(".")[0], sys.modules) == Path(frame.filename)
        ]
        if len(owners) == 1:
            return f"{owners[0][0]} ({owners[0][1]})"
    return ""


def _module_file(module: str, loaded: dict) -> Optional[Path]:
    file = getattr(loaded.get(module), "__file__", None)
    return Path(file) if file else None


CHANNELS = re.compile(r"expected input\[[\d, ]+\] to have (\d+) channels, but got (\d+) channels")
FEATURES = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x\d+\)")


def what_to_set(text: str) -> str:
    """What to set, for the size mismatches torch reports between a model and the data."""
    if found := CHANNELS.search(text):
        wanted, got = found.groups()
        return (
            f"; the model expects {wanted} input channels and the data has {got}: give the model "
            "the data's, e.g. in_chans: ${facts.channels} (timm's name; yours may differ)"
        )
    if "Found no NVIDIA driver" in text or "not compiled with CUDA" in text:
        return (
            "; this machine has no GPU for it: leave the device to dlrun (trainer.device moves the "
            "model and the batches) instead of calling .cuda()"
        )
    if (found := FEATURES.search(text)) and found.group(2) != found.group(3):
        return (
            f"; a Linear layer takes {found.group(3)} features and gets {found.group(2)}: size it from "
            "the data, e.g. in_shape: ${facts.in_shape}, or use nn.LazyLinear"
        )
    return ""


def is_users(filename: str, named: frozenset[str] = frozenset()) -> bool:
    """The user's files, and those of the installed packages their config names (`named`, such
    as timm): not dlrun's, the standard library's or another installed package's."""
    if filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    for library in LIBRARIES:  # first: the system's site-packages lie inside the standard library
        if str(path).startswith(library + "/"):
            return path.relative_to(library).parts[0] in named - MACHINERY
    return not str(path).startswith((DLRUN, STDLIB))
