"""TensorBoard: event files in the run folder, so `tensorboard --logdir runs` finds every run.

`logger=tensorboard` (the default); each kind of output has its switch (logger.tensorboard.graph,
...). Told what the run does through the Sink interface (sinks.py), given plain values.
"""

import io
import re
import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

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
FINAL = "whole_run"  # the final metrics' group: sorts after train/ and val/ on the Time Series page
# The pictures' group, also after val/: the Time Series page puts a picture card per run in its
# group, which would push train/loss and val/loss below one card per run compared
PICTURES = "visuals"
CONFUSION_PICTURE = f"{PICTURES}/confusion_matrix"
RECONSTRUCTIONS_PICTURE = f"{PICTURES}/reconstructions"
INPUTS_PICTURE = f"{PICTURES}/train_inputs"
RECONSTRUCTION_PIXELS = 112


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
        summary: bool = True,
    ):
        self.folder, self.terminal = run_folder, terminal
        self.show_summary = summary
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
        if self.show_summary and started.summary is not None:
            self.writer.add_text("model/summary", started.summary.markdown(), 0)
        if example is not None and self.show_graph:
            self._graph(started.model, example)
        if example is not None and self.show_inputs and started.facts.kind == "image":
            self.writer.add_image(INPUTS_PICTURE, _grid(_unnormalize(example, started.facts)), 0)

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
            add_picture(self.writer, CONFUSION_PICTURE, confusion_figure(validation.confusion, names), step)
        if validation.examples is not None and self.show_reconstructions:
            self._reconstructions(step, *validation.examples)
        if self.show_histograms:
            self._histograms(step, model)

    def finished(self, run: Finished) -> None:
        step = run.results["steps"]
        per_class = run.results.get("per_class_acc", {}).get(run.split)
        if per_class:
            precision = run.results.get("per_class_precision", {}).get(run.split, {})
            rows = "\n".join(
                f"| {name} | {recall:.2%} | {precision.get(name, float('nan')):.2%} |"
                for name, recall in per_class.items()
            )
            table = f"| class | accuracy (recall) | precision |\n|---|---|---|\n{rows}"
            self.writer.add_text(f"{run.split}/per_class_accuracy", table, step)
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
        self.writer.add_image(RECONSTRUCTIONS_PICTURE, _grid(pairs, columns=count), step)

    def _histograms(self, step: int, model: nn.Module) -> None:
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float(), step)
            if parameter.grad is not None:
                self.writer.add_histogram(f"weights_grad/{name}", parameter.grad.float(), step)  # after val/

    def _hparams(self, step: int, run: Finished) -> None:
        """The HPARAMS row, in the run's own event file (one TensorBoard run per dlrun run): its
        session (its settings, named `run.trial`) and its final metrics, in whole_run/, a group
        that sorts after train/, val/ and visuals/ on the Time Series page.

        No experiment summary is written. TensorBoard takes the first one it finds for the whole
        folder: declaring every task's metrics left a folder of classifiers with empty MSE
        columns, and its parallel-coordinates and scatter views drew nothing; declaring a run's
        own would hide the other task's columns in a mixed folder. Without one, TensorBoard
        infers the columns from the sessions: every setting any run has (those whose values
        differ shown first) and every metric any run logged."""
        for summary in session_summaries(hparam_values(run.config, run.choices), run.trial):
            self.writer.file_writer.add_summary(summary)
        for key, value in final_metrics(run.results, run.split).items():
            self.writer.add_scalar(key, value, step)

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


def session_summaries(values: dict[str, Any], trial: str) -> list:
    """The hparams plugin's records of one finished run: its session (the settings, named
    `trial`, which also groups sessions: it must be the run's own) and its end."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    end = plugin_data_pb2.HParamsPluginData(
        version=0, session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    )
    ended = Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(end))
    return [hp.hparams_pb(values, trial_id=trial), Summary(value=[ended])]


def hparam_values(plain: dict[str, Any], choices: dict[str, str]) -> dict[str, Any]:
    """The run's settings as HPARAMS columns: the option chosen in each group (`choice/model`),
    then its resolved config, flattened, without bookkeeping. Only the settings this run has: a
    column another run's option adds stays empty here, and a setting that differs between runs
    is what TensorBoard shows first."""
    values: dict[str, Any] = {f"choice/{group}": choices[group] for group in GROUPS if group in choices}
    for key, value in _flat(plain).items():
        # `_target_` says again what choice/<group> says, in a column 160 pixels wide
        if not key.startswith(HPARAM_SKIP) and not key.endswith(("._partial_", "._target_", "._recursive_")):
            values[key] = _hparam(value)
    return values


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


def add_picture(writer, tag: str, image, step: int) -> None:
    """A Pillow picture, encoded once as PNG (add_image would take it back through a float
    tensor and encode it at a slower setting: twice the time, every epoch)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    png = io.BytesIO()
    image.save(png, format="PNG", compress_level=1)
    picture = Summary.Image(
        height=image.height, width=image.width, colorspace=3, encoded_image_string=png.getvalue()
    )
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)
