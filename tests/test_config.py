"""The config tree: every option composes, builds its object, and bad input fails early."""

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlrun import cli
from dlrun.config import schema
from dlrun.engine.build import build_loss, build_model, build_optimizer, build_scheduler
from dlrun.config.catalog import MODELS
from dlrun.data.facts import Facts

CONFIG_DIR = Path(cli.config_dir())
GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler", "trainer", "logger")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def make_config(*overrides: str):
    cli._register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_against_its_schema(group, option):
    cfg = make_config(f"{group}={option}")
    node = cfg[group]
    # the schema is attached: an unknown key cannot be added by accident
    with pytest.raises(Exception):
        node.not_a_setting = 1
    assert OmegaConf.to_container(node, resolve=True, throw_on_missing=False) is not None


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


def test_model_schemas_mirror_the_model_keyword_arguments():
    """A setting in a model's schema must be a keyword argument of its class, and back."""
    facts_arguments = {"in_shape", "num_classes", "vocab_size"}
    for arch, node in schema.SCHEMAS["model"].items():
        settings = {f.name for f in fields(node)} - {"arch"}
        parameters = set(inspect.signature(MODELS[arch].load()).parameters) - facts_arguments
        assert settings == parameters, arch


def test_a_wrong_type_fails_at_compose_time():
    with pytest.raises(Exception, match="trainer.epochs"):
        make_config("trainer.epochs=lots")
    with pytest.raises(Exception, match="model.dropout"):
        make_config("model.dropout=[1]")


def test_a_misspelt_key_fails_at_compose_time():
    with pytest.raises(Exception, match="epochz"):
        make_config("trainer.epochz=3")
