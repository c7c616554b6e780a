"""The config tree: every option composes, names code that exists, builds its object, and bad
input fails early, read from the declarations beside each field."""

import inspect
import re
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from dlrun.config import schema
from dlrun.config.checks import check_config, check_values
from dlrun.config.schema import OPTIONS, schema_of
from dlrun.data.facts import Facts
from dlrun.engine.build import build_loss, build_model, build_optimizer, build_schedule
from dlrun.engine.targets import locate
from dlrun.errors import ConfigError
from tests.helpers import CONFIG_DIR, compose_config

make_config = compose_config
GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler", "trainer", "logger")
EVERY_OPTION = [(group, name) for group in GROUPS for name in sorted(OPTIONS[group])]


def node_of(group: str, name: str, cfg=None):
    cfg = cfg or make_config(f"{group}={name}")
    return cfg[group][name] if group == "logger" else cfg[group]


@pytest.mark.parametrize("group,name", EVERY_OPTION)
def test_every_option_composes_as_its_schema(group, name):
    node = node_of(group, name)
    assert OmegaConf.get_type(node) is schema_of(OPTIONS[group][name])
    with pytest.raises(ConfigAttributeError):  # the schema is attached: no key can be added by accident
        node.not_a_setting = 1


@pytest.mark.parametrize("group,name", [(g, n) for g, n in EVERY_OPTION if g != "trainer" and n != "none"])
def test_every_option_names_code_that_exists(group, name):
    """A renamed class or function fails here, not in a user's run."""
    target = schema_of(OPTIONS[group][name])._target_
    assert callable(locate(target, f"{group}._target_"))


def test_only_presets_are_yaml_files():
    """Options are the schema's dataclasses; configs/ holds presets and Hydra's own settings."""
    folders = sorted(path.name for path in CONFIG_DIR.iterdir() if path.is_dir())
    assert folders == ["experiment", "hparams_search", "hydra"]


def default_of(field):
    if field.default is MISSING and field.default_factory is not MISSING:
        return field.default_factory()
    return field.default


def code_default(value):
    """A default only the config can give (an environment variable's, `${...}`) is none in code."""
    return "???" if isinstance(value, str) and value.startswith("${") else plain(value)


def plain(value):
    return list(value) if isinstance(value, tuple) else value


FACT_ARGUMENTS = {"in_shape", "num_classes", "vocab_size", "class_names", "options", "run_folder", "terminal"}


@pytest.mark.parametrize("group", ["model", "dataset", "logger"])
def test_a_schema_and_its_code_agree_on_settings_and_defaults(group):
    """Every setting of a model's, dataset's or logger's schema is a keyword argument of the code
    it names with the same default, and back; only what the run provides (the data's facts, the
    load options, the run folder) is not a setting. Required settings have no default on either side."""
    for node in {schema_of(node) for node in OPTIONS[group].values()}:
        settings = {f.name: default_of(f) for f in fields(node) if f.name not in ("_target_", "_recursive_")}
        settings.pop("augment", None)  # dlrun's own key: images held in memory are augmented by dlrun
        code = locate(node._target_, "_target_")
        parameters = {
            name: plain(p.default) if p.default is not inspect.Parameter.empty else "???"
            for name, p in inspect.signature(code).parameters.items()
            if name not in FACT_ARGUMENTS
        }
        settings = {name: code_default(value) for name, value in settings.items()}
        assert settings == parameters, node.__name__


def test_the_default_is_the_embedded_wine_data_with_an_mlp():
    cfg = make_config()
    assert cfg.dataset._target_ == "dlrun.data.tabular.load_csv" and Path(cfg.dataset.path).name == "wine.csv"
    assert Path(cfg.dataset.path).is_file()
    assert cfg.model._target_ == "dlrun.models.mlp.MLP" and cfg.optimizer._target_ == "torch.optim.Adam"
    assert list(cfg.logger) == ["tensorboard"]


def test_a_setting_the_chosen_loss_does_not_use_is_refused():
    assert make_config("loss=cross_entropy", "loss.label_smoothing=0.3").loss.label_smoothing == 0.3
    with pytest.raises(Exception, match="label_smoothing"):
        make_config("loss=nll", "loss.label_smoothing=0.3")


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


@pytest.mark.parametrize("name", sorted(OPTIONS["model"]))
def test_every_model_option_builds_and_runs_a_batch(name):
    extra = ["model.pretrained=false"] if name == "resnet18" else []  # no downloads in tests
    cfg = make_config(f"model={name}", *extra)
    declared = schema_of(OPTIONS["model"][name])
    facts = facts_for(declared.reads[0].value)
    model = build_model(cfg.model, facts).eval()
    with torch.no_grad():
        out = model(example_input(facts))
    task = getattr(declared, "task", schema.Task.CLASSIFICATION)
    expected = (2, facts.num_classes) if task == schema.Task.CLASSIFICATION else (2, *facts.input_shape)
    assert tuple(out.shape) == expected


@pytest.mark.parametrize("name", sorted(OPTIONS["loss"]))
def test_every_loss_builds_and_computes_on_class_labels(name):
    cfg = make_config(f"loss={name}")
    loss = build_loss(cfg.loss, facts_for("table"))
    value = loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    assert value.ndim == 0 and torch.isfinite(value)


def test_nll_takes_logits_or_log_probabilities_alike():
    """loss=nll applies log-softmax itself, which changes nothing for a model that already ends
    in log-softmax: the model needs no wrapping, and its weights keep their names."""
    loss = build_loss(make_config("loss=nll").loss, facts_for("table"))
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(loss(logits, labels), expected)
    assert torch.allclose(loss(logits.log_softmax(dim=1), labels), expected)


@pytest.mark.parametrize("name", sorted(OPTIONS["optimizer"]))
def test_every_optimizer_builds_with_its_settings(name):
    cfg = make_config(f"optimizer={name}", "optimizer.lr=0.123")
    optimizer = build_optimizer(cfg.optimizer, torch.nn.Linear(3, 2))
    assert type(optimizer).__name__.lower() == name
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.123)


@pytest.mark.parametrize("name", sorted(OPTIONS["scheduler"]))
def test_every_scheduler_builds_with_when_it_steps(name):
    cfg = make_config(f"scheduler={name}")
    optimizer = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    schedule = build_schedule(cfg.scheduler, optimizer, epochs=4, steps_per_epoch=5, monitor="val/acc")
    assert (schedule.scheduler is None) == (name == "none")
    assert schedule.per_step == (name == "onecycle")
    assert schedule.metric == ("val/acc" if name == "plateau" else None)


def test_a_setting_a_model_does_not_take_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match="model.colour: dlrun.models.mlp.MLP does not take 'colour'; it accepts: hidden_sizes",
    ):
        from dlrun.engine.build import check_targets

        check_targets(make_config("+model.colour=red"))


def test_a_type_error_inside_a_model_is_a_bug_and_shows_as_one():
    """Wrong settings are refused before the call; what dlrun's own constructor raises is not
    turned into a config error that would hide the bug."""
    with pytest.raises(TypeError):
        build_model(
            OmegaConf.create({"_target_": "dlrun.models.mlp.MLP", "hidden_sizes": "not a list"}),
            facts_for("table"),
        )


# -- valid values, declared beside each field -------------------------------------------------------


def bounded_fields():
    """(dotted key, bounds, a value outside them) of every field that declares bounds."""
    found = {}
    roots = [
        (f"{group}={name}", group, schema_of(node))
        for group, name in EVERY_OPTION
        for node in [OPTIONS[group][name]]
    ]
    for override, group, node in roots:
        prefix = f"logger.{override.split('=')[1]}" if group == "logger" else group
        for field in fields(node):
            bounds = field.metadata.get("bounds") or field.metadata.get("each")
            if bounds and f"{prefix}.{field.name}" not in found:
                found[f"{prefix}.{field.name}"] = (override, bounds, "each" in field.metadata)
    for field in fields(schema.EarlyStopping):
        if field.metadata.get("bounds"):
            found[f"trainer.early_stopping.{field.name}"] = (
                "trainer=default",
                field.metadata["bounds"],
                False,
            )
    found["seed"] = ("trainer=default", "[0, inf)", False)
    return sorted(found.items())


def outside(bounds: str):
    low = float(bounds[1:-1].split(",")[0])
    return int(low) - 1 if bounds[0] == "[" else low


@pytest.mark.parametrize(
    "key,declared", bounded_fields(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_every_bounded_setting_refuses_a_value_outside_its_bounds(key, declared):
    option, bounds, each = declared
    value = f"[{outside(bounds)}]" if each else outside(bounds)
    cfg = make_config(option, f"{key}={value}")
    with pytest.raises(
        ConfigError, match=rf"^{key}=.* is out of range: (it|each value) must lie in {re.escape(bounds)}$"
    ):
        check_values(cfg)


def closed_fields():
    found = {}
    for group, name in EVERY_OPTION:
        node = schema_of(OPTIONS[group][name])
        prefix = f"logger.{name}" if group == "logger" else group
        for field in fields(node):
            if "choices" in field.metadata:
                found.setdefault(f"{prefix}.{field.name}", (f"{group}={name}", field.metadata["choices"]))
    for key, node in (("terminal", schema.Terminal), ("trainer.early_stopping", schema.EarlyStopping)):
        for field in fields(node):
            if "choices" in field.metadata:
                found[f"{key}.{field.name}"] = ("trainer=default", field.metadata["choices"])
    return sorted(found.items())


@pytest.mark.parametrize(
    "key,declared", closed_fields(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_every_closed_setting_refuses_another_value_and_lists_the_valid_ones(key, declared):
    option, choices = declared
    cfg = make_config(option, f"{key}=nonsense")
    valid = ", ".join(choice.value for choice in choices)
    with pytest.raises(ConfigError, match=f"^{key}=nonsense is not valid; valid: {valid}$"):
        check_values(cfg)


def test_the_closed_sets_are_the_ones_the_code_knows():
    """The names the schema accepts are the names the models and the runtime can build."""
    from dlrun.data.vision import SOURCES
    from dlrun.engine.runtime import Precision
    from dlrun.models.layers import ACTIVATIONS
    from dlrun.models.row_rnn import CELLS

    values = lambda choices: {choice.value for choice in choices}  # noqa: E731
    assert values(schema.Activation) == set(ACTIVATIONS)
    assert values(schema.Cell) == set(CELLS)
    assert values(schema.Precision) == set(Precision.DTYPES)
    assert values(schema.TorchvisionSet) == set(SOURCES)
    assert all(issubclass(choices, Enum) for _, (_, choices) in closed_fields())


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


def test_the_path_settings_are_those_the_schema_marks():
    assert set(schema.path_settings()) == {
        "dataset.root",
        "dataset.path",
        "model.weights_path",
        "trainer.resume",
        "ckpt",
        "output",
    }


def test_one_list_of_bookkeeping_settings_serves_resume_hparams_and_sweep_folder_names():
    """schema.BOOKKEEPING: what a resumed run may change, what HPARAMS leaves out, and what sweep
    job folders are not named after."""
    from dlrun.checkpoints.resume import check_resumable
    from dlrun.config.resolvers import short_overrides
    from dlrun.errors import CheckpointError
    from dlrun.reporting.tensorboard import hparam_values

    cfg = make_config("trainer.resume_force=false")
    saved = OmegaConf.to_container(cfg, resolve=True)
    changed = make_config(
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "logger.tensorboard.graph=false",
        "terminal.progress=off",
    )
    check_resumable(saved, changed, Path("last.pt"))  # bookkeeping only: accepted
    check_resumable(saved, make_config("logger=[tensorboard,csv]"), Path("last.pt"))
    with pytest.raises(CheckpointError, match="optimizer.lr"):
        check_resumable(saved, make_config("optimizer.lr=0.5"), Path("last.pt"))

    assert not [key for key in hparam_values(saved, {}) if key.startswith(schema.BOOKKEEPING)]

    overrides = "dataset.root=/d,optimizer.lr=0.01,trainer.device=cpu,hydra.launcher.n_jobs=2"
    assert short_overrides(overrides) == "lr-0.01"


@pytest.mark.parametrize(
    "settings,doubted",
    [
        (["model.pretrained=false", "model.freeze_backbone=true"], True),
        (["model.pretrained=true", "model.freeze_backbone=true"], False),
        (["model.pretrained=false", "model.freeze_backbone=true", "model.weights_path=w.pt"], False),
        (["model.pretrained=false"], False),
    ],
)
def test_a_frozen_random_backbone_is_doubted(settings, doubted):
    from dlrun.config.checks import doubtful_settings

    cfg = compose_config("dataset=imagefolder", "dataset.root=photos", "model=resnet18", *settings)
    assert bool(doubtful_settings(cfg)) == doubted


def test_every_fact_a_config_can_read_is_filled_in_from_the_data():
    from dlrun.config.schema import FACT_NAMES
    from dlrun.data.facts import Facts

    image = Facts("image", "classification", [1, 28, 28], 10, [str(i) for i in range(10)]).for_config()
    assert set(FACT_NAMES) <= set(image) and image["channels"] == 1 and image["in_shape"] == [1, 28, 28]
    table = Facts("table", "classification", [13], 3, ["a", "b", "c"]).for_config()
    assert table["channels"] is None and table["vocab_size"] is None and table["num_classes"] == 3
