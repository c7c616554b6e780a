"""What dlrun can build, by name, and the rules of each task, without importing torch.

The config names an `arch` (model) or a `loader` (dataset); these tables say which of dlrun's own
classes that means and which pairs can work together, so a mismatch is reported in a second
instead of after torch has loaded. Nothing here is ever taken from a checkpoint or a config as
code: an unknown name is an error.
"""

from dataclasses import dataclass
from typing import Optional

from dlrun.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    target: str  # "module:attribute" inside dlrun
    inputs: tuple[str, ...] = ()  # kinds of data a model reads: image | table | text
    task: str = "classification"  # what a model does: classification | reconstruction


MODELS = {
    "linear": Entry("dlrun.models.linear:LogisticRegression", ("image", "table")),
    "mlp": Entry("dlrun.models.mlp:MLP", ("image", "table")),
    "lenet": Entry("dlrun.models.lenet:LeNet5", ("image",)),
    "cnn": Entry("dlrun.models.convnet:ConvNet", ("image",)),
    "row_rnn": Entry("dlrun.models.row_rnn:RowRNN", ("image",)),
    "char_rnn": Entry("dlrun.models.char_rnn:CharRNN", ("text",)),
    "resnet18": Entry("dlrun.models.resnet:resnet18_classifier", ("image",)),
    "autoencoder": Entry("dlrun.models.autoencoder:LinearAutoencoder", ("image",), "reconstruction"),
    "conv_autoencoder": Entry("dlrun.models.autoencoder:ConvAutoencoder", ("image",), "reconstruction"),
}

# kind: what the data is, so the models that read it can be named before anything is loaded
DATASETS = {
    "csv": Entry("dlrun.data.tabular:load_csv", ("table",)),
    "mnist": Entry("dlrun.data.vision:load_torchvision", ("image",)),
    "fashion_mnist": Entry("dlrun.data.vision:load_torchvision", ("image",)),
    "cifar10": Entry("dlrun.data.vision:load_torchvision", ("image",)),
    "names": Entry("dlrun.data.names:load_names", ("text",)),
    "imagefolder": Entry("dlrun.data.imagefolder:load_imagefolder", ("image",)),
}

# which losses make sense for which task
LOSSES = {
    "cross_entropy": ("classification",),
    "nll": ("classification",),
    "bce_with_logits": ("classification",),
    "mse": ("classification", "reconstruction"),
}


# The one table of task rules, read by the checks, the loop's reports, TensorBoard and the
# sweepers: what a validation measures besides its loss (and monitors by default), and which way
# each metric gets better. What a task shows in TensorBoard follows from what it measures.
TASK_METRIC = {"classification": "acc", "reconstruction": "mse"}
MODES = {"acc": "max", "loss": "min", "mse": "min"}


def model_entry(arch: str) -> Entry:
    return _lookup(MODELS, arch, "model.arch")


def dataset_entry(loader: str) -> Entry:
    return _lookup(DATASETS, loader, "dataset.loader")


def _lookup(table: dict[str, Entry], name: str, key: str) -> Entry:
    if name not in table:
        raise ConfigError(f"{key}={name!r} is not known; valid: {', '.join(sorted(table))}")
    return table[name]


def data_kind(loader: str) -> str:
    return dataset_entry(loader).inputs[0]


def task_of(arch: str) -> str:
    return model_entry(arch).task


def val_metrics(task: str) -> list[str]:
    """What a validation of this task measures."""
    return ["val/loss", f"val/{TASK_METRIC[task]}"]


def monitored(setting: str, task: str) -> str:
    """The metric that decides best.pt: `trainer.monitor`, or the task's own when it is auto."""
    return f"val/{TASK_METRIC[task]}" if setting == "auto" else setting


def mode_of(metric: str) -> str:
    """max or min: which way `metric` ("val/acc", "test/loss", ...) gets better."""
    name = metric.rsplit("/", 1)[-1]
    if name not in MODES:
        valid = ", ".join(f"{split}/{name}" for split in ("val", "test") for name in MODES)
        raise ConfigError(f"{metric} is not a metric dlrun reports; valid: {valid}")
    return MODES[name]


def check_pairing(arch: str, loader: str, model_option: str, dataset_option: str) -> None:
    """Refuse a model and a dataset of dlrun's that cannot train together, naming what would fit."""
    kind = data_kind(loader)
    entry = model_entry(arch)
    if kind not in entry.inputs:
        fitting = sorted(name for name, e in MODELS.items() if kind in e.inputs)
        raise ConfigError(
            f"model={model_option} cannot train on dataset={dataset_option}: it reads "
            f"{' or '.join(entry.inputs)} data, and {dataset_option} is {kind} data; "
            f"models that fit {dataset_option}: {', '.join(_options(fitting))}"
        )


def check_loss(loss: Optional[str], task: str, model_option: str) -> None:
    """Refuse a named loss that does not fit what the model does (a loss of the user's, named by
    `_target_`, is the user's to choose)."""
    if loss is None:
        return
    if loss not in LOSSES:
        raise ConfigError(f"loss.name={loss!r} is not known; valid: {', '.join(sorted(LOSSES))}")
    if task not in LOSSES[loss]:
        fitting = sorted(name for name, tasks in LOSSES.items() if task in tasks)
        raise ConfigError(
            f"loss={loss} does not fit model={model_option}, which does {task}; "
            f"losses that fit: {', '.join(fitting)}"
        )


def _options(arches: list[str]) -> list[str]:
    # row_rnn is offered to users as three options, one per recurrent cell
    names = []
    for arch in arches:
        names.extend(["rnn", "gru", "lstm"] if arch == "row_rnn" else [arch])
    return names
