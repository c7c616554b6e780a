"""Config checks that need no torch: a bad combination fails in a second, with the fix.

The rules are read from the schema (config/schema.py): bounds, closed sets and `auto` sit beside
each field, what a model reads and does sits on its class. Only rules across fields are written
here. A model or dataset of the user's (`_target_` without a schema) is checked once it is
imported (engine/build.check_targets), before any data is read.
"""

import dataclasses
import math
import re
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlrun import metrics
from dlrun.config.schema import AUTO, FACT_NAMES, OPTIONS, Kind, schema_of
from dlrun.errors import ConfigError, unknown_name

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def facts_pending(cfg: DictConfig) -> DictConfig:
    """The config as it is checked before the data is loaded: each `${facts.NAME}` read as None.
    The dataset's settings cannot read facts: they are what makes them."""
    pending = cfg.copy()
    for path, text in _reading_facts(OmegaConf.to_container(cfg, resolve=False)):
        if path.startswith("dataset."):
            raise ConfigError(
                f"{path}: ${{facts...}} is known only once the data is loaded, so the dataset's "
                "settings cannot read it; the model, loss, optimizer, scheduler and metrics can"
            )
        for name in re.findall(r"\$\{facts\.(\w+)", text):
            if name not in FACT_NAMES:
                typed, what = f"{path}=${{facts.{name}}}", f"facts has no {name!r}"
                raise ConfigError(unknown_name(typed, what, name, FACT_NAMES, "it has"))
        OmegaConf.update(pending, path, None, merge=False)
    return pending


def _reading_facts(node: Any, path: str = ""):
    """(dotted path, text) of each value that reads `${facts.…}`."""
    if isinstance(node, str):
        if "${facts." in node:
            yield path, node
        return
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _reading_facts(value, f"{path}.{key}" if path else str(key))


def check_config(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Everything that can be checked before torch is imported."""
    cfg = facts_pending(cfg)
    check_pairing(cfg, choices)
    check_known_keys(cfg)
    unset = sorted(OmegaConf.missing_keys(cfg))
    if unset:
        raise ConfigError(f"{unset[0]} is required and not set: add {unset[0]}=... to the command line")
    check_values(cfg)
    if len(cfg.dataset.get("delimiter", ",")) != 1 and cfg.dataset.delimiter != "\\t":  # \t: a tab
        raise ConfigError(
            f"dataset.delimiter={cfg.dataset.delimiter!r} must be one character, e.g. ';' or '\\t' (tab)"
        )
    if not DEVICE.fullmatch(cfg.trainer.device):
        raise ConfigError(
            f"trainer.device={cfg.trainer.device} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
        )
    fractions = cfg.dataset.get("val_fraction", 0) + cfg.dataset.get("test_fraction", 0)
    if fractions >= 1:
        raise ConfigError(
            f"dataset.val_fraction + dataset.test_fraction = {fractions:g} leaves no training "
            "data; keep the sum below 1 (e.g. 0.1 and 0.1)"
        )
    metrics.user_metric_specs(OmegaConf.to_container(cfg.metrics, resolve=True))
    task = declared_task(cfg.model)
    if task is not None:
        check_task_settings(cfg, task, choices)


def doubtful_settings(cfg: DictConfig) -> list[str]:
    """Settings that are valid but almost surely not meant: each a warning that names the fix."""
    model = cfg.model
    if (
        model.get("freeze_backbone")
        and not model.get("pretrained", True)
        and model.get("weights_path") is None
    ):
        return [
            "model.freeze_backbone=true with model.pretrained=false trains only the new head on a "
            "backbone of random weights; use model.pretrained=true (ImageNet weights) or "
            "model.weights_path=FILE, or model.freeze_backbone=false to train the whole network"
        ]
    return []


def declared_task(model_cfg: DictConfig) -> Optional[str]:
    """What a model of dlrun's does, from its schema; None for a model of the user's, whose class
    says so once it is imported."""
    schema = OmegaConf.get_type(model_cfg)
    if not dataclasses.is_dataclass(schema):
        return None
    task = getattr(schema, "task", metrics.CLASSIFICATION)
    return getattr(task, "value", task)


def check_pairing(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Refuse a model and a dataset of dlrun's that cannot train together, naming what would fit."""
    reads = getattr(OmegaConf.get_type(cfg.model), "reads", None)
    kind = getattr(OmegaConf.get_type(cfg.dataset), "kind", None)
    if reads is None or kind is None or kind in reads:
        return
    model, dataset = choices.get("model", "?"), choices.get("dataset", "?")
    fitting = sorted(name for name, node in OPTIONS["model"].items() if kind in schema_of(node).reads)
    raise ConfigError(
        f"model={model} cannot train on dataset={dataset}: it reads "
        f"{' or '.join(Kind(k).value for k in reads)} data, and {dataset} is {Kind(kind).value} data; "
        f"models that fit {dataset}: {', '.join(fitting)}"
    )


def check_task_settings(cfg: DictConfig, task: str, choices: dict[str, str]) -> None:
    """The settings that depend on what the model does: the loss, and the metrics monitored."""
    fits = getattr(OmegaConf.get_type(cfg.loss), "fits", None)
    if fits is not None and task not in fits:
        fitting = sorted(name for name, node in OPTIONS["loss"].items() if task in schema_of(node).fits)
        raise ConfigError(
            f"loss={choices.get('loss', '?')} does not fit model={choices.get('model', '?')}, which does "
            f"{task}; losses that fit: {', '.join(fitting)}"
        )
    extra = [spec.name for spec in metrics.user_metric_specs(OmegaConf.to_container(cfg.metrics))]
    for name in extra:
        needs = getattr(metrics.BUILT_IN.get(name), "task", None)
        if needs not in (None, task):
            raise ConfigError(f"metrics: {name} measures {needs}, and this model does {task}")
    measured = metrics.validation_tags(task, extra)
    for key, value in (
        ("trainer.monitor", cfg.trainer.monitor),
        ("trainer.early_stopping.monitor", cfg.trainer.early_stopping.monitor),
        ("scheduler.monitor", cfg.scheduler.get("monitor", AUTO)),
    ):
        if value != AUTO and value not in measured:
            raise ConfigError(
                f"{key}={value} is not measured by this run; valid: auto, {', '.join(measured)}"
            )


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Every key is a setting its schema knows: Hydra's `+key=value` adds keys past the schema,
    and a misspelt one would otherwise be accepted and ignored. (A node without a schema, such
    as your own model's, takes any key.)"""
    schema = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        full = f"{path}{key}"
        if known is not None and key not in known:
            scope = f"in {path.rstrip('.')}" if path else "at the top level"
            choices = sorted(name for name in known if not name.startswith("_"))
            raise ConfigError(
                unknown_name(full, f"no setting {key!r} {scope}", str(key), choices, "settings")
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{full}.")


def check_values(node: DictConfig, path: str = "") -> None:
    """Every value of a field that declares its valid values (schema: within, each_within,
    one_of) holds one of them; nodes below are checked the same way."""
    schema = OmegaConf.get_type(node)
    declared = (
        {f.name: f.metadata for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    )
    for key in node.keys():
        child = node._get_node(key)
        if child._is_missing():
            continue
        full = f"{path}{key}"
        if isinstance(child, DictConfig):
            if not child._is_none():
                check_values(child, f"{full}.")
        elif declared.get(key):
            value = node[key]
            check_value(
                full, OmegaConf.to_container(value) if isinstance(value, ListConfig) else value, declared[key]
            )


def check_value(key: str, value: Any, rules: dict) -> None:
    if value is None:
        return
    if rules.get("auto"):
        if value == AUTO:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{key}={value} is not valid: give a whole number, or auto (scaled to the data)"
            )
    if "bounds" in rules and not within(value, rules["bounds"]):
        raise ConfigError(f"{key}={value} is out of range: it must lie in {rules['bounds']}")
    if "each" in rules and not all(within(item, rules["each"]) for item in value):
        raise ConfigError(f"{key}={list(value)} is out of range: each value must lie in {rules['each']}")
    if "choices" in rules:
        valid = [choice.value for choice in rules["choices"]]
        if str(value) not in valid:
            raise ConfigError(f"{key}={value} is not valid; valid: {', '.join(valid)}")


def within(value: float, bounds: str) -> bool:
    """within(0.5, "[0, 1)") -> True; "(" and ")" leave the bound itself out."""
    low, high = (float(part) for part in bounds[1:-1].split(","))
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[-1] == "]" else value < high
    return above and below and not math.isnan(value)
