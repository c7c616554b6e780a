"""Command-line entry points: `dlrun`, `dlrun-eval`, `dlrun-predict`, `dlrun-lr-find`.

Each one first takes over the stop signals (dlrun/signals.py), then imports what it needs: this
module imports no torch, and nothing heavy before the signal handler is in place, so Ctrl-C at
any moment ends the command with one line. `dlrun --help`, `--cfg job` and config errors are
answered in well under a second; torch loads only once a run is really going to start.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

from dlrun.errors import DISK_REFUSED, ConfigError, DlrunError, UserCodeError, one_line, unknown_name
from dlrun.signals import STOP, Interrupted

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from dlrun.checkpoints.trust import Trust
    from dlrun.config.project import Project


def config_dir() -> str:
    """The config tree: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise ConfigError(f"dlrun's config tree is missing next to {here}; reinstall with pip install .")


# user errors of the jobs this process ran; Hydra does not see them (see _run_job)
_failures: list[BaseException] = []


def main() -> None:
    """`dlrun [overrides]`: compose the config with Hydra and run (or sweep) the experiment;
    `dlrun init DIR` writes a project to start from."""
    _program("dlrun", _dlrun)


def eval_main() -> None:
    """`dlrun-eval ckpt=PATH [split=test] [dataset.root=DIR] [output=FILE]`."""
    _program("dlrun-eval", _dlrun_eval)


def predict_main() -> None:
    """`dlrun-predict ckpt=PATH inputs=[...] [topk=3] [format=table|json]`."""
    _program("dlrun-predict", _dlrun_predict)


def export_main() -> None:
    """`dlrun-export ckpt=PATH [format=onnx|torch_export|torchscript] [output=FILE]`."""
    _program("dlrun-export", _dlrun_export)


def serve_main() -> None:
    """`dlrun-serve ckpt=PATH [host=127.0.0.1] [port=8000]`."""
    _program("dlrun-serve", _dlrun_serve)


def lr_find_main() -> None:
    """`dlrun-lr-find [the overrides of a run]`: the learning-rate range test for that run."""
    _program("dlrun-lr-find", _dlrun_lr_find)


def _program(name: str, body: Callable[[], None]) -> None:
    """Signals first, then the program; the run folders it locked are released however it ends."""

    def run() -> None:
        STOP.install(command=name)
        # a log file on a full disk: the run's own error says so in one line, instead of a
        # "--- Logging error ---" traceback for every record
        logging.raiseExceptions = False
        threading.excepthook = _thread_failed
        sys.excepthook = _uncaught
        _register()
        body()

    try:
        _report_errors(run, name)
    finally:
        STOP.wind_down()
        from dlrun.runs.lock import release_locks

        release_locks()
        threading.excepthook, sys.excepthook = threading.__excepthook__, sys.__excepthook__


def _dlrun() -> None:
    import hydra

    from dlrun.config.schema import path_settings
    from dlrun.quoting import shell_path
    from dlrun.runs.commands import quote_path_overrides
    from dlrun.runs.lock import check_free

    _failures.clear()
    if sys.argv[1:2] == ["init"]:
        _init(sys.argv[2:])
        return
    _enter_project()
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        from dlrun.config.usage import help_text

        overrides = [arg for arg in sys.argv[1:] if arg not in ("-h", "--help")]
        print(help_text(config_dir(), overrides))
        return
    from dlrun.reporting import sweep_summary

    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    sys.argv[1:] = quote_path_overrides(sys.argv[1:], path_settings())
    check_free(sys.argv[1:])
    _check_options(sys.argv[1:], "dlrun")
    _check_modes(sys.argv[1:])
    sys.argv[1:] = _own_keys_settable(sys.argv[1:])
    sys.argv += _rank_overrides()  # last, so they win over the user's hydra.run.dir
    sweep_summary.latest = None
    try:
        app(_run_job)()
    except Exception as error:
        if type(error).__name__ != "TerminatedWorkerError" or sweep_summary.latest is None:
            raise
        _joblib_gave_up(sweep_summary.latest)
    latest = sweep_summary.latest
    if latest is not None and latest.failed:
        jobs = ", ".join(str(row["job"]) for row in latest.failed)
        raise DlrunError(
            f"{len(latest.failed)} of {len(latest.rows)} sweep jobs failed (job {jobs}; reasons in "
            f"{shell_path(latest.folder / 'sweep_summary.csv')}); once fixed, run only those with: "
            f"{latest.resume_command}"
        )
    if _failures:
        raise _failures[0]


LR_FIND_USAGE = """usage: dlrun-lr-find [the settings of a run, as dlrun takes them]

The learning-rate range test for that run: optimizer steps on a model made for the test, the lr
rising exponentially; writes lr_find.png, lr_find.csv and TensorBoard events into
runs/lr_find/<date>/<time>_<dataset>_<model> and prints the suggested lr with the command that
trains with it. No checkpoint is written and no run folder is touched.

  trainer.lr_find.steps=100        optimizer steps (the training split is gone round as needed)
  trainer.lr_find.start_lr=1e-7    the first step's lr
  trainer.lr_find.end_lr=1         the last step's lr
  trainer.lr_find.stop_factor=4    stop once the smoothed loss passes this many times its lowest

e.g. dlrun-lr-find model=lenet dataset=mnist optimizer=sgd
(dlrun --help lists every group and setting)"""


def _dlrun_lr_find() -> None:
    """The range test for the run the overrides describe, composed as `dlrun` composes it, into
    a folder of its own under runs/lr_find/."""
    import hydra

    from dlrun.config.schema import path_settings
    from dlrun.runs.commands import quote_path_overrides

    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(LR_FIND_USAGE)
        return
    if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        raise ConfigError("dlrun-lr-find tests one run's settings: drop -m and give each setting one value")
    _check_options(sys.argv[1:], "dlrun-lr-find")
    _enter_project()
    sys.argv[1:] = _own_keys_settable(quote_path_overrides(sys.argv[1:], path_settings()))
    if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv):
        sys.argv.append(
            "hydra.run.dir=runs/lr_find/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}_"
            "${hydra:runtime.choices.dataset}_${hydra:runtime.choices.model}"
        )
    sys.argv.append("hydra.output_subdir=null")  # the folder holds the test's files only

    failed: list[BaseException] = []

    def job(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from dlrun.config.checks import check_config

        try:
            check_config(cfg, dict(HydraConfig.get().runtime.choices))
            from dlrun.engine.lr_range import find_lr  # torch loads here, once the config is sound

            find_lr(cfg)
        except Exception as error:  # raised below, where dlrun's errors become one line, not Hydra's report
            failed.append(error)

    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(job)()
    if failed:
        raise failed[0]


def _own_keys_settable(args: list[str]) -> list[str]:
    """`scheduler.interval=step` on an option of the user's YAML, which may not write the key:
    Hydra's `++` sets it whether or not it is there (dlrun's checks still refuse an unknown key)."""
    from dlrun.config.schema import own_key

    return [f"++{arg}" if own_key(arg) and not arg.startswith(("+", "~")) else arg for arg in args]


def _check_options(args: list[str], program: str) -> None:
    """An option Hydra does not know, or a setting typed as an option (`--trainer.epochs=3`), is
    one line naming it, instead of argparse's usage block and "unrecognized arguments"."""
    import argparse

    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        _, rest = parser.parse_known_args(args)
    except argparse.ArgumentError as error:  # --cfg nonsense, --config-dir without a folder
        raise ConfigError(f"{error}; {program} --help lists the options") from None
    for arg in rest:
        if not arg.startswith("-") or arg == "-":
            continue
        setting = arg.lstrip("-")
        if "=" in setting:  # argparse's habit: --key=value
            raise ConfigError(f"{arg}: settings take no dashes: write {setting}")
        options = sorted(option for option in parser._option_string_actions if option.startswith("--"))
        raise ConfigError(unknown_name(arg, f"{program} has no such option", arg, options, "options"))


def _check_modes(args: list[str]) -> None:
    """Hydra's "Only one of --run, --multirun, --cfg ..." for `-m --cfg job`, said as what to do."""
    sweep = any(arg in ("-m", "--multirun") for arg in args)
    shown = next((arg for arg in args if arg in ("-c", "--cfg") or arg.startswith("--cfg=")), None)
    if sweep and shown:
        raise ConfigError(
            f"{shown} prints one composed config and -m runs a sweep of them: to see a job's "
            "config, drop -m and give each swept setting one of its values (e.g. optimizer.lr=0.1)"
        )


def _joblib_gave_up(started) -> NoReturn:
    from dlrun.reporting import sweep_summary

    reason = "a joblib worker process died (killed, or out of memory) and joblib abandoned the sweep"
    sweep_summary.abandoned(started, reason)
    raise DlrunError(
        f"{reason}; hydra/launcher=parallel runs each job in a process of its own and finishes the "
        f"others when one dies. Finish this sweep with: {started.resume_command}"
    )


def _enter_project() -> Optional[Project]:
    """In a project folder ([tool.dlrun] in its pyproject.toml): its modules become importable and
    its configs join the search path (unless --config-dir names other ones)."""
    from dlrun.config.project import find_project
    from dlrun.config.schema import yield_to_project

    project = find_project()
    _config_dirs_importable()
    if project is None:
        return None
    project.enter()
    yield_to_project(project.options())
    if project.configs.is_dir() and not any(arg.startswith(("--config-dir", "-cd")) for arg in sys.argv):
        sys.argv.insert(1, f"--config-dir={project.configs}")
    return project


def _config_dirs_importable() -> None:
    """Like `python my_app.py` for a Hydra app: the current folder and the one holding each
    `--config-dir` folder are importable, so `_target_: nets.Tiny` finds nets.py beside configs/."""
    from dlrun.config.project import config_dirs, importable

    for folder in [*(Path(found).parent for found in config_dirs(sys.argv[1:])[0]), Path.cwd()]:
        importable(folder)


def _init(args: list[str]) -> None:
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: dlrun init DIR    (writes a small project to start from into the new folder DIR)")
        raise SystemExit(0 if args[:1] in (["-h"], ["--help"]) else 2)
    from dlrun.commands.init import write_project

    files = write_project(args[0])
    print(f"wrote {args[0]}/: {', '.join(str(path) for path in files)}")
    print(f"next: cd {args[0]} && dlrun experiment=spirals_tiny")


def _rank_overrides() -> list[str]:
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        return []
    from dlrun.engine.distributed import scratch_overrides  # imports torch: only under torchrun

    return scratch_overrides(rank)


def _run_job(cfg: DictConfig) -> float:
    """One job. A failure is recorded in the job's folder and the job returns NaN, instead of
    raising: Hydra would print its own multi-line report, and a sweep would stop after the
    first bad job. In a single run, errors that are not the user's still raise (a traceback)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from dlrun.config.checks import check_config
    from dlrun.runs.lock import FolderInUse, lock_folder, release_lock

    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    locked = False
    if hydra_cfg.job.chdir:  # the job runs in its run folder: paths typed are the user's folder's
        _paths_from(Path(hydra_cfg.runtime.cwd), cfg)
    try:
        locked = lock_folder(folder)  # a sweep job's folder (a single run's is locked already)
        check_config(cfg, dict(hydra_cfg.runtime.choices))
        from dlrun.engine.experiment import run_experiment  # torch loads here, once the config is sound

        return run_experiment(cfg)
    except FolderInUse:
        raise  # the folder is another process's: nothing is written there
    except (DlrunError, OmegaConfBaseException) as error:
        if _failed_start(cfg, hydra_cfg, folder):
            _forget_folder(error, folder)
        else:
            _record_failure(error, one_line(error), folder)
    except Exception as error:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        _record_failure(error, traceback.format_exc(), folder)
    finally:
        if locked:
            release_lock(folder)
    return float("nan")


def _paths_from(typed_in: Path, cfg: DictConfig) -> None:
    """Under hydra.job.chdir=true: relative paths in dlrun's settings read from the folder the
    command was typed in, and the paths dlrun prints are for that folder."""
    from omegaconf import OmegaConf, open_dict

    from dlrun import quoting
    from dlrun.config.schema import path_settings

    quoting.typed_in = str(typed_in)
    with open_dict(cfg):
        for key in path_settings():
            value = OmegaConf.select(cfg, key, default=None)
            if isinstance(value, str) and value not in ("auto", "last") and not Path(value).is_absolute():
                OmegaConf.update(cfg, key, str(typed_in / Path(value).expanduser()), merge=False)


def _failed_start(cfg: DictConfig, hydra_cfg: DictConfig, folder: Path) -> bool:
    """A single run (not a sweep job, not a resume, not under torchrun) refused before it wrote
    anything but its start-up files: its folder would only crowd runs/ (and TensorBoard's list)."""
    from hydra.types import RunMode

    from dlrun.runs.folder import RunFolder

    alone = hydra_cfg.mode == RunMode.RUN and int(os.environ.get("WORLD_SIZE", "1")) == 1
    return alone and cfg.trainer.get("resume") is None and RunFolder(folder).only_started()


def _forget_folder(error: BaseException, folder: Path) -> None:
    """Remove a failed start's folder: the error line on stderr is all it had to say."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    _remember(error)


def _record_failure(error: BaseException, text: str, run_dir: Path) -> None:
    """The reason goes into the run's log and error.txt, beside whatever the run wrote."""
    from dlrun.runs.folder import RunFolder

    details = getattr(error, "details", "")
    text = f"{text}\n{details}" if details else text
    logging.getLogger("dlrun").error(text)
    RunFolder(run_dir).record_error(text)
    _remember(error)


def _remember(error: BaseException) -> None:
    """For the command's exit: the error's line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # a copy without the traceback: its frames would keep the failed job's model and data alive
    # in a sweep worker that goes on to run other jobs
    if isinstance(error, UserCodeError):
        _failures.append(UserCodeError(one_line(error), error.details))
    else:
        user_input = isinstance(error, (ConfigError, HydraException, OmegaConfBaseException))
        _failures.append((ConfigError if user_input else DlrunError)(one_line(error)))


def _checkpoint_command(program: str, schema_name: str) -> tuple[DictConfig, Trust]:
    """(the arguments of a program that reads a checkpoint, checked against its schema; what the
    checkpoint may make it import: the project folder it runs in, and allow=[...])."""
    from dlrun.checkpoints.trust import Trust
    from dlrun.config import schema

    cfg = _parse_cli(program, getattr(schema, schema_name))
    return cfg, Trust(_enter_project(), tuple(cfg.allow))


def _dlrun_eval() -> None:
    cfg, trust = _checkpoint_command("dlrun-eval", "EvalConfig")
    from dlrun.commands.evaluate import evaluate_checkpoint

    evaluate_checkpoint(cfg, trust)


def _dlrun_predict() -> None:
    cfg, trust = _checkpoint_command("dlrun-predict", "PredictConfig")
    from dlrun.commands.predict import predict_from_checkpoint

    predict_from_checkpoint(cfg, trust)


def _dlrun_export() -> None:
    cfg, trust = _checkpoint_command("dlrun-export", "ExportConfig")
    from dlrun.commands.export import export_checkpoint

    export_checkpoint(cfg, trust)


def _dlrun_serve() -> None:
    cfg, trust = _checkpoint_command("dlrun-serve", "ServeConfig")
    from dlrun.commands.serve import serve_checkpoint

    serve_checkpoint(cfg, trust)


def _parse_cli(program: str, node: type) -> DictConfig:
    """The `key=value` arguments of a checkpoint's program (dlrun-eval...), checked against its schema."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dlrun.config.checks import check_values
    from dlrun.config.usage import program_usage

    args = sys.argv[1:]
    if not args or any(arg in ("-h", "--help") for arg in args):
        print(program_usage(program, node))
        raise SystemExit(0 if args else 2)
    try:
        given = OmegaConf.from_dotlist(args)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse arguments {args}: {one_line(error)}") from None
    schema = OmegaConf.structured(node)
    for key in given:  # inputs=Jones means inputs=[Jones]
        if OmegaConf.is_list(schema._get_node(key)) and not OmegaConf.is_list(given[key]):
            given[key] = [given[key]]
    cfg = OmegaConf.merge(schema, given)
    OmegaConf.to_container(cfg, throw_on_missing=True)  # a missing ckpt= fails here, by name
    check_values(cfg)
    return cfg


def _register() -> None:
    from dlrun.config import resolvers, schema

    schema.store_schemas()
    resolvers.register_resolvers()


def _report_errors(run: Callable[[], object], program: str) -> None:
    """Call `run`; a user's mistake becomes one line on stderr and a non-zero exit, and so do a
    stop signal (130, 143; also while the rest is still being imported) and a disk that refuses a
    write."""
    try:
        _report_user_errors(run, program)
    except (Interrupted, KeyboardInterrupt) as stop:
        stop = stop if isinstance(stop, Interrupted) else Interrupted(2)  # Ctrl-C before the handler
        STOP.stopping = STOP.said = True  # from this line on, another signal ends the process quietly
        _say(f"{program}: {stop}")
        raise SystemExit(stop.exit_code) from None


def _report_user_errors(run: Callable[[], object], program: str) -> None:
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    users_setting = os.environ.get("HYDRA_FULL_ERROR")
    # Hydra then re-raises instead of printing its own multi-line report; we print one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except (DlrunError, HydraException, OmegaConfBaseException) as error:
        if users_setting == "1":
            raise  # the user asked for the full traceback
        _exit_with(program, error)
    except yaml.MarkedYAMLError as error:  # a config file of the user's that does not parse
        if users_setting == "1":
            raise
        _exit_with(program, ConfigError(_yaml_fault(error)))
    except OSError as error:
        if users_setting == "1" or (error.filename is None and error.errno not in DISK_REFUSED):
            raise
        where = f" {error.filename}" if error.filename else " a file"
        _exit_with(
            program,
            DlrunError(f"cannot write{where}: {error.strerror} (disk full, read-only or over quota?)"),
        )
    finally:
        if users_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = users_setting


def _yaml_fault(error) -> str:
    """'configs/model/bad.yaml, line 2, column 14: expected ',' or ']' ... (while parsing ...)'."""
    mark = error.problem_mark or error.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    problem = " ".join(str(error.problem or "").split())
    context = f" ({error.context})" if error.context else ""
    return f"{where} is not valid YAML: {problem}{context}; fix the file (or check its quotes and brackets)"


def _thread_failed(args) -> None:
    """A background thread (TensorBoard's event writer) that hits a full disk: one line, not a
    traceback; the run itself stops at its next checkpoint with the path and the resume command."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_REFUSED:
        _say(f"warning: {args.thread.name}: {args.exc_value.strerror}")
        return
    threading.__excepthook__(args)


def _uncaught(kind, error, trace) -> None:
    """multiprocessing's helper threads report through sys.excepthook: a connection that a dying
    DataLoader worker dropped (reset, or cut mid-message: EOFError in resource_sharer) goes to the
    log; the run's own error line says what happened."""
    dropped = isinstance(error, (ConnectionError, EOFError))
    if threading.current_thread() is not threading.main_thread() and dropped:
        logging.getLogger("dlrun").warning("%s: %s", threading.current_thread().name, error)
        return
    sys.__excepthook__(kind, error, trace)


def _say(line: str) -> None:
    """One line on stderr in one write: print() writes the newline separately, and a thread's
    warning landing between the two glued it to the error line ("...devicedlrun: error: ...")."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _exit_with(program: str, error: BaseException) -> NoReturn:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _say(f"{program}: error: {one_line(error)}")
    if getattr(error, "details", ""):
        print(error.details, file=sys.stderr)  # the user's own traceback, under the one line
    user_input = isinstance(error, (ConfigError, HydraException, OmegaConfBaseException))
    raise SystemExit(2 if user_input else 1)
