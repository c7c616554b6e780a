"""Command-line entry points: `dlrun`, `dlrun-eval`, `dlrun-predict`.

This module imports no torch: `dlrun --help`, `--cfg job` and config errors are answered in well
under a second, and torch loads only once a run is really going to start.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dlrun import resolvers, schema
from dlrun.errors import ConfigError, DlrunError, one_line


def config_dir() -> str:
    """The config tree: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise ConfigError(f"dlrun's config tree is missing next to {here}; reinstall with pip install .")


# user errors of the jobs this process ran; Hydra does not see them (see _train_task)
_failures: list[BaseException] = []


def train() -> None:
    """`dlrun [overrides]`: compose the config with Hydra and run (or sweep) the experiment."""
    _register()
    _failures.clear()
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        from dlrun.usage import help_text

        overrides = [arg for arg in sys.argv[1:] if arg not in ("-h", "--help")]
        _report_errors(lambda: print(help_text(config_dir(), overrides)), "dlrun")
        return
    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")

    def main() -> None:
        app(_train_task)()
        if _failures:
            raise _failures[0]

    _report_errors(main, "dlrun")


def _train_task(cfg: DictConfig) -> float:
    """One job. A user error is recorded and the job returns NaN, instead of raising.

    Raised, Hydra would print its own multi-line report, and a sweep would stop at the first
    bad job; the run's log already holds the reason and the caller prints one line.
    """
    from hydra.core.hydra_config import HydraConfig

    from dlrun.checks import check_config

    try:
        check_config(cfg, dict(HydraConfig.get().runtime.choices))
        from dlrun.run import train  # torch loads here, once the config is known to be sound

        return train(cfg)
    except (DlrunError, OmegaConfBaseException) as error:
        logging.getLogger("dlrun").error(one_line(error))  # into the run's log, beside its files
        _failures.append(error)
        return float("nan")


def evaluate() -> None:
    """`dlrun-eval ckpt=PATH [split=test] [dataset.root=DIR] [output=FILE]`."""
    _register()

    def main() -> None:
        cfg = _parse_cli(schema.EvalConfig, EVAL_USAGE)
        from dlrun.evaluate import evaluate_checkpoint

        evaluate_checkpoint(cfg)

    _report_errors(main, "dlrun-eval")


def predict() -> None:
    """`dlrun-predict ckpt=PATH inputs=[...] [topk=3] [format=table|json]`."""
    _register()

    def main() -> None:
        cfg = _parse_cli(schema.PredictConfig, PREDICT_USAGE)
        from dlrun.predict import predict_from_checkpoint

        predict_from_checkpoint(cfg)

    _report_errors(main, "dlrun-predict")


EVAL_USAGE = """usage: dlrun-eval ckpt=PATH [split=test|val|train] [output=FILE] [device=auto]
                  [batch_size=N] [dataset.root=DIR | dataset.path=FILE]

Rebuild the model and data from a dlrun checkpoint, print loss and metrics (per-class accuracy
and the confusion matrix for classification) and write them as JSON (default: next to the
checkpoint, <checkpoint>.<split>.json)."""

PREDICT_USAGE = """usage: dlrun-predict ckpt=PATH inputs=[...] [topk=3] [format=table|json] [device=cpu]

Predict with a dlrun checkpoint. inputs are names for a names model (inputs=[Jones,Satoshi]),
image files for an image model (inputs=[ant.jpg]), rows of numbers for a CSV model
(inputs=[[13.2,1.78,...]])."""


def _parse_cli(node: type, usage: str) -> DictConfig:
    args = sys.argv[1:]
    if not args or any(arg in ("-h", "--help") for arg in args):
        print(usage)
        raise SystemExit(0 if args else 2)
    try:
        given = OmegaConf.from_dotlist(args)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse arguments {args}: {one_line(error)}") from None
    cfg = OmegaConf.merge(OmegaConf.structured(node), given)
    OmegaConf.to_container(cfg, throw_on_missing=True)  # a missing ckpt= fails here, by name
    return cfg


def _register() -> None:
    schema.register()
    resolvers.register()


def _report_errors(main: Callable[[], object], program: str) -> None:
    """Run `main`; a user's mistake becomes one line on stderr and a non-zero exit."""
    users_setting = os.environ.get("HYDRA_FULL_ERROR")
    # Hydra then re-raises instead of printing its own multi-line report; we print one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (DlrunError, HydraException, OmegaConfBaseException) as error:
        if users_setting == "1":
            raise  # the user asked for the full traceback
        _exit_with(program, error)
    finally:
        if users_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = users_setting


def _exit_with(program: str, error: BaseException) -> NoReturn:
    print(f"{program}: error: {one_line(error)}", file=sys.stderr)
    user_input = isinstance(error, (ConfigError, HydraException, OmegaConfBaseException))
    raise SystemExit(2 if user_input else 1)
