"""`dlrun --help`: the groups and their options, the composed config, examples; and the usage of
dlrun-eval and dlrun-predict, generated from their schemas.

Rendered here rather than by Hydra's help, which composes the whole config store once per group
and takes over a second; this composes once.
"""

import dataclasses
import inspect
import textwrap
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from dlrun.config.project import config_dirs

HEADER = """dlrun - deep-learning experiments from one command (PyTorch, Hydra, TensorBoard).

Usage: dlrun [group=option ...] [key=value ...]      one run
       dlrun -m key=a,b group=x,y ...                 a sweep (Hydra multirun)
       dlrun --cfg job [overrides]                    print the composed config and exit
       dlrun init DIR                                 a project of your own (model, dataset,
                                                      configs) that trains at once
"""

FOOTER = """Examples:
  dlrun                                          MLP on the embedded wine data (offline, seconds)
  dlrun dataset=mnist model=mlp optimizer.lr=3e-4
  dlrun experiment=mnist_lenet dataset.root=DIR   a classic experiment (DIR: where MNIST is)
  dlrun -m optimizer.lr=1e-3,1e-2 model=mlp,cnn dataset=fashion_mnist
  dlrun "logger=[tensorboard,csv]"               several loggers (logger=none: no logger)
  dlrun trainer.resume=runs/<date>/<run>/checkpoints/last.pt     continue a stopped run
Each run writes runs/<date>/<time>_<dataset>_<model>/ (log, TensorBoard events, checkpoints,
metrics.json). Compare runs with: tensorboard --logdir runs
From a checkpoint: dlrun-eval ckpt=PATH [split=test], dlrun-predict ckpt=PATH inputs=[...]
Hydra's own flags: dlrun --hydra-help
Errors are one line; HYDRA_FULL_ERROR=1 dlrun ... shows the full traceback."""

GROUPS = (
    "dataset",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "experiment",
    "hparams_search",
)


def help_text(config_dir: str, args: list[str]) -> str:
    """The help for the command line `args` (overrides, and --config-dir folders whose options
    join dlrun's: a project's configs/ comes in that way)."""
    extra, overrides = config_dirs(args)
    defaults = _defaults(Path(config_dir))
    lines = [
        HEADER,
        "== Config groups (choose one option each: group=option; * = default; "
        "(yours) = from your configs/, in place of dlrun's of that name) ==",
    ]
    for group in GROUPS:
        yours = {path.stem for folder in extra for path in (Path(folder) / group).glob("*.yaml")}
        files = yours | {path.stem for path in (Path(config_dir) / group).glob("*.yaml")}
        options = sorted(files | _stored(group))
        if options:
            marked = [
                f"{name}{'*' if name == defaults.get(group) else ''}{' (yours)' if name in yours else ''}"
                for name in options
            ]
            lines.append(f"{group}: {', '.join(marked)}")
    if extra:
        overrides = [f"hydra.searchpath=[{','.join('file://' + folder for folder in extra)}]", *overrides]
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    lines += ["", "== The composed config (override any value: key=value) ==", OmegaConf.to_yaml(cfg), FOOTER]
    return "\n".join(lines)


def _stored(group: str) -> set[str]:
    """The options of `group` registered from the schema (config/schema.py: store_schemas)."""
    store = ConfigStore.instance()
    try:
        return {name.removesuffix(".yaml") for name in store.list(group)}
    except OSError:  # no option of the group is stored (experiment, hparams_search: files only)
        return set()


def _defaults(config_dir: Path) -> dict[str, str]:
    root = yaml.safe_load((config_dir / "config.yaml").read_text())
    chosen = {}
    for entry in root.get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                if option is not None and not group.startswith("override"):
                    chosen[group] = option
    return chosen


TRUST = """A checkpoint naming code of yours (a model or dataset by _target_) is rebuilt only from
the project folder it belongs to (run from there), or with allow=[module,...]."""


def program_usage(program: str, schema: type) -> str:
    """`usage: dlrun-eval ckpt=PATH [split=test|val] ...`, what the program does, and each argument
    with what it is for: all read from the program's schema dataclass (config/schema.py)."""
    arguments = [_argument(field) for field in dataclasses.fields(schema)]
    usage = textwrap.fill(
        " ".join(word if required else f"[{word}]" for word, required, _ in arguments),
        width=100,
        initial_indent=f"usage: {program} ",
        subsequent_indent=" " * len(f"usage: {program} "),
    )
    about = textwrap.fill(" ".join(inspect.cleandoc(schema.__doc__ or "").split()), width=100)
    width = max(len(word) for word, _, _ in arguments) + 2
    lines = [f"  {word:<{width}}{text}" for word, _, text in arguments if text]
    return "\n".join([usage, "", about, "", *lines, "", TRUST])


def _argument(field: dataclasses.Field) -> tuple[str, bool, str]:
    """(`ckpt=PATH`, `split=test|val` or `topk=3`, whether it is required, what it is for)."""
    choices = field.metadata.get("choices")
    has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    default = field.default if field.default is not dataclasses.MISSING else None
    required = not has_default or default == MISSING
    kind = str(field.type)
    if choices is not None:
        values = "|".join([default, *(choice.value for choice in choices if choice.value != default)])
    elif field.metadata.get("path"):
        values = "PATH"
    elif kind.startswith("list"):
        values = "[...]"
    elif field.default_factory is not dataclasses.MISSING:
        values = None  # a group of settings: key.setting=value
    elif default not in (None, MISSING):
        values = str(default)
    else:
        values = "N" if "int" in kind else "VALUE"
    word = f"{field.name}.KEY=VALUE" if values is None else f"{field.name}={values}"
    return word, required, field.metadata.get("help", "")
