"""The metrics table: each metric dlrun reports, defined once, and what each task measures.

A metric is its name, which way is better, how it is shown, and how it adds up: `sums` turns one
batch's outputs and targets into a tuple of sums (tensors or numbers) that add up over batches and
over the processes of a distributed run, and `value` turns the total into the figure. So a metric
is exact over any batching, and under torchrun it is summed, not an average of averages. The config
checks, the training loop, the terminal, the loggers, metrics.json and dlrun-eval all read this
table; a metric of the user's (`metrics=[{name, _target_, better}]`) joins it.

This module imports no torch: the config checks read names and directions before torch loads, and
the functions below use only tensor methods.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

from dlrun.errors import ConfigError, WrongReturn

MAX, MIN = "max", "min"
CLASSIFICATION, RECONSTRUCTION = "classification", "reconstruction"
TOP5_FROM = 10  # classes from which a run measures top-5 accuracy unless metrics=[...] chooses


@dataclass(frozen=True)
class Metric:
    name: str  # tagged val/<name>, test/<name>, train/<name>
    better: str  # max | min
    percent: bool = False  # 0.883 is shown as 88.30%
    sums: Optional[Callable[[Any, Any], tuple]] = None  # (outputs, targets) -> the batch's sums
    value: Optional[Callable[[tuple], float]] = None  # the summed tuple -> the metric
    task: Optional[str] = None  # the task whose outputs it reads (None: any, as a user's)

    def shown(self, value: Optional[float]) -> str:
        if value is None:
            return "-"
        return f"{value:.2%}" if self.percent else f"{value:.4f}"


def _ratio(sums: tuple) -> float:
    numerator, count = sums
    return float(numerator) / max(float(count), 1.0)


def _correct(outputs, labels) -> tuple:
    return outputs.argmax(dim=1).eq(labels).sum(), len(labels)


def _squared_error(outputs, inputs) -> tuple:
    return (outputs.float() - inputs.float()).pow(2).sum(), inputs.numel()


def _in_top5(outputs, labels) -> tuple:
    best = outputs.topk(min(5, outputs.shape[1]), dim=1).indices
    return best.eq(labels.unsqueeze(1)).any(dim=1).sum(), len(labels)


def _class_counts(outputs, labels) -> tuple:
    """Per class: correct predictions, predictions, true samples (they add up over batches)."""
    classes = outputs.shape[1]
    predicted = outputs.argmax(dim=1)
    right = labels[predicted.eq(labels)]
    return (
        right.bincount(minlength=classes),
        predicted.bincount(minlength=classes),
        labels.bincount(minlength=classes),
    )


def _macro_f1(sums: tuple) -> float:
    """The mean over the classes seen (predicted or true) of 2 x correct / (predicted + true)."""
    right, predicted, true = (part.double() for part in sums)
    seen = (predicted + true) > 0
    return float((2 * right[seen] / (predicted + true)[seen]).mean()) if bool(seen.any()) else 0.0


LOSS = Metric("loss", MIN)  # the criterion's own mean, summed as loss x samples
BUILT_IN = {
    metric.name: metric
    for metric in (
        LOSS,
        Metric("acc", MAX, True, _correct, _ratio, CLASSIFICATION),
        Metric("top5", MAX, True, _in_top5, _ratio, CLASSIFICATION),  # the label among the 5 best
        Metric("f1", MAX, False, _class_counts, _macro_f1, CLASSIFICATION),  # macro: classes alike
        Metric("mse", MIN, False, _squared_error, _ratio, RECONSTRUCTION),
    )
}


@dataclass(frozen=True)
class Task:
    """What a model is asked to do decides what its outputs are compared with and what is measured.
    The loop does not care which task it runs."""

    name: str
    measures: tuple[str, ...]  # what a validation measures besides the loss; the first is monitored
    while_training: tuple[str, ...]  # measured on the training batches too (cheap, on the device)
    against_inputs: bool  # the loss and metrics compare the outputs with the inputs (not the labels)
    visuals: tuple[str, ...]  # what a validation keeps to be shown: pr_curves, confusion, reconstructions


TASKS = {
    CLASSIFICATION: Task(
        CLASSIFICATION, ("acc",), ("acc",), against_inputs=False, visuals=("pr_curves", "confusion")
    ),
    RECONSTRUCTION: Task(RECONSTRUCTION, ("mse",), (), against_inputs=True, visuals=("reconstructions",)),
}


def validation_tags(task: str, extra: Iterable[str] = ()) -> list[str]:
    """What a validation of this task reports: val/loss, the task's metrics, then the user's."""
    return [f"val/{name}" for name in ("loss", *TASKS[task].measures, *extra)]


def monitored(setting: str, task: str) -> str:
    """The metric that decides best.pt: `trainer.monitor`, or the task's own when it is auto."""
    return f"val/{TASKS[task].measures[0]}" if setting == "auto" else setting


def better_of(tag: str, table: dict[str, Metric] = BUILT_IN) -> str:
    """max or min: which way `tag` ("val/acc", "test/loss", "val/brier" of the user's) gets better."""
    name = tag.rsplit("/", 1)[-1]
    if name not in table:
        valid = ", ".join(f"{split}/{known}" for split in ("val", "test") for known in table)
        raise ConfigError(f"{tag} is not a metric dlrun reports; valid: {valid}")
    return table[name].better


def shown(name: str, value: Optional[float], table: dict[str, Metric] = BUILT_IN) -> str:
    """A figure as the terminal and dlrun-eval show it: 88.30% for an accuracy, 0.0123 otherwise."""
    metric = table.get(name.rsplit("/", 1)[-1])
    return metric.shown(value) if metric is not None else Metric(name, MAX).shown(value)


# -- the user's own metrics ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """An entry of `metrics=[...]`: a built-in by name, or a function of the user's."""

    name: str
    target: Optional[str] = None  # module.function(outputs, targets) -> the batch's mean
    better: str = MAX
    percent: bool = False


SPEC_KEYS = ("name", "_target_", "better", "percent")


def user_metric_specs(entries: Any) -> list[MetricSpec]:
    """The `metrics` setting read and checked (torch-free, before anything loads)."""
    if not isinstance(entries, list):
        raise ConfigError(
            f"metrics={entries} must be a list: metrics=[{{name: ..., _target_: ..., better: max}}]"
        )
    specs = [_spec(entry) for entry in entries]
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"metrics: {repeated[0]} is given twice; give each metric once")
    return specs


def _spec(entry: Any) -> MetricSpec:
    if isinstance(entry, str):
        if entry not in BUILT_IN or entry == "loss":
            valid = ", ".join(name for name in BUILT_IN if name != "loss")
            raise ConfigError(
                f"metrics: {entry!r} is not a metric dlrun knows; valid: {valid}, or a function of "
                "yours: {name: brier, _target_: mymetrics.brier, better: min}"
            )
        return MetricSpec(entry)
    if not isinstance(entry, dict):
        raise ConfigError(f"metrics: {entry!r} is neither a metric's name nor {{name, _target_, better}}")
    unknown = sorted(set(entry) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"metrics: {unknown[0]!r} is not a setting of a metric; settings: {', '.join(SPEC_KEYS)}"
        )
    name, target = entry.get("name"), entry.get("_target_")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"metrics: {entry} needs a name, a word such as f1 (it is logged as val/<name>)")
    if name in BUILT_IN:
        raise ConfigError(f"metrics: {name} is dlrun's own metric's name; give yours another name")
    if not isinstance(target, str):
        raise ConfigError(
            f"metrics: {name} needs a _target_: the function(outputs, targets) that measures it"
        )
    better = entry.get("better", MAX)
    if better not in (MAX, MIN):
        raise ConfigError(f"metrics: {name}.better={better} is not valid; valid: max, min")
    return MetricSpec(name, target, better, bool(entry.get("percent", False)))


def mean_of(function: Callable, spec: MetricSpec) -> Callable[[Any, Any], tuple]:
    """The sums of a function that gives a batch's mean: mean x samples, and the samples."""

    def sums(outputs, targets) -> tuple:
        count = len(targets)
        mean = function(outputs, targets)
        if not _one_number(mean):  # a type check: a tensor's value is never read here (no sync)
            raise WrongReturn(
                f"your metric {spec.name} ({spec.target}) returned {_described(mean)}, not one number: "
                "it must return the batch's mean, as a float or a tensor of one element"
            )
        return mean * count, count

    return sums


def _one_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    numel = getattr(value, "numel", None)  # a tensor; numpy's scalars and arrays have `size`
    size = numel() if callable(numel) else getattr(value, "size", None)
    return size == 1 and hasattr(value, "__float__")


def _described(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {list(shape)}"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def from_spec(spec: MetricSpec, function: Optional[Callable] = None) -> Metric:
    """The table's entry for an entry of `metrics`: a built-in, or the user's located function."""
    if spec.target is None:
        return BUILT_IN[spec.name]
    return Metric(spec.name, spec.better, spec.percent, sums=mean_of(function, spec), value=_ratio)


# -- classification's per-class figures ------------------------------------------------------------


def confusion_matrix(predictions, labels, num_classes: int):
    """[true class, predicted class] counts, computed where the tensors are."""
    flat = labels * num_classes + predictions
    return flat.bincount(minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(confusion) -> list[float]:
    """Recall of each class; NaN for a class absent from the split."""
    totals = confusion.sum(dim=1).double()
    return (confusion.diagonal().double() / totals).tolist()


def per_class_precision(confusion) -> list[float]:
    """Of the samples predicted as each class, the share that are; NaN for a class never predicted."""
    totals = confusion.sum(dim=0).double()
    return (confusion.diagonal().double() / totals).tolist()
