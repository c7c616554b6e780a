"""What a checkpoint file holds, its version, and reading the versions written before.

A checkpoint is a dict of plain tensors and containers (written atomically by files.py, read with
weights_only=True):

    format, version       "dlrun-checkpoint", VERSION
    model, optimizer, scheduler, scaler, ema ...   state dicts of the run's parts (engine/state.py)
    position, monitor, early_stopping, data_generator, metrics, best_val, history
                          the training state, exactly (engine/state.py TrainingState)
    rng                   Python, NumPy, torch and CUDA generator states
    config, facts         the resolved config and the data's facts: what rebuilds the model
    dlrun_version         the dlrun that wrote it

A file of an older version is brought up to date in memory, so a checkpoint of any earlier dlrun
still evaluates, predicts and resumes; a version this dlrun does not know is refused in one line.
"""

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any

from dlrun.checkpoints.files import load_file, save_file
from dlrun.config.schema import OPTIONS, schema_of
from dlrun.errors import CheckpointError

FORMAT = "dlrun-checkpoint"
VERSION = 2


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    save_file(path, {"format": FORMAT, "version": VERSION, **payload})


def read_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """A checkpoint of this dlrun's format, whatever version wrote it; one line if it is not one."""
    path = Path(path).expanduser()
    payload = load_file(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dlrun checkpoint (no '{FORMAT}' marker); "
            "give a checkpoints/*.pt file of a dlrun run"
        )
    version = payload.get("version", 1)  # files written before versions existed
    if version not in UPGRADES and version != VERSION:
        raise CheckpointError(
            f"{path} is a dlrun checkpoint of format version {version}, which this dlrun does not know "
            f"(it reads versions 1 to {VERSION}): it was written by a newer dlrun; upgrade dlrun to read it"
        )
    while version != VERSION:
        payload = UPGRADES[version](payload, path)
        version = payload["version"]
    return payload


# -- version 1 (dlrun 0.1): dlrun's own code named by catalogue names ---------------------------


def _from_version_1(old: dict[str, Any], path: Path) -> dict[str, Any]:
    """Version 1 named dlrun's models, datasets and losses by catalogue names (`model.arch`,
    `dataset.loader`, `loss.name`) where version 2 names them by `_target_` like a user's; kept the
    terminal's settings in `logger`; and wrapped the model in a log-softmax for loss=nll."""
    payload = copy.copy(old)
    config = copy.deepcopy(old.get("config") or {})
    wrapped = (config.get("loss") or {}).get("name") == "nll"
    _named_by_target(config, path)
    _loggers_and_terminal(config)
    config.setdefault("metrics", [])
    payload["config"] = config
    if wrapped and isinstance(payload.get("model"), dict):  # the wrapper's `model.` prefix goes
        payload["model"] = {key.removeprefix("model."): value for key, value in payload["model"].items()}
    facts = dict(old.get("facts") or {})
    dataset = config.get("dataset") or {}
    if facts.get("kind") == "image" and "val_transforms" in dataset:
        facts["eval_transforms"] = dataset["val_transforms"]
    payload["facts"] = facts
    payload["version"] = 2
    return payload


def _named_by_target(config: dict[str, Any], path: Path) -> None:
    renamed = (("model", "arch", {"row_rnn": "lstm"}), ("dataset", "loader", {}), ("loss", "name", {}))
    for group, key, option_of in renamed:
        node = config.get(group)
        if not isinstance(node, dict) or key not in node or "_target_" in node:
            continue
        name = node.pop(key)
        option = OPTIONS[group].get(option_of.get(name, name))
        if option is None:  # a name is never code: one dlrun does not know cannot be rebuilt
            raise CheckpointError(
                f"{path} names {group}.{key}={name!r}, which is none of dlrun's {group} options, "
                "so it does not describe a model dlrun can rebuild"
            )
        target = {"_target_": schema_of(option)._target_}
        if group == "dataset" and "name" in {f.name for f in fields(schema_of(option))}:
            target["name"] = name  # the torchvision sets: one loader, the set by name
        config[group] = {**target, **node}


def _loggers_and_terminal(config: dict[str, Any]) -> None:
    logger = config.get("logger")
    if not isinstance(logger, dict) or "tensorboard" not in logger or isinstance(logger["tensorboard"], dict):
        return
    terminal = {key: logger.pop(key) for key in ("progress", "config") if key in logger}
    enabled = logger.pop("tensorboard")
    config["terminal"] = terminal
    target = schema_of(OPTIONS["logger"]["tensorboard"])._target_
    config["logger"] = {"tensorboard": {"_target_": target, **logger}} if enabled else {}


UPGRADES = {1: _from_version_1}
