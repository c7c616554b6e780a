"""What the user reads: rich output on the terminal, the same words in the run's log file.

On a terminal each epoch gets a progress bar; anywhere else (a file, a CI log, a sweep worker)
it gets a few plain lines instead, so logs stay readable.
"""

import io
import logging
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dlrun import metrics
from dlrun.machine import SlowSteps
from dlrun.metrics import Metric
from dlrun.models.summary import ModelSummary
from dlrun.quoting import from_users_folder, shell_path

log = logging.getLogger("dlrun")

EPOCH_ROWS = 20  # a longer run shows a row every few epochs, so the rows fit on one screen


class Report:
    def __init__(
        self,
        progress: str = "auto",
        console: Optional[Console] = None,
        table: Optional[dict[str, Metric]] = None,
    ):
        self.console = console or make_console()
        if progress == "auto":
            progress = "bar" if self.console.is_terminal else "lines"
        self.progress_mode = progress
        self.table = table or metrics.BUILT_IN  # how each figure is shown (the run's metrics)
        self.pace: Optional[SlowSteps] = None  # watches the step time on a shared CPU
        self.shown: Optional[tuple[str, ...]] = None  # the epoch row's metrics (metrics=[...]); None: all

    # -- lines and renderables ------------------------------------------------------------------

    def line(self, text: str, style: Optional[str] = None) -> None:
        # soft wrap (warnings too): a narrow terminal folds the line itself, so a path or command
        # in it is copied whole (rich would break it with a newline)
        self.console.print(Text(text, style=style), soft_wrap=True)
        log.info(text)

    def warn(self, text: str) -> None:
        self.console.print(Text("warning: ", style="bold yellow") + Text(text), soft_wrap=True)
        log.warning(text)

    def show(self, renderable: Any) -> None:
        self.console.print(renderable)
        log.info("\n" + plain_text(renderable))

    # -- the run --------------------------------------------------------------------------------

    def config(self, cfg: DictConfig, choices: dict[str, str]) -> None:
        tree = Tree(Text("config", style="bold"))
        for key, value in cfg.items():
            label = f"{key} ({choices[key]})" if key in choices else str(key)
            _add_branch(tree, label, value)
        self.show(tree)

    def brief_config(self, rows: list[tuple[str, str]], whole: str) -> None:
        """One line per group: its option and what differs from the option's defaults. Drawn as
        a tree of plain lines, not rich's Tree: a line longer than the terminal is folded by the
        terminal, so the paths in it (the config file, dataset.path) are copied whole."""
        lines = [Text("config", style="bold") + Text(f" (every setting: {whole})", style="dim")]
        for index, (label, settings) in enumerate(rows):
            line = Text("└── " if index == len(rows) - 1 else "├── ")
            line += Text(label, style="bold cyan") if label else Text()
            if settings:
                line += Text(": " if label else "") + Text(settings, style="green")
            lines.append(line)
        for line in lines:
            self.console.print(line, soft_wrap=True)
        log.info("\n" + "\n".join(line.plain for line in lines))

    def epoch_progress(self, epoch: int, epochs: int, steps: int, start: int = 0) -> "EpochProgress":
        return EpochProgress(self, f"epoch {epoch}/{epochs}", steps, start)

    def pass_progress(self, label: str, steps: int) -> "EpochProgress":
        """Progress through a pass with no training figures (the final score of best.pt)."""
        return EpochProgress(self, label, steps, 0, scoring=True)

    def epoch_summary(
        self,
        epoch: int,
        epochs: int,
        train: dict,
        val: dict,
        lr: float,
        seconds: float,
        samples: int,
        best: bool,
    ) -> None:
        parts = [
            f"epoch {epoch:>{len(str(epochs))}}/{epochs}",
            "train " + self.figures(self._chosen(train)),
            "val " + self.figures(self._chosen(val)),
            f"lr {lr:.2e}",
            f"{seconds:.1f} s, {samples / max(seconds, 1e-9):,.0f} samples/s",
        ]
        text = Text(_between_parts(parts, self.console.width))
        if best:
            text.append("  * best", style="bold green")
        log.info(" | ".join(parts) + ("  * best" if best else ""))
        every = -(-epochs // EPOCH_ROWS)
        if every == 1 or epoch in (1, epochs) or epoch % every == 0:
            self.console.print(text)
        if every > 1 and epoch == 1:
            self.console.print(
                Text(
                    f"(a row every {every} epochs here; every epoch is in dlrun.log and TensorBoard)",
                    style="dim",
                )
            )

    def _chosen(self, values: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
        """The loss and the metrics metrics=[...] chose, in its order (every one when it chose none)."""
        if self.shown is None:
            return values
        return {name: values[name] for name in ("loss", *self.shown) if name in values}

    def results(self, results: dict[str, Any], split: str, class_names: list[str], run_dir: Path) -> None:
        """The final table (best monitored value, the final split's metrics, epochs, steps, time),
        per-class accuracy for classification, where the run is and how to look at it."""
        table = Table(title="results", show_header=False, title_style="bold")
        table.add_column(style="bold")
        table.add_column(justify="right")
        for name, value in self._result_rows(results, split):
            table.add_row(name, value)
        self.show(table)
        per_class = results.get("per_class_acc", {}).get(split)
        if per_class:
            self.show(per_class_table(class_names, {split: list(per_class.values())}))
        folder = from_users_folder(run_dir)
        self.line(f"run folder: {shell_path(folder)}")
        everything = f"tensorboard --logdir {shell_path(_runs_root(folder))}"
        this_run = f"tensorboard --logdir {shell_path(folder)}"
        self.line(f"tensorboard: {everything}   (this run only: {this_run})")

    def figures(self, values: dict[str, Optional[float]]) -> str:
        """'loss 0.1234 acc 88.30%': each figure as the metrics table shows it; None left out."""
        return " ".join(
            f"{name} {metrics.shown(name, value, self.table)}"
            for name, value in values.items()
            if value is not None
        )

    def _result_rows(self, results: dict[str, Any], split: str) -> list[tuple[str, str]]:
        monitor = results["monitor"]
        best = metrics.shown(monitor, results["best_value"], self.table)
        rows = [(f"best {monitor}", f"{best} (epoch {results['best_epoch']})")]
        rows += [
            (f"{split} {name}", metrics.shown(name, value, self.table))
            for name, value in results[split].items()
        ]
        rows += [
            ("epochs", str(results["epochs"])),
            ("steps", f"{results['steps']:,}"),
            ("seconds", f"{results['seconds']:.1f}"),
        ]
        return rows


def _between_parts(parts: list[str], width: int) -> str:
    """The parts joined by ` | `, on as many lines as `width` needs, broken between two parts
    (an 80-column terminal would otherwise split `lr 1.00e-03` in two)."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) > width:
            lines.append("  " + part)
        else:
            lines[-1] += " | " + part
    return "\n".join(lines)


def make_console() -> Console:
    """dlrun's console. No markup: what it prints holds paths, class names and overrides of the
    user's, and `runs/[bold]x` is a folder, not a style (styles are given as Text's)."""
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        # a log file or a pipe has no width: 80 columns would break every epoch line in two
        console = Console(highlight=False, markup=False, width=max(console.width, 140))
    return console


class EpochProgress:
    """A bar on a terminal; otherwise a plain line about every tenth of an epoch, at most one a
    second (an epoch shorter than that has only its summary line)."""

    LINE_SECONDS = 1.0

    def __init__(self, report: Report, label: str, steps: int, start: int, scoring: bool = False):
        self.report, self.steps, self.done = report, steps, start
        self.label, self.scoring = label, scoring
        self.started = time.perf_counter()
        self.interval_start, self.interval_started = start, self.started  # the logging interval's
        self.samples = 0
        self.next_line = start + max(1, steps // 10)
        self.last_line = self.started
        self.bar: Optional[Progress] = None
        # the bar moves in 1 % steps and redraws 4 times a second: on 2 cores a busier bar
        # thread measurably slows training
        self.bar_every = max(1, steps // 100)
        if report.progress_mode == "bar":
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=report.console,
                transient=True,
                refresh_per_second=4,
            )
            self.task = self.bar.add_task(self.label, total=steps, completed=start, status="")

    def __enter__(self) -> "EpochProgress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, samples: int) -> None:
        self.done += 1
        self.samples += samples
        if self.bar is not None and (self.done % self.bar_every == 0 or self.done == self.steps):
            self.bar.update(self.task, completed=self.done)
        elif self.scoring and self.bar is None:  # no figures come to show lines with
            self._line_when_due(f"{self.samples:,} samples")

    def metrics(self, values: dict[str, Optional[float]]) -> None:
        """Called once per logging interval, when the figures have been read anyway."""
        now = time.perf_counter()
        if self.report.pace is not None:
            warning = self.report.pace.interval(self.done - self.interval_start, now - self.interval_started)
            if warning:
                self.report.warn(warning)
        self.interval_start, self.interval_started = self.done, now
        rate = self.samples / max(now - self.started, 1e-9)
        status = f"{self.report.figures(values)} {rate:,.0f} samples/s"
        if self.bar is not None:
            self.bar.update(self.task, status=status)
        else:
            self._line_when_due(status)

    def _line_when_due(self, status: str) -> None:
        if self.report.progress_mode == "lines" and self.done >= self.next_line:
            now = time.perf_counter()
            if now - self.last_line >= self.LINE_SECONDS:  # else the line waits for the next call
                self.next_line = self.done + max(1, self.steps // 10)
                self.last_line = now
                self.report.line(f"  {self.label} step {self.done}/{self.steps} {status}")


def summary_table(summary: ModelSummary) -> Table:
    """The model's layers: type, output shape on a real batch, parameters (trainable)."""
    table = Table(title="model", title_style="bold", caption=summary.counts())
    for column in ("layer", "type", "output"):
        table.add_column(column)
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for layer in summary.layers:
        table.add_row(layer.name, layer.kind, layer.output, f"{layer.parameters:,}", f"{layer.trainable:,}")
    return table


def per_class_table(class_names: list[str], accuracies: dict[str, list[float]]) -> Table:
    """Accuracy of every class on each split given (NaN: the class is absent from the split)."""
    table = Table(title="per-class accuracy", title_style="bold")
    table.add_column("class")
    for split in accuracies:
        table.add_column(split, justify="right")
    for index, name in enumerate(class_names):
        table.add_row(name, *(_percent(values[index]) for values in accuracies.values()))
    return table


def _percent(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"  # NaN: no sample of the class


def _add_branch(parent: Tree, label: str, value: Any) -> None:
    if isinstance(value, DictConfig):
        branch = parent.add(Text(label, style="bold cyan"))
        for key, child in value.items():
            _add_branch(branch, str(key), child)
    else:
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        text = str(shown)
        parent.add(Text(f"{label}: ") + Text(text if len(text) <= 100 else text[:97] + "...", style="green"))


def plain_text(renderable: Any, width: int = 110) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, no_color=True, highlight=False, markup=False).print(renderable)
    return buffer.getvalue().rstrip()


def _runs_root(folder: Path) -> Path:
    # runs/<date>/<run> -> runs; anything else -> the folder's parent
    parts = folder.parts
    return Path(*parts[: parts.index("runs") + 1]) if "runs" in parts else folder.parent
