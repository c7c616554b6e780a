"""The short config view a run starts with: the option chosen in each group and only the settings
that differ from that option's defaults. The whole tree is one setting away
(`terminal.config=full`) and always in the run's config.yaml; at the start of a run it was 77
lines that pushed epoch 1 off the screen to say mostly defaults."""

from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlrun.config.schema import OPTIONS, Config, path_settings, schema_of

# how long the run trains: shown always, as `auto` decides them from the data
ALWAYS = ("trainer.epochs", "trainer.batch_size")
GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler", "trainer")
NOT_SHOWN = ("facts", "terminal", "optimized_metric")  # the data line says the facts


def brief(cfg: DictConfig, choices: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, changed settings) for each group, then the top-level settings that changed:
    [("model (mlp)", "hidden_sizes=[64, 32] dropout=0.2"), ("trainer (default)", "epochs=143 ...")]."""
    rows = [_group_row(cfg, group, choices.get(group)) for group in GROUPS if group in cfg]
    for name, settings in (cfg.get("logger") or {}).items():
        rows.append(_option_row(f"logger ({name})", f"logger.{name}", settings, OPTIONS["logger"].get(name)))
    if not cfg.get("logger"):
        rows.append(("logger (none)", ""))
    top = _changed(_flat(cfg, skip=(*GROUPS, "logger", *NOT_SHOWN)), _flat(OmegaConf.structured(Config)))
    if top:
        rows.append(("", " ".join(top)))
    return rows


def _group_row(cfg: DictConfig, group: str, choice: Any) -> tuple[str, str]:
    label = f"{group} ({choice})" if choice else group  # no choices: a run started without Hydra
    return _option_row(label, group, cfg[group], OPTIONS[group].get(choice))


def _option_row(label: str, prefix: str, settings: DictConfig, schema: Any) -> tuple[str, str]:
    values = _flat(settings)
    if schema_of(schema) is None:  # an option of the user's: every setting is theirs
        target = values.pop("_target_", None)
        return (f"{label[:-1]}: {target})" if target else label, " ".join(_pairs(values)))
    defaults = _flat(OmegaConf.structured(schema))
    keep = {key for key in values if f"{prefix}.{key}" in (*ALWAYS, *path_settings())}
    return label, " ".join(_changed(values, defaults, keep))


def _changed(values: dict[str, Any], defaults: dict[str, Any], keep: set = frozenset()) -> list[str]:
    return _pairs({key: value for key, value in values.items() if key in keep or defaults.get(key) != value})


def _pairs(values: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items() if key != "_partial_" and value is not None]


def _flat(node: DictConfig, skip: tuple = ()) -> dict[str, Any]:
    """{"early_stopping.patience": 5, ...}: nested settings as dotted keys, values as plain Python."""
    plain = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}{key}.", child)
        else:
            flat[prefix[:-1]] = value

    for key, value in plain.items():
        if key not in skip:
            walk(f"{key}.", value)
    return flat
