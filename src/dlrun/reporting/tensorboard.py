"""TensorBoard event files, written into the run folder so `tensorboard --logdir runs` finds them.

Every method does nothing when `logger.tensorboard=false`; each kind of output has its own
switch in the `logger` config group.
"""

import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dlrun.config import schema

# kept out of HPARAMS: bookkeeping, the data's facts, and paths and lists that make poor columns
HPARAM_SKIP = schema.BOOKKEEPING + ("facts.", "dataset.path", "dataset.train_transforms",
                                    "dataset.val_transforms", "model.weights_path")
GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler")


class Board:
    def __init__(self, run_dir: Path, settings: DictConfig):
        self.run_dir = run_dir
        self.settings = settings
        self.writer = None

    # -- lifecycle ------------------------------------------------------------------------------

    def open_run(self, s, purge_step: Optional[int] = None) -> None:
        """Open the event file; a fresh run also gets its config text, graph and input grid."""
        if not self.settings.tensorboard or not s.writes_files:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a crashed run wrote after the checkpoint it resumes from
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        if purge_step is not None:
            return  # a resumed run wrote these already
        if self.settings.config_text:
            self.writer.add_text("config", _markdown_code(OmegaConf.to_yaml(s.cfg)), 0)
        example = _example_batch(s)
        if example is not None and self.settings.graph:
            self._graph(s, example)
        if example is not None and self.settings.images and s.data.facts.kind == "image":
            self.writer.add_image("inputs", _grid(_unnormalize(example, s.data.facts)), 0)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- during training ------------------------------------------------------------------------

    def scalars(self, step: int, values: dict[str, Optional[float]]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def epoch(self, s, evaluation) -> None:
        """What one validation shows beyond scalars: PR curves, confusion, reconstructions."""
        if self.writer is None:
            return
        step = s.position.global_step
        names = s.data.facts.class_names
        if evaluation.probabilities is not None and self.settings.pr_curves:
            for index, name in enumerate(names):
                self.writer.add_pr_curve(
                    f"pr/{_tag(name)}", evaluation.labels == index, evaluation.probabilities[:, index], step
                )
        if evaluation.confusion is not None and self.settings.confusion_matrix:
            self.writer.add_text("val/confusion_matrix", confusion_markdown(evaluation.confusion, names), step)
            self.writer.add_image("val/confusion_matrix", confusion_image(evaluation.confusion), step)
        if evaluation.examples is not None and self.settings.reconstructions:
            inputs, outputs = evaluation.examples
            count = min(16, len(inputs))
            pairs = torch.cat([inputs[:count], outputs[:count].clamp(0, 1)])
            self.writer.add_image("val/reconstructions", _grid(pairs, columns=count), step)
        if self.settings.histograms:
            for name, parameter in s.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", parameter.detach().float(), step)
                if parameter.grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", parameter.grad.float(), step)

    # -- at the end -----------------------------------------------------------------------------

    def finish(self, s, results: dict, final, split: str) -> None:
        """The HPARAMS row: this run's settings with its real final metrics."""
        if self.writer is None or not self.settings.hparams:
            return
        from torch.utils.tensorboard.summary import hparams

        metric = s.best.metric.split("/", 1)[1]
        metrics = {f"hparam/val_{metric}_best": results["best_value"], "hparam/epochs": results["epochs"]}
        metrics.update({f"hparam/{split}_{name}": value for name, value in final.metrics.items()})
        metrics = {key: float("nan") if value is None else float(value) for key, value in metrics.items()}
        values = hparam_values(s.cfg, s.choices)
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, s.position.global_step)
        if final.per_class_acc:
            rows = "\n".join(f"| {name} | {acc:.2%} |" for name, acc in zip(s.data.facts.class_names, final.per_class_acc))
            self.writer.add_text(f"{split}/per_class_accuracy", f"| class | accuracy |\n|---|---|\n{rows}", s.position.global_step)

    def _graph(self, s, example: Tensor) -> None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer notes
                s.model.eval()
                self.writer.add_graph(s.model, example[:2])
        except Exception as error:  # tracing is best effort: never worth stopping a run for
            s.report.warn(f"the model graph could not be traced for TensorBoard ({type(error).__name__}); training goes on")


def hparam_values(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The run's settings, flattened, over the same keys for every run.

    Keys come from the schemas of every option of each group, so a sweep over `model=mlp,cnn`
    gives both jobs the same columns (settings an option lacks show as "-").
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    values: dict[str, Any] = {f"choice/{group}": choices.get(group, "-") for group in GROUPS}
    for key in all_keys():
        if key.startswith(HPARAM_SKIP) or key.endswith("._partial_"):
            continue
        value = _get(plain, key)
        values[key] = _hparam(value)
    return values


def all_keys() -> list[str]:
    keys: list[str] = ["seed"]
    for group, options in schema.SCHEMAS.items():
        seen: dict[str, None] = {}
        for node in options.values():
            for field in fields(node):
                if field.name in ("augment",):
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
    rows = [f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(names, confusion)]
    return "\n".join([header, rule, *rows])


def confusion_image(confusion: Tensor, cell: int = 16) -> Tensor:
    """A heat map of row-normalized counts: bright diagonal = good; [3, H, W] in [0, 1]."""
    rates = confusion.double() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    heat = rates.float().repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    # white-to-blue: the more samples a cell holds, the bluer it is
    return torch.stack([1 - heat, 1 - 0.6 * heat, torch.ones_like(heat)])


def _example_batch(s) -> Optional[Tensor]:
    # from the validation split: drawing from the training batches would move their generator
    for inputs, _ in s.data.val:
        return inputs[:64]
    return None


def _unnormalize(images: Tensor, facts) -> Tensor:
    mean = torch.tensor(facts.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(facts.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() * std + mean).clamp(0, 1)


def _grid(images: Tensor, columns: int = 8) -> Tensor:
    from torchvision.utils import make_grid

    return make_grid(images.detach().float().cpu(), nrow=columns, padding=2, pad_value=1.0)


def _markdown_code(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # an indented code block


def _tag(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_")
