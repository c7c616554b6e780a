"""TensorBoard: event files in the run folder, so `tensorboard --logdir runs` finds every run.

`logger=tensorboard` (the default); each kind of output has its switch (logger.tensorboard.graph,
...). Told what the run does through the Sink interface (sinks.py), given plain values.
"""

import io
import re
import warnings
from dataclasses import fields
from typing import Any, Optional

import torch
from torch import Tensor, nn

from dlrun import metrics
from dlrun.config import schema
from dlrun.data.facts import Facts
from dlrun.reporting.confusion_figure import confusion_figure
from dlrun.reporting.sinks import Epoch, Finished, Sink, Started, Validation
from dlrun.reporting.terminal import Report
from dlrun.runs.folder import RunFolder

# kept out of HPARAMS: bookkeeping, the data's facts, and paths and lists that make poor columns
HPARAM_SKIP = schema.BOOKKEEPING + (
    "facts.",
    "metrics",
    "dataset.path",
    "dataset.train_transforms",
    "dataset.val_transforms",
    "model.weights_path",
)
GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler")
HPARAMS_RUN = "hparams"  # the sub-run holding a run's HPARAMS row
FINAL = "whole_run"  # the final metrics' group: sorts after train/ and val/ on the Time Series page
# The pictures' group, also after val/: the Time Series page puts a picture card per run in its
# group, which would push train/loss and val/loss below one card per run compared
PICTURES = "visuals"
RECONSTRUCTION_PIXELS = 112
SHOWN = ["choice/model", "choice/dataset", "optimizer.lr", "trainer.batch_size", "trainer.epochs"]


def _display_name(name: str) -> str:
    """val_acc_best -> best val acc, test_mse -> test mse."""
    if name.endswith("_best"):
        return "best " + name.removesuffix("_best").replace("_", " ")
    return name.replace("_", " ")


# the HPARAMS metric columns of every task, with the names TensorBoard shows
FINAL_METRICS = {f"{FINAL}/{name}": _display_name(name) for name in metrics.final_metric_names()}


class TensorBoardSink(Sink):
    def __init__(
        self,
        run_folder: RunFolder,
        terminal: Optional[Report] = None,
        graph: bool = True,
        images: bool = True,
        pr_curves: bool = True,
        confusion_matrix: bool = True,
        reconstructions: bool = True,
        hparams: bool = True,
        config_text: bool = True,
        histograms: bool = False,
    ):
        self.folder, self.terminal = run_folder, terminal
        self.show_graph, self.show_inputs, self.show_pr_curves = graph, images, pr_curves
        self.show_confusion, self.show_reconstructions = confusion_matrix, reconstructions
        self.write_hparams, self.show_config, self.show_histograms = hparams, config_text, histograms
        self.writer = None

    def start(self, resumed_at: Optional[int]) -> None:
        """Open the event file; a resumed run hides what a crashed run wrote after its checkpoint."""
        from torch.utils.tensorboard import SummaryWriter

        purge_step = resumed_at + 1 if resumed_at is not None else None
        self.writer = SummaryWriter(log_dir=str(self.folder.path), purge_step=purge_step)

    def run_started(self, started: Started) -> None:
        """What a fresh run shows once: its config, the model graph and a grid of inputs."""
        example = started.example
        if self.show_config:
            self.writer.add_text("config", _markdown_code(started.config_yaml), 0)
        if example is not None and self.show_graph:
            self._graph(started.model, example)
        if example is not None and self.show_inputs and started.facts.kind == "image":
            self.writer.add_image(f"{PICTURES}/train_inputs", _grid(_unnormalize(example, started.facts)), 0)

    def logged(self, step: int, values: dict[str, float]) -> None:
        self._scalars(step, values)

    def epoch_ended(self, epoch: Epoch) -> None:
        self._scalars(epoch.step, epoch.scalars)

    def validated(self, validation: Validation, model: nn.Module) -> None:
        step, names = validation.step, validation.class_names
        if validation.probabilities is not None and self.show_pr_curves:
            for index, name in enumerate(names):
                labels = validation.labels == index
                self.writer.add_pr_curve(f"pr/{_tag(name)}", labels, validation.probabilities[:, index], step)
        if validation.confusion is not None and self.show_confusion:
            self.writer.add_text(
                "val/confusion_matrix", confusion_markdown(validation.confusion, names), step
            )
            self._picture(f"{PICTURES}/confusion_matrix", confusion_figure(validation.confusion, names), step)
        if validation.examples is not None and self.show_reconstructions:
            self._reconstructions(step, *validation.examples)
        if self.show_histograms:
            self._histograms(step, model)

    def finished(self, run: Finished) -> None:
        step = run.results["steps"]
        per_class = run.results.get("per_class_acc", {}).get(run.split)
        if per_class:
            rows = "\n".join(f"| {name} | {acc:.2%} |" for name, acc in per_class.items())
            self.writer.add_text(
                f"{run.split}/per_class_accuracy", f"| class | accuracy |\n|---|---|\n{rows}", step
            )
        if self.write_hparams:
            self._hparams(step, run)

    def stopped(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- how each item is written -----------------------------------------------------------------

    def _scalars(self, step: int, values: dict[str, Optional[float]]) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def _reconstructions(self, step: int, inputs: Tensor, outputs: Tensor) -> None:
        count = min(8, len(inputs))
        pairs = torch.cat([inputs[:count], outputs[:count].clamp(0, 1)])
        # MNIST's 28 pixels would be a strip 62 pixels high: each picture at least 112 pixels
        scale = max(1, RECONSTRUCTION_PIXELS // pairs.shape[-1])
        pairs = pairs.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        self.writer.add_image(f"{PICTURES}/reconstructions", _grid(pairs, columns=count), step)

    def _histograms(self, step: int, model: nn.Module) -> None:
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float(), step)
            if parameter.grad is not None:
                self.writer.add_histogram(f"weights_grad/{name}", parameter.grad.float(), step)  # after val/

    def _hparams(self, step: int, run: Finished) -> None:
        """The HPARAMS row: the run's settings (hparam_values) with its real final metrics.

        They go to a sub-run, `<run>/hparams`: TensorBoard's hparams plugin reads a session's metrics
        from its own folder, and its final numbers (one point each) then sort below the train/val
        curves on the Time Series page, which opens the first two groups of cards."""
        from torch.utils.tensorboard import SummaryWriter

        values = hparam_values(run.config, run.choices)
        shown = shown_hparams(run.typed)
        with SummaryWriter(log_dir=str(self.folder.path / HPARAMS_RUN)) as writer:
            for summary in hparams_summaries(values, self.folder.name, shown):
                writer.file_writer.add_summary(summary)
            for key, value in final_metrics(run.results, run.split).items():
                writer.add_scalar(key, value, step)

    def _picture(self, tag: str, image, step: int) -> None:
        """A Pillow picture, encoded once as PNG (add_image would take it back through a float
        tensor and encode it at a slower setting: twice the time, every epoch)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        png = io.BytesIO()
        image.save(png, format="PNG", compress_level=1)
        picture = Summary.Image(
            height=image.height, width=image.width, colorspace=3, encoded_image_string=png.getvalue()
        )
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)

    def _graph(self, model: nn.Module, example: Tensor) -> None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer notes
                model.eval()
                self.writer.add_graph(model, example[:2])
        except Exception as error:  # tracing is best effort: never worth stopping a run for
            if self.terminal is not None:
                self.terminal.warn(
                    f"the model graph could not be traced for TensorBoard ({type(error).__name__}); "
                    "training goes on"
                )


def final_metrics(results: dict[str, Any], split: str) -> dict[str, float]:
    """The HPARAMS metrics of a finished run (metrics.json's figures): the best monitored
    validation value, the final split's metrics, the epochs trained."""
    metric = results["monitor"].split("/", 1)[1]
    metrics = {f"{FINAL}/val_{metric}_best": results["best_value"], f"{FINAL}/epochs": results["epochs"]}
    metrics.update({f"{FINAL}/{split}_{name}": value for name, value in results[split].items()})
    return {key: float("nan") if value is None else float(value) for key, value in metrics.items()}


def hparams_summaries(values: dict[str, Any], trial: str, shown: list[str]) -> list:
    """The hparams plugin's records for one run: the experiment (every column, in order), the
    session (this run's values, named `trial`) and its end.

    Every run declares the same metric columns, those of every task (a folder of classifiers and
    autoencoders shows accuracy and MSE columns, empty where a run has none), and marks the
    `shown` settings as differing: TensorBoard shows the first five of those by default."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=key, differs=key in shown) for key in values],
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=name)
            for tag, name in FINAL_METRICS.items()
        ],
    )
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)

    def record(tag: str, **data) -> Summary:
        content = plugin_data_pb2.HParamsPluginData(version=0, **data)
        return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))])

    return [
        record(metadata.EXPERIMENT_TAG, experiment=experiment),
        hp.hparams_pb(values, trial_id=trial),
        record(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]


def shown_hparams(typed_keys: list[str]) -> list[str]:
    """The HPARAMS columns shown by default: what tells runs apart at a glance, then the settings
    typed for this run (a sweep's)."""
    return [*SHOWN, *(key for key in typed_keys if key not in SHOWN)]


def hparam_values(plain: dict[str, Any], choices: dict[str, str]) -> dict[str, Any]:
    """The run's settings (its resolved config), flattened, over the same keys for every run.

    Keys come from the schemas of every option of each group, so a sweep over `model=mlp,cnn`
    gives both jobs the same columns (settings an option lacks show as "-").
    """
    values: dict[str, Any] = {f"choice/{group}": choices.get(group, "-") for group in GROUPS}
    for key in all_keys() + _user_keys(plain):
        if key.startswith(HPARAM_SKIP) or key.endswith("._partial_"):
            continue
        values[key] = _hparam(_get(plain, key))
    return values


def _user_keys(plain: dict) -> list[str]:
    """The settings of the user's own targets (a sweep over them keeps the same keys)."""
    keys = []
    for group in GROUPS:
        node = plain.get(group) or {}
        if "_target_" in node:
            keys += [f"{group}.{name}" for name in node if not isinstance(node[name], dict)]
    return keys


def all_keys() -> list[str]:
    keys: list[str] = ["seed"]
    for group in GROUPS:
        seen: dict[str, None] = {}
        for node in schema.OPTIONS[group].values():
            for field in fields(schema.schema_of(node)):
                if field.name == "augment":
                    seen.update({f"augment.{f.name}": None for f in fields(schema.Augment)})
                else:
                    seen[field.name] = None
        keys += [f"{group}.{name}" for name in seen]
    keys += [f"trainer.{f.name}" for f in fields(schema.Trainer) if f.name != "early_stopping"]
    keys += [f"trainer.early_stopping.{f.name}" for f in fields(schema.EarlyStopping)]
    return keys


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _hparam(value: Any) -> Any:
    if value is None:
        return "-"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def confusion_markdown(confusion: Tensor, names: list[str]) -> str:
    """Rows are true classes, columns predicted classes."""
    header = "| true \\ predicted | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    rows = [
        f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(names, confusion)
    ]
    return "\n".join([header, rule, *rows])


def _unnormalize(images: Tensor, facts: Facts) -> Tensor:
    if facts.mean is None:  # floats as a user's dataset gives them: stretched to [0, 1] to be seen
        images = images.float()
        return (images - images.min()) / (images.max() - images.min()).clamp(min=1e-12)
    mean = torch.tensor(facts.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(facts.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() * std + mean).clamp(0, 1)


def _grid(images: Tensor, columns: int = 8) -> Tensor:
    from torchvision.utils import make_grid

    return make_grid(images.detach().float().cpu(), nrow=columns, padding=2, pad_value=1.0)


def _markdown_code(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # an indented code block


def _tag(name: str) -> str:
    """A class name as a tag that reads like it: '0 - zero' -> '0-zero', 'T-shirt/top' -> 'T-shirt_top'
    (TensorBoard turns each character it does not allow into '_')."""
    return re.sub(r"[^-\w.]+", "_", re.sub(r"\s*-\s*", "-", name.strip()))
