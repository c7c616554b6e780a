"""The config tree: every option composes, builds its object, and bad input fails early."""

import inspect
from dataclasses import MISSING, fields
from importlib import import_module
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from dlrun.config import schema
from dlrun.config.catalog import MODELS
from dlrun.config.checks import check_config
from dlrun.data.facts import Facts
from dlrun.engine.build import build_loss, build_model, build_optimizer, build_scheduler
from dlrun.errors import ConfigError
from tests.helpers import CONFIG_DIR, compose_config, options_of

GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler", "trainer", "logger")
make_config = compose_config
options = options_of


def schema_of(group: str, option: str) -> type:
    """The dataclass an option's YAML starts from (its defaults list), or the group's own schema."""
    entries = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text()) or {}
    for entry in entries.get("defaults", []):
        if isinstance(entry, str) and entry.startswith(f"/schema_{group}_"):
            return schema.SCHEMAS[group][entry.split("@")[0][len(f"/schema_{group}_") :]]
    return {"trainer": schema.Trainer, "logger": schema.Logger}[group]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_against_its_schema(group, option):
    node = make_config(f"{group}={option}")[group]
    assert OmegaConf.get_type(node) is schema_of(group, option)
    with pytest.raises(ConfigAttributeError):  # the schema is attached: no key can be added by accident
        node.not_a_setting = 1


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_an_option_file_writes_only_what_differs_from_its_schema(group, option):
    """One source for each default: the schema dataclass."""
    written = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text()) or {}
    written.pop("defaults", None)
    defaults = {f.name: default_of(f) for f in fields(schema_of(group, option))}
    repeated = [key for key, value in written.items() if key in defaults and defaults[key] == value]
    assert repeated == []


def default_of(field):
    return (
        field.default_factory()
        if field.default is MISSING and field.default_factory is not MISSING
        else field.default
    )


def test_a_setting_the_chosen_loss_does_not_use_is_refused():
    assert make_config("loss=cross_entropy", "loss.label_smoothing=0.3").loss.label_smoothing == 0.3
    with pytest.raises(Exception, match="label_smoothing"):
        make_config("loss=nll", "loss.label_smoothing=0.3")


def test_the_default_is_the_embedded_wine_data_with_an_mlp():
    cfg = make_config()
    assert cfg.dataset.loader == "csv" and Path(cfg.dataset.path).name == "wine.csv"
    assert Path(cfg.dataset.path).is_file()
    assert cfg.model.arch == "mlp" and cfg.optimizer._target_ == "torch.optim.Adam"


def facts_for(kind: str) -> Facts:
    if kind == "text":
        return Facts("text", "classification", [12], 3, ["a", "b", "c"], vocab="abcdefgh")
    if kind == "table":
        return Facts("table", "classification", [13], 3, ["1", "2", "3"])
    return Facts("image", "classification", [1, 28, 28], 10, [str(i) for i in range(10)], [0.5], [0.5])


def example_input(facts: Facts) -> torch.Tensor:
    if facts.kind == "text":
        return torch.randint(1, facts.vocab_size, (2, facts.input_shape[0]))
    return torch.rand(2, *facts.input_shape)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_builds_and_runs_a_batch(option):
    extra = ["model.pretrained=false"] if option == "resnet18" else []  # no downloads in tests
    cfg = make_config(f"model={option}", *extra)
    entry = MODELS[cfg.model.arch]
    facts = facts_for(entry.inputs[-1] if "image" not in entry.inputs else "image")
    model = build_model(cfg.model, facts, "cross_entropy").eval()
    with torch.no_grad():
        out = model(example_input(facts))
    expected = (2, facts.num_classes) if entry.task == "classification" else (2, *facts.input_shape)
    assert tuple(out.shape) == expected


@pytest.mark.parametrize("option", options("loss"))
def test_every_loss_builds_and_computes(option):
    cfg = make_config(f"loss={option}")
    loss = build_loss(cfg.loss, "classification", num_classes=4)
    value = loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    assert value.ndim == 0 and torch.isfinite(value)


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_builds_with_its_settings(option):
    cfg = make_config(f"optimizer={option}", "optimizer.lr=0.123")
    optimizer = build_optimizer(cfg.optimizer, torch.nn.Linear(3, 2))
    assert type(optimizer).__name__.lower() == option.replace("rmsprop", "rmsprop")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.123)


@pytest.mark.parametrize("option", options("scheduler"))
def test_every_scheduler_builds(option):
    cfg = make_config(f"scheduler={option}")
    optimizer = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    scheduler = build_scheduler(cfg.scheduler, optimizer, epochs=4, steps_per_epoch=5, monitor_mode="max")
    assert (scheduler is None) == (option == "none")


def model_class(arch: str):
    module, attribute = MODELS[arch].target.split(":")
    return getattr(import_module(module), attribute)


def plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("arch", sorted(schema.SCHEMAS["model"]))
def test_a_model_schema_and_its_class_agree_on_settings_and_defaults(arch):
    """Every setting of a model's schema is a keyword argument of its class with the same
    default, and back; only the facts from the data (in_shape, ...) have none."""
    facts_arguments = {"in_shape", "num_classes", "vocab_size"}
    settings = {f.name: default_of(f) for f in fields(schema.SCHEMAS["model"][arch]) if f.name != "arch"}
    parameters = {
        name: plain(p.default)
        for name, p in inspect.signature(model_class(arch)).parameters.items()
        if name not in facts_arguments
    }
    assert settings == parameters


def test_a_setting_a_model_does_not_take_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match="model.colour: dlrun.models.mlp.MLP does not take 'colour'; it accepts: hidden_sizes",
    ):
        build_model(OmegaConf.create({"arch": "mlp", "colour": "red"}), facts_for("table"), "cross_entropy")


def test_a_type_error_inside_a_model_is_a_bug_and_shows_as_one():
    """Wrong settings are refused before the call; what the constructor itself raises is not
    turned into a config error that would hide the bug."""
    with pytest.raises(TypeError):
        build_model(
            OmegaConf.create({"arch": "mlp", "hidden_sizes": "not a list"}),
            facts_for("table"),
            "cross_entropy",
        )


def test_a_wrong_type_fails_before_any_data_is_read():
    with pytest.raises(ConfigError, match="trainer.epochs=lots is not valid: give a whole number, or auto"):
        check_config(make_config("trainer.epochs=lots"), {})
    with pytest.raises(ConfigError, match="trainer.batch_size=2.5 is not valid"):
        check_config(make_config("trainer.batch_size=2.5"), {})
    with pytest.raises(Exception, match="model.dropout"):
        make_config("model.dropout=[1]")


def test_a_misspelt_key_fails_at_compose_time():
    with pytest.raises(Exception, match="epochz"):
        make_config("trainer.epochz=3")


def test_one_list_of_bookkeeping_settings_serves_resume_hparams_and_sweep_folder_names():
    """schema.BOOKKEEPING: what a resumed run may change, what HPARAMS leaves out, and what sweep
    job folders are not named after."""
    from dlrun.checkpoints.resume import check_resumable
    from dlrun.config.resolvers import short_overrides
    from dlrun.errors import CheckpointError
    from dlrun.reporting.tensorboard import hparam_values

    cfg = make_config("trainer.resume_force=false")
    saved = OmegaConf.to_container(cfg, resolve=True)
    changed = make_config("trainer.device=cpu", "trainer.num_threads=1", "logger.graph=false")
    check_resumable(saved, changed, Path("last.pt"))  # bookkeeping only: accepted
    with pytest.raises(CheckpointError, match="optimizer.lr"):
        check_resumable(saved, make_config("optimizer.lr=0.5"), Path("last.pt"))

    assert not [key for key in hparam_values(cfg, {}) if key.startswith(schema.BOOKKEEPING)]

    overrides = "dataset.root=/d,optimizer.lr=0.01,trainer.device=cpu,hydra.launcher.n_jobs=2"
    assert short_overrides(overrides) == "lr-0.01"
